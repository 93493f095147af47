# The case's one config dict, written by provisioning as config.json and validated at boot.
# Every key has a default so a partial config is usable; every value is range-checked so a bad
# one is refused with a message that names the key, instead of a surprise deep in the lock code.
import json

from lockcase.compat import const, json_whole

PATH = "config.json"

# key: (default, type, low, high). None bounds are unchecked.
_NUM = {
    "unlock_ms": (5000, int, 500, 15000),
    "pull_in_ms": (300, int, 50, 2000),
    "held_open_s": (30, int, 5, 3600),
    "duty_budget_ms": (20000, int, 1000, 60000),
    "duty_window_s": (60, int, 10, 3600),
    "lockout_after": (5, int, 1, 50),
    "lockout_base_s": (30, int, 1, 3600),
    "lockout_max_s": (900, int, 1, 86400),
    "entry_timeout_s": (20, int, 5, 300),
    # Shoppers' wrong texted codes lock out shopper entry only, more gently than staff PINs.
    "phone_lockout_after": (5, int, 1, 50),
    "phone_lockout_s": (60, int, 1, 3600),
    "help_interval_s": (60, int, 0, 3600),  # at most one help call per case per this many s
    "alarm_s": (30, int, 0, 600),  # forced/held-open/tamper alarm sound, at most this long; 0: silent
    "wdt_ms": (8000, int, 1000, 60000),
    "hold_duty": (0.4, float, 0.1, 1.0),
}
_STR = {
    "board": "sim",
    "store_id": "",
    "case_id": "",
    "country": "US",
    "display": "lcd1602",
    "keypad": "4x3",
    "name": "",
}
# Refuse shopper unlocks while the tamper switch is tripped or latched (staff PIN/badge or the
# cloud clears it); false lets shoppers in and only reports the tamper.
_BOOL = {"tamper_blocks_shoppers": True}
_DISPLAYS = const(("lcd1602", "lcd2004", "ssd1306", "none"))
_KEYPADS = const(("4x3", "4x4"))


class ConfigError(Exception):
    pass


class NotProvisioned(ConfigError):
    pass


def defaults():
    cfg = {}
    for k, spec in _NUM.items():
        cfg[k] = spec[0]
    for k, v in _STR.items():
        cfg[k] = v
    for k, v in _BOOL.items():
        cfg[k] = v
    cfg["staff"] = {"salt": "", "iter": 1000, "pins": [], "badges": []}
    cfg["provisioned"] = False
    return cfg


def validate(raw):
    if not isinstance(raw, dict):
        raise ConfigError("config: top level must be a JSON object")
    cfg = defaults()
    for k, (_, typ, lo, hi) in _NUM.items():
        if k not in raw:
            continue
        v = raw[k]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, typ):
            raise ConfigError("config: %s must be a %s" % (k, "number" if typ is float else "whole number"))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError("config: %s=%s is outside %s..%s" % (k, v, lo, hi))
        cfg[k] = v
    for k in _BOOL:
        if k in raw:
            if not isinstance(raw[k], bool):
                raise ConfigError("config: %s must be true or false" % k)
            cfg[k] = raw[k]
    for k in _STR:
        if k in raw:
            if not isinstance(raw[k], str):
                raise ConfigError("config: %s must be a string" % k)
            cfg[k] = raw[k]
    if cfg["pull_in_ms"] > cfg["unlock_ms"]:
        raise ConfigError("config: pull_in_ms must not exceed unlock_ms")
    if cfg["unlock_ms"] > cfg["duty_budget_ms"]:
        raise ConfigError("config: unlock_ms must not exceed duty_budget_ms")
    if cfg["display"] not in _DISPLAYS:
        raise ConfigError("config: display must be one of " + ", ".join(_DISPLAYS))
    if cfg["keypad"] not in _KEYPADS:
        raise ConfigError("config: keypad must be one of " + ", ".join(_KEYPADS))
    if len(cfg["country"]) != 2:
        raise ConfigError("config: country must be a two-letter ISO code")
    cfg["staff"] = _staff(raw.get("staff", {}))
    for k in raw:
        if k not in cfg and k not in ("cloud", "nfc", "version", "wifi", "ota_key", "ota"):
            raise ConfigError("config: unknown key " + k)
    if "ota_key" in raw:
        cfg["ota_key"] = _ota_key(raw["ota_key"])
    if "ota" in raw:
        cfg["ota"] = _ota(raw["ota"])
    if "cloud" in raw:
        cfg["cloud"] = _cloud(raw["cloud"])
    if "wifi" in raw:
        cfg["wifi"] = _wifi(raw["wifi"])
    if "nfc" in raw:
        nfc = _nfc(raw["nfc"])
        if nfc is not None:
            cfg["nfc"] = nfc
    cfg["provisioned"] = bool(cfg["case_id"])
    return cfg


def _staff(st):
    if not isinstance(st, dict):
        raise ConfigError("config: staff must be an object")
    # v: the version of the cloud's desired state this set came with (remote_config.state)
    out = {"salt": st.get("salt", ""), "iter": st.get("iter", 1000), "pins": [], "badges": [], "v": st.get("v", 0)}
    if type(out["v"]) is not int:
        raise ConfigError("config: staff.v must be a whole number")
    if not isinstance(out["salt"], str) or (st.get("pins") or st.get("badges")) and len(out["salt"]) < 16:
        raise ConfigError("config: staff.salt must be a hex string of at least 8 bytes")
    it = out["iter"]
    if isinstance(it, bool) or not isinstance(it, int) or not 1 <= it <= 100000:
        raise ConfigError("config: staff.iter must be a whole number in 1..100000")
    for kind in ("pins", "badges"):
        items = st.get(kind, [])
        if not isinstance(items, list):
            raise ConfigError("config: staff.%s must be a list" % kind)
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("hash"), str) or len(item["hash"]) != 64:
                raise ConfigError("config: staff.%s[%d] needs a 64-hex-digit hash" % (kind, i))
            out[kind].append({"id": str(item.get("id", "%s%d" % (kind[0], i))), "hash": item["hash"]})
    return out


# "nfc": "none" (or absent) for a case without a reader, else an object; see docs/boards.md.
_NFC_DRIVERS = const(("pn532", "mfrc522"))
_NFC_BUSES = const(("i2c", "spi", "uart"))


def _nfc(v):
    if v is None or v == "none":
        return None
    if not isinstance(v, dict):
        raise ConfigError('config: nfc must be "none" or an object')
    for k in v:
        if k not in ("driver", "bus", "addr", "irq", "poll_ms"):
            raise ConfigError("config: unknown key nfc." + k)
    out = {"driver": v.get("driver", "pn532"), "bus": v.get("bus", "i2c"), "addr": v.get("addr", 0x24),
           "irq": v.get("irq", True), "poll_ms": v.get("poll_ms", 100)}
    if out["driver"] not in _NFC_DRIVERS:
        raise ConfigError("config: nfc.driver must be one of " + ", ".join(_NFC_DRIVERS))
    if out["bus"] not in _NFC_BUSES:
        raise ConfigError("config: nfc.bus must be one of " + ", ".join(_NFC_BUSES))
    if out["driver"] == "mfrc522" and out["bus"] != "spi":
        raise ConfigError("config: the mfrc522 driver needs nfc.bus spi")
    a = out["addr"]
    if isinstance(a, bool) or not isinstance(a, int) or not 0x08 <= a <= 0x77:
        raise ConfigError("config: nfc.addr must be a 7-bit I2C address (default 36, 0x24)")
    if not isinstance(out["irq"], bool):
        raise ConfigError("config: nfc.irq must be true or false")
    p = out["poll_ms"]
    if isinstance(p, bool) or not isinstance(p, int) or not 20 <= p <= 1000:
        raise ConfigError("config: nfc.poll_ms must be a whole number in 20..1000")
    return out


# Over-the-air updates (docs/ota.md): the release key's public half, and how updates are paced and
# confirmed: key -> (default, low, high).
_OTA = {"pace_ms": (250, 20, 10000), "boots": (3, 1, 10), "confirm_s": (600, 60, 86400)}


def _ota_key(k):
    if not isinstance(k, str) or len(k) != 64 or any(c not in "0123456789abcdef" for c in k):
        raise ConfigError("config: ota_key must be the release key's public half, 64 lowercase hex digits")
    return k


def _ota(o):
    if not isinstance(o, dict):
        raise ConfigError("config: ota must be an object")
    out = {}
    for k in o:
        if k not in _OTA:
            raise ConfigError("config: unknown key ota." + k)
    for k, (dflt, lo, hi) in _OTA.items():
        v = o.get(k, dflt)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError("config: ota.%s must be a whole number in %d..%d" % (k, lo, hi))
        out[k] = v
    return out


def _wifi(w):
    if not isinstance(w, dict):
        raise ConfigError("config: wifi must be an object")
    ssid, pw = w.get("ssid"), w.get("password", "")
    if not isinstance(ssid, str) or not 1 <= len(ssid) <= 32:
        raise ConfigError("config: wifi.ssid must be 1 to 32 characters")
    if not isinstance(pw, str) or len(pw) > 63 or 0 < len(pw) < 8:
        raise ConfigError("config: wifi.password must be empty (open network) or 8 to 63 characters")
    return {"ssid": ssid, "password": pw}


def _cloud(cc):
    if not isinstance(cc, dict):
        raise ConfigError("config: cloud must be an object")
    for k in ("host", "user", "password", "key"):
        if not isinstance(cc.get(k), str) or not cc[k]:
            raise ConfigError("config: cloud.%s is required (a string)" % k)
    key = cc["key"]
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ConfigError("config: cloud.key must be 64 lowercase hex digits")
    port = cc.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("config: cloud.port must be a port number")
    if "ca" in cc and not isinstance(cc["ca"], str):
        raise ConfigError("config: cloud.ca must be the CA certificate as base64 DER")
    c = cc.get("staff_confirm_s", 86400)  # under ticks_diff's reach (2^29 ms) on a chip
    if isinstance(c, bool) or not isinstance(c, int) or not 60 <= c <= 432000:
        raise ConfigError("config: cloud.staff_confirm_s must be a whole number in 60..432000")
    for k in ("keepalive", "request_timeout_s", "io_timeout_s", "connect_timeout_ms"):
        v = cc.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError("config: cloud.%s must be a positive whole number" % k)
    return cc


def load(path=PATH):
    """Return the validated config. NotProvisioned if absent, ConfigError if corrupt or invalid."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise NotProvisioned("not provisioned: no " + path)
    try:
        raw = json_whole(text)
    except ValueError:
        raise ConfigError("config: %s is not valid JSON" % path)
    return validate(raw)


def save(cfg, path=PATH):
    # Write then rename: a power cut leaves either the old file or the new one, never half.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(cfg))
    import os

    os.rename(tmp, path)
