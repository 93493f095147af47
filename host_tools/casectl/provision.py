"""Turn a device with the firmware on it into a case: identity, cloud registration, config,
on-device self-test, label.

Order matters: everything that can fail without side effects (cloud reachable, token valid,
device answering, firmware present, not already provisioned) is checked before the case is
registered; the config is written to a temporary file, checked by the device's own validator,
and only then renamed over config.json, so a failure leaves the previous config in place.

Secrets (the case key, the broker password, Wi-Fi password, staff PINs) exist only in memory
and on the device: nothing here prints, logs or returns them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from casectl.cloudapi import CaseSecrets, Cloud
from casectl.deploy import device_manifest
from casectl.device import Device
from casectl.errors import (
    AlreadyProvisioned,
    CaseOffline,
    DeviceError,
    NotDeployed,
    SelfTestFailed,
    Usage,
)
from casectl.label import DEFAULT_LINK, Label, unlock_link, write_label
from casectl.output import secret

ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
STAFF_ITER = 1000


def check_id(kind: str, value: str) -> str:
    if not (1 <= len(value) <= 32 and value[0] not in "_-" and set(value) <= ID_CHARS):
        raise Usage(f"{kind} id {value!r}: 1-32 of a-z 0-9 _ -, starting with a letter or digit")
    return value


@dataclass
class Staff:
    """Staff credentials as the technician gives them; only their hashes leave this object."""

    salt: str | None = None  # hex; shared by a store's cases when the cloud pushes staff hashes
    iterations: int = STAFF_ITER
    pins: list[tuple[str, str]] = field(default_factory=list)
    badges: list[tuple[str, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Staff(pins={[i for i, _ in self.pins]}, badges={[i for i, _ in self.badges]}, <secrets hidden>)"

    @classmethod
    def from_file(cls, path: Path) -> Staff:
        """{"salt": hex?, "iter": n?, "pins": [{"id", "pin"}], "badges": [{"id", "uid"}]}"""
        try:
            raw = json.loads(path.read_text())
        except OSError as e:
            raise Usage(f"cannot read the staff file {path}: {e.strerror}") from None
        except ValueError:
            raise Usage(f"the staff file {path} is not valid JSON") from None
        st = cls(salt=raw.get("salt"), iterations=int(raw.get("iter", STAFF_ITER)))
        for e in raw.get("pins", []):
            pin = str(e.get("pin", ""))
            if not (4 <= len(pin) <= 8 and pin.isdigit()):
                raise Usage(f"staff file: the PIN of {e.get('id')!r} must be 4-8 digits")
            st.pins.append((str(e["id"]), pin))
        for e in raw.get("badges", []):
            uid = str(e.get("uid", "")).lower()
            try:
                bytes.fromhex(uid)
            except ValueError:
                raise Usage(f"staff file: the badge uid of {e.get('id')!r} must be hex") from None
            st.badges.append((str(e["id"]), uid))
        return st

    def section(self) -> dict[str, Any]:
        from lockcase import creds

        salt = self.salt or secrets.token_hex(16)
        return {"salt": salt, "iter": self.iterations,
                "pins": [{"id": i, "hash": creds.hash_pin(p, salt, self.iterations)} for i, p in self.pins],
                "badges": [{"id": i, "hash": creds.hash_badge(u, salt, self.iterations)} for i, u in self.badges]}


@dataclass
class Options:
    store: str
    case: str
    name: str = ""
    country: str = "US"
    display: str | None = None  # None: keep the firmware default
    keypad: str | None = None
    nfc: str | None = None  # "pn532-i2c" and the like, or None for no reader
    timings: dict[str, Any] = field(default_factory=dict)  # unlock_ms, pull_in_ms, hold_duty, held_open_s
    staff: Staff = field(default_factory=Staff)
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    ca: Path | None = None
    keepalive: int = 30
    request_timeout_s: int = 8
    force: bool = False
    create_store: bool = False
    selftest: bool = True
    key_wait_s: int = 15
    # How long the case has to come back online (connected with its new login, its greeting
    # answered under its new key) before success is reported; 0: do not wait (a bench with no network).
    online_timeout_s: float = 90.0
    label_dir: Path = Path("labels")
    link_template: str = DEFAULT_LINK
    # The fleet's release public key (64 hex), written as the case's ota_key so it takes signed
    # releases over the air (docs/ota.md): given here (--ota-key FILE), or the cloud's key that
    # matches ota_key_fingerprint (pinned on the command line). Never the cloud's key alone: a
    # cloud that could choose the key a case trusts could sign its firmware. Neither: no ota_key.
    ota_key: str | None = None
    ota_key_fingerprint: str | None = None
    cloud_checked: bool = False  # check_cloud ran (before the device was opened)

    def __repr__(self) -> str:
        return f"Options(store={self.store!r}, case={self.case!r}, <secrets hidden>)"


@dataclass
class Report:
    case: str
    store: str
    board: str
    firmware: str
    cloud: str
    broker: str
    key_version: int
    rotated: bool
    config_bytes: int
    selftest: dict[str, Any] | None
    label_png: str | None
    label_svg: str | None
    link: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    online: bool | None = None  # None: not waited for (--online-timeout 0)
    ota_key: str | None = None  # the release public key written (public), None: no over-the-air updates

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ca_b64(path: Path) -> str:
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        data = ssl.PEM_cert_to_DER_cert(data.decode())
    return base64.b64encode(data).decode()


_STAND_IN = CaseSecrets(case="x", store="x", key_hex="0" * 64, key_version=1, topic_prefix="lockcase/v1",
                        mqtt_host="localhost", mqtt_port=1883, mqtt_username="x", mqtt_password="x")

NFC_PRESETS = {"pn532-i2c": {"driver": "pn532", "bus": "i2c"}, "pn532-spi": {"driver": "pn532", "bus": "spi"},
               "pn532-uart": {"driver": "pn532", "bus": "uart"}, "mfrc522-spi": {"driver": "mfrc522", "bus": "spi"}}


def build_config(opts: Options, board: str, sec: CaseSecrets) -> dict[str, Any]:
    """config.json for the case, checked by the firmware's own validator (lockcase.config)."""
    from lockcase import config as fwconfig

    cfg: dict[str, Any] = {"board": board, "store_id": opts.store, "case_id": opts.case, "name": opts.name,
                           "country": opts.country.upper()}
    if opts.display:
        cfg["display"] = opts.display
    if opts.keypad:
        cfg["keypad"] = opts.keypad
    if opts.nfc:
        if opts.nfc not in NFC_PRESETS:
            raise Usage(f"--nfc must be one of {', '.join(NFC_PRESETS)}")
        cfg["nfc"] = dict(NFC_PRESETS[opts.nfc])
    cfg.update(opts.timings)
    cfg["staff"] = opts.staff.section()
    cloud: dict[str, Any] = {"host": sec.mqtt_host, "port": sec.mqtt_port, "user": sec.mqtt_username,
                             "password": sec.mqtt_password, "key": sec.key_hex, "keepalive": opts.keepalive,
                             "request_timeout_s": opts.request_timeout_s}
    if sec.topic_prefix != "lockcase/v1":
        cloud["prefix"] = sec.topic_prefix
    if opts.ca:
        try:
            cloud["ca"] = _ca_b64(opts.ca)
        except (OSError, ValueError) as e:
            raise Usage(f"cannot read the CA certificate {opts.ca}: {e}") from None
    cfg["cloud"] = cloud
    if opts.ota_key:
        cfg["ota_key"] = opts.ota_key
    if opts.wifi_ssid:
        cfg["wifi"] = {"ssid": opts.wifi_ssid, "password": opts.wifi_password or ""}
    try:
        fwconfig.validate(json.loads(json.dumps(cfg)))
    except fwconfig.ConfigError as e:
        hint = ("Wi-Fi: an SSID of 1-32 characters, a password of 8-63 (or none for an open network)"
                if "wifi" in str(e) else "check the options given to provision")
        raise Usage(f"the firmware would refuse this config: {e}", hint) from None
    return cfg


def write_config(dev: Device, cfg: dict[str, Any], *, reset_seqs: bool, clear_journal: bool) -> int:
    """Write config.json atomically; the device validates it before it replaces the old one."""
    data = json.dumps(cfg, separators=(",", ":")).encode()
    dev.write_file("config.json.tmp", data)
    want = hashlib.sha256(data).hexdigest()
    if dev.hashes(["config.json.tmp"])["config.json.tmp"] != want:
        raise DeviceError("the config written to the device does not read back the same", "run provision again")
    verdict = dev.run_marked(
        "import json\n"
        "try:\n"
        " from lockcase import config as _lc_c\n"
        " _lc_c.validate(json.loads(open('config.json.tmp').read()))\n"
        " print('LCOK')\n"
        "except Exception as e:\n"
        " print('LCOK ' + str(e))\n", "LCOK", what="validating the config on the device")
    if verdict:
        dev.exec("import os\nos.remove('config.json.tmp')", what="removing the refused config")
        raise DeviceError(f"the device's firmware refused the config: {verdict}",
                          "deploy the current firmware (`casectl deploy`) and provision again")
    extra = ""
    if reset_seqs:  # a case registered anew starts at seq 0 on the cloud (docs/protocol.md)
        dev.write_file("seq.json.tmp", b"[0,0]")
        extra += "_lc_replace('seq.json.tmp', 'seq.json')\n"
    if clear_journal:  # another case's events must not be sent as this one's
        extra += "_lc_rmtree('journal')\n"
    dev.exec(extra + "_lc_replace('config.json.tmp', 'config.json')\n", what="installing the config")
    return len(data)


def firmware_manifest(dev: Device) -> dict[str, Any]:
    """The manifest of the LockCase firmware on the device; NotDeployed if it has none."""
    man = device_manifest(dev)
    if man is None or not man.get("board"):
        raise NotDeployed(f"{dev.port} has no LockCase firmware", f"run `casectl deploy {dev.port}` first")
    return man


def run_selftest(dev: Device, *, key_wait_s: int, on_step: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    buf = b""
    lines: list[str] = []

    def consume(chunk: bytes) -> None:  # steps are shown as they finish, not at the end
        nonlocal buf
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            lines.append(text)
            if text.startswith("LCSTEP") and on_step:
                on_step(json.loads(text[6:]))

    try:
        dev.exec(
            "import lockcase.selftest as _lc_st\n"
            f"_lc_st.run(key_wait_ms={max(0, key_wait_s) * 1000})\n",
            timeout=max(30, key_wait_s + 30), what="running the self-test", on_output=consume)
    except DeviceError as e:
        # a manifest, but not the firmware's modules: a deploy cut short, or one from before the
        # self-test existed
        if "ImportError" not in e.message:
            raise
        raise NotDeployed(f"the firmware on {dev.port} cannot run the self-test: "
                          + e.message.strip().splitlines()[-1],
                          f"deploy the current firmware (`casectl deploy {dev.port}`) and retry") from None
    marker = [x for x in lines if x.startswith("LCJSON")]
    if not marker:
        raise DeviceError("the self-test ended without a result", "run `casectl selftest PORT` to retry")
    return json.loads(marker[-1][6:])


def _back_online(c: dict[str, Any] | None) -> bool:
    # synced, not just online: the cloud clears synced when it rotates the keys, so only a greeting
    # signed with the new key (over a connection with the new login) sets it again
    return bool(c and c.get("online") and c.get("synced"))


def wait_online(cloud: Cloud, case: str, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """The case as the cloud sees it once it is back; CaseOffline after timeout_s."""
    retrying = Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(poll_s),
                        retry=retry_if_result(lambda c: not _back_online(c)))
    try:
        back = retrying(cloud.case, case)
    except RetryError as e:
        last = None if e.last_attempt.failed else e.last_attempt.result()
        state = ("not connected to the broker" if not (last and last.get("online"))
                 else "connected, but its greeting under the new key was not answered")
        raise CaseOffline(f"case {case} is not back online after {timeout_s:g} s: {state}",
                          "check the case's network and the broker (whose logins follow the cloud's case table, "
                          "docs/cloud.md), then `casectl status`; the case is registered and configured") from None
    assert back is not None  # _back_online checked it
    return back


def check_cloud(cloud: Cloud, opts: Options) -> None:
    """Everything that can refuse the provisioning without the device: the ids, the cloud reachable
    with this token, the pinned release key. Run before the device is opened, so a refused command
    leaves a working case alone (opening it interrupts its firmware, and closing resets it)."""
    check_id("store", opts.store)
    check_id("case", opts.case)
    cloud.stores()
    if opts.ota_key is None and opts.ota_key_fingerprint:
        from casectl.release_cloud import pinned_key

        opts.ota_key = pinned_key(cloud, opts.ota_key_fingerprint)
    opts.cloud_checked = True


def provision(dev: Device, cloud: Cloud, opts: Options,
              phase: Callable[[str], None] | None = None,
              on_step: Callable[[dict[str, Any]], None] | None = None) -> Report:
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    say = phase or (lambda _s: None)

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - t0, 3)

    if not opts.cloud_checked:
        say("checking the cloud")
        check_cloud(cloud, opts)
    mark("cloud_checked")

    say("checking the device")
    man = firmware_manifest(dev)
    board = str(man["board"])
    old_raw = dev.read_file("config.json")
    old_case = None
    if old_raw is not None:
        try:
            old_case = json.loads(old_raw).get("case_id") or None
        except (ValueError, AttributeError):
            old_case = None
    del old_raw  # it holds the previous case's secrets
    if old_case and not opts.force:
        raise AlreadyProvisioned(f"{dev.port} is already provisioned as case {old_case}",
                                 "pass --force to provision it again (the old identity is replaced)")
    mark("device_checked")

    # The config is checked with stand-in secrets before the cloud hears of the case, so a refused
    # option does not leave a registered case behind.
    build_config(opts, board, _STAND_IN)
    if opts.create_store and opts.store not in {s["id"] for s in cloud.stores()}:
        say(f"creating store {opts.store}")
        cloud.create_store(opts.store, country=opts.country.upper())
    say("registering the case with the cloud")
    sec, rotated = cloud.register_case(opts.store, opts.case, opts.name, rotate_if_exists=opts.force)
    secret(sec.key_hex)
    secret(sec.mqtt_password)
    mark("registered")

    say("writing the config")
    cfg = build_config(opts, board, sec)
    same_case = old_case == opts.case
    n = write_config(dev, cfg, reset_seqs=not (rotated and same_case), clear_journal=not same_case)
    del cfg
    mark("config_written")

    result: dict[str, Any] | None = None
    if opts.selftest:
        say("running the self-test on the device")
        result = run_selftest(dev, key_wait_s=opts.key_wait_s, on_step=on_step)
        mark("selftest")

    say("restarting the firmware")
    dev.soft_reset()

    link = unlock_link(opts.link_template, cloud=cloud.url, store=opts.store, case=opts.case)
    label: Label = write_label(opts.label_dir, case=opts.case, store=opts.store, link=link)
    mark("label")
    online: bool | None = None
    offline: CaseOffline | None = None
    if opts.online_timeout_s > 0:
        say("waiting for the case to come online")
        try:
            wait_online(cloud, opts.case, opts.online_timeout_s)
            online = True
        except CaseOffline as e:
            offline, online = e, False
        mark("online")
    report = Report(case=opts.case, store=opts.store, board=board, firmware=str(man.get("version")),
                    cloud=cloud.url, broker=f"{sec.mqtt_host}:{sec.mqtt_port}", key_version=sec.key_version,
                    rotated=rotated, config_bytes=n, selftest=result, label_png=str(label.png), ota_key=opts.ota_key,
                    label_svg=str(label.svg), link=link, seconds=round(time.monotonic() - t0, 3), timings=marks,
                    online=online)
    if result is not None and not result.get("ok"):
        failed = [s for s in result.get("steps", []) if s.get("status") == "fail"]
        raise SelfTestFailed("self-test failed: " + "; ".join(f"{s['step']}: {s['detail']}" for s in failed),
                             "fix the part named, then run `casectl selftest PORT`; the case is registered and configured",
                             data=report.as_dict())
    if offline is not None:
        offline.data = report.as_dict()
        raise offline
    return report
