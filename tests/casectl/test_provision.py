"""casectl provision against the sim board (real mpremote over a pty) and the real cloud API:
registration, config written atomically, the on-device self-test, labels, and no secret on screen."""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from pathlib import Path

import segno

from casecloud import keyring
from casecloud.models import Case
from casectl.label import render_png
from lockcase import creds
from sim.device import SimDevice
from tests.casectl.conftest import CloudServer, Result, cli, mpremote

PIN = "482916"
BADGE = "04a1b2c3d4"


def staff_file(tmp: Path) -> Path:
    p = tmp / "staff.json"
    p.write_text(json.dumps({"pins": [{"id": "alice", "pin": PIN}], "badges": [{"id": "bob", "uid": BADGE}]}))
    return p


def device_config(sd: SimDevice) -> dict:
    """config.json read with the real mpremote CLI; the board is then reset into its firmware."""
    p = mpremote(sd.port, "fs", "cat", ":config.json")
    if p.returncode:
        ls = mpremote(sd.port, "exec", "import os; print(os.getcwd(), os.listdir())")
        raise AssertionError(f"{p.stderr} / device: {ls.stdout} {ls.stderr} / boots {sd.boots}")
    reboot(sd)
    return json.loads(p.stdout[p.stdout.index("{"):])


def reboot(sd: SimDevice) -> None:
    boots = sd.boots
    mpremote(sd.port, "soft-reset")  # ends the Unix port's process: the supervisor boots it again
    sd.wait_boot(boots)
    sd.wait_firmware()


def no_config(sd: SimDevice) -> bool:
    return mpremote(sd.port, "fs", "cat", ":config.json").returncode != 0


def db_key(cloud: CloudServer, case: str) -> str:
    with cloud.rt.sessions() as s:
        c = s.get(Case, case)
        assert c is not None
        return keyring.case_key(s, c).hex()


def assert_no_secrets(r: Result, *values: str) -> None:
    for v in values:
        assert v not in r.all, f"a secret appeared in the output: {v[:4]}..."


class Technician(threading.Thread):
    """Presses a key when the self-test asks for one, as the technician at the case would."""

    def __init__(self, sd: SimDevice, key: str = "5", when: str = "Self-test: press", hold_ms: int = 80) -> None:
        super().__init__(daemon=True)
        self.sd, self.key, self.when, self.hold_ms = sd, key, when, hold_ms
        self.done = threading.Event()
        self.pressed = False

    def run(self) -> None:
        while not self.done.is_set():
            try:
                shown = " ".join(self.sd.outputs().get("display") or [])
            except (OSError, ValueError):
                shown = ""
            if self.when in shown:
                self.sd.hands("key", self.key, self.hold_ms)
                self.pressed = True
                return
            time.sleep(0.02)


def provision(sd: SimDevice, cloud: CloudServer, tmp: Path, *extra: str | Path) -> Result:
    # No broker here, so no waiting for the case to come online: test_watch.py has one.
    return cli("provision", sd.port, "--store", "s1", "--case", "c1", "--cloud", cloud.url,
               "--labels", tmp / "labels", "--online-timeout", "0", *extra)


def test_provision_registers_configures_selftests_and_labels(deployed: SimDevice, cloud: CloudServer,
                                                             tmp_path: Path) -> None:
    deployed.hands("spring", 1)  # this case's door pops open when the lock releases
    tech = Technician(deployed)
    tech.start()
    boots = deployed.boots
    r = provision(deployed, cloud, tmp_path, "--name", "Razors, aisle 7", "--staff-file", staff_file(tmp_path),
                  "--nfc", "pn532-i2c", "--unlock-ms", "1500", "--pull-in-ms", "200", "--key-wait", "10")
    tech.done.set()
    assert r.code == 0, r.all
    assert tech.pressed
    for step in ("config", "display", "nfc: pn532 firmware 1.6", "lock: the door opened", "keypad: key 5 pressed"):
        assert step in r.err, step
    assert "✓ lock" in r.err and "✗" not in r.err
    assert "provisioned" in r.out and "secrets not shown" in r.out

    key = db_key(cloud, "c1")
    deployed.wait_boot(boots)
    deployed.wait_firmware()
    cfg = device_config(deployed)
    assert "seq.json" in mpremote(deployed.port, "fs", "ls", ":").stdout
    reboot(deployed)
    assert cfg["case_id"] == "c1" and cfg["store_id"] == "s1" and cfg["board"] == "sim"
    assert cfg["cloud"]["key"] == key and cfg["cloud"]["user"] == "c1" and cfg["unlock_ms"] == 1500
    assert cfg["nfc"]["driver"] == "pn532"
    st = cfg["staff"]
    assert st["pins"][0]["hash"] == creds.hash_pin(PIN, st["salt"], st["iter"])
    assert st["badges"][0]["hash"] == creds.hash_badge(BADGE, st["salt"], st["iter"])
    assert_no_secrets(r, key, cfg["cloud"]["password"], PIN, BADGE, st["pins"][0]["hash"])

    # the case that comes up opens for the staff PIN
    ctl = deployed.ctl()
    try:
        assert ctl.state()["entry"] == "idle"
        ctl.keys(f"**{PIN}#")
        ctl.wait_for(lambda s: s["energized"], what="coil energized by the staff PIN")
    finally:
        ctl.close()

    png, svg = tmp_path / "labels" / "c1.png", tmp_path / "labels" / "c1.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "c1" in text and f"{cloud.url}/app/unlock?case=c1" in text


def test_already_provisioned_needs_force_which_rotates_keys(deployed: SimDevice, cloud: CloudServer,
                                                           tmp_path: Path) -> None:
    boots = deployed.boots
    assert provision(deployed, cloud, tmp_path, "--no-selftest").code == 0
    key1 = db_key(cloud, "c1")
    deployed.wait_boot(boots)
    boots = deployed.boots
    r = provision(deployed, cloud, tmp_path, "--no-selftest")
    assert r.code == 8 and "already provisioned as case c1" in r.err and "--force" in r.err, r.all
    deployed.wait_boot(boots)  # refused, and the case is back in its firmware, not left at the REPL
    deployed.wait_firmware()
    assert db_key(cloud, "c1") == key1  # nothing changed in the cloud either
    boots = deployed.boots
    r = provision(deployed, cloud, tmp_path, "--no-selftest", "--force", "--json")
    assert r.code == 0, r.all
    doc = r.json()
    assert doc["rotated"] and doc["key_version"] == 2
    key2 = db_key(cloud, "c1")
    assert key2 != key1
    deployed.wait_boot(boots)
    assert device_config(deployed)["cloud"]["key"] == key2
    assert_no_secrets(r, key1, key2)


def test_case_registered_by_another_device_is_refused(deployed: SimDevice, cloud: CloudServer,
                                                      tmp_path: Path) -> None:
    from casecloud import registry

    with cloud.rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c1", cloud.rt.now())
    r = provision(deployed, cloud, tmp_path, "--no-selftest")
    assert r.code == 8 and "already registered in the cloud" in r.err, r.all
    assert no_config(deployed)


def test_cloud_unreachable_changes_nothing(deployed: SimDevice, tmp_path: Path) -> None:
    r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--cloud", "http://127.0.0.1:9",
            "--no-selftest")
    assert r.code == 7 and "unreachable" in r.err, r.all
    assert no_config(deployed)
    r = cli("status", "--cloud", "http://127.0.0.1:9", "--json")
    assert r.code == 7 and r.json()["error"]["code"] == "cloud_unreachable"


def test_selftest_failure_is_reported_in_json(deployed: SimDevice, cloud: CloudServer, tmp_path: Path) -> None:
    # A key held down through the self-test: a stuck key or shorted keypad wires.
    stuck = Technician(deployed, key="7", when="Lock test", hold_ms=4000)
    stuck.start()
    boots = deployed.boots
    r = provision(deployed, cloud, tmp_path, "--key-wait", "0", "--staff-file", staff_file(tmp_path), "--json")
    stuck.done.set()
    assert r.code == 11, r.all
    doc = r.json()
    assert doc["ok"] is False and doc["error"]["code"] == "selftest_failed"
    steps = {s["step"]: s for s in doc["data"]["selftest"]["steps"]}
    assert steps["keypad"]["status"] == "fail" and "key 7" in steps["keypad"]["detail"]
    assert steps["lock"]["status"] == "warn"  # no spring on this door: the sensor saw nothing
    assert r.err == ""  # --json: nothing but the document
    deployed.wait_boot(boots)
    cfg = device_config(deployed)
    assert_no_secrets(r, cfg["cloud"]["key"], cfg["cloud"]["password"], PIN)


def test_refused_option_registers_nothing_and_shows_no_password(deployed: SimDevice, cloud: CloudServer,
                                                               tmp_path: Path) -> None:
    # 70 characters: WPA2 allows 63, so the firmware's validator refuses the config.
    wifi_pw = "correct-horse-battery-staple-" * 2 + "extra-words!"
    r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--cloud", cloud.url, "--wifi-ssid", "shop",
            env={"CASECTL_WIFI_PASSWORD": wifi_pw})
    assert r.code == 2 and "refuse this config" in r.err, r.all
    assert_no_secrets(r, wifi_pw)
    with cloud.rt.sessions() as s:
        assert s.get(Case, "c1") is None
    assert no_config(deployed)


def test_device_without_firmware_is_refused(device: SimDevice, cloud: CloudServer, tmp_path: Path) -> None:
    r = provision(device, cloud, tmp_path, "--no-selftest")
    assert r.code == 14 and "no LockCase firmware" in r.err and "casectl deploy" in r.err


def test_label_png_holds_the_qr_code_module_for_module() -> None:
    link = "https://cloud.example/app/unlock?case=razors-7"
    qr = segno.make(link, error="m", micro=False)
    data = render_png(qr, "razors-7", "main-st", module=4)
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.setdefault(data[pos + 4:pos + 8], b"")
        chunks[data[pos + 4:pos + 8]] += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[y * (w + 1) + 1:(y + 1) * (w + 1)] for y in range(h)]
    matrix = [list(r) for r in qr.matrix_iter(scale=1, border=4)]
    x0 = (w - len(matrix) * 4) // 2
    for y, line in enumerate(matrix):
        for x, dark in enumerate(line):
            assert (rows[y * 4 + 2][x0 + x * 4 + 2] == 0) == bool(dark)
    assert any(0 in r for r in rows[len(matrix) * 4:])  # the case id is drawn under the code


def test_staff_pin_typed_at_a_hidden_prompt(deployed: SimDevice, cloud: CloudServer, tmp_path: Path) -> None:
    boots = deployed.boots
    r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--cloud", cloud.url, "--no-selftest",
            "--labels", tmp_path / "labels", "--online-timeout", "0", "--staff-pin", "carol",
            input="731902\n731902\n")
    assert r.code == 0, r.all
    assert "731902" not in r.all
    deployed.wait_boot(boots)
    st = device_config(deployed)["staff"]
    assert st["pins"] == [{"id": "carol", "hash": creds.hash_pin("731902", st["salt"], st["iter"])}]
