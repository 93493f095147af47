"""Writes protocol_v1.json: the shared test vectors of docs/protocol.md.

Standard library only (hmac, json), independent of both codecs, so a bug in a codec cannot also
bend the vectors. Run once after changing a vector; the JSON is committed and both
tests/host/test_codec_vectors.py (cloud codec, CPython) and tests/device/mp_test_codec.py (firmware
codec, MicroPython) check every entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

KEY1 = bytes(range(32)).hex()
KEY2 = hashlib.sha256(b"lockcase other key").hexdigest()
T = "lockcase/v1/s1/c1/"
NOW = 1_750_000_000


def sig(key: str, topic: str, p: str) -> str:
    return hmac.new(bytes.fromhex(key), f"{topic}\n{p}".encode(), hashlib.sha256).hexdigest()


def env(key: str, topic: str, p: str, s: str | None = None) -> str:
    return json.dumps({"p": p, "s": s if s is not None else sig(key, topic, p)}, separators=(",", ":"))


def body(t: str, seq: int = 11, exp: int = NOW + 30, case: str = "c1", **fields: Any) -> str:
    b: dict[str, Any] = {"v": 1, "case": case, "id": f"m{seq}", "seq": seq, "exp": exp, "t": t}
    b.update(fields)
    return json.dumps(b, separators=(",", ":"))


SIGN = [
    ("phone", T + "req", body("phone", num="5551234567")),
    ("unicode and escapes", T + "cmd", json.dumps(
        {"v": 1, "case": "c1", "id": "x", "seq": 5, "exp": NOW, "t": "unlock", "grant": "g\"1\\\n", "note": "caf\u00e9 \u2713"},
        ensure_ascii=False, separators=(",", ":"))),
    ("spaced json", T + "evt", '{"v": 1, "case": "c1", "id": "b1", "seq": 7, "exp": 1750000030, "t": "evts", '
     '"evts": [{"i": "e1", "k": "opened", "ts": 1749999990}]}'),
    ("empty body text", T + "req", ""),
]

# (name, side, topic, payload, now, rx, mask, reason or None, new [rx, mask] or None, extra)
OPEN: list[dict[str, Any]] = []


def add(name: str, topic: str, payload: str, reason: str | None, *, side: str = "both", now: int = NOW,
        rx: int = 10, mask: int = 0xFFFF, after: list[int] | None = None, **extra: Any) -> None:
    v: dict[str, Any] = {"name": name, "side": side, "topic": topic, "payload": payload, "now": now,
                         "rx": rx, "mask": mask, "reason": reason, "key": extra.pop("key", KEY1)}
    if reason is None:
        v["after"] = after
    v.update(extra)
    OPEN.append(v)


ok_phone = body("phone", num="5551234567")
add("accepted phone", T + "req", env(KEY1, T + "req", ok_phone), None, after=[11, 0x1FFFF & 0xFFFF])
add("accepted at exactly exp", T + "req", env(KEY1, T + "req", body("phone", exp=NOW, num="1")), None,
    after=[11, 0xFFFF])
add("accepted jump past window", T + "ack", env(KEY1, T + "ack", body("ack", seq=40, re="c9", ok=True)),
    None, after=[40, 1])
add("accepted late within window", T + "cmd", env(KEY1, T + "cmd", body("relock", seq=8)), None,
    mask=0b1, after=[10, 0b101])
add("extra fields allowed", T + "cmd", env(KEY1, T + "cmd", body("unlock", grant="g1", secs=5, zz=[1])),
    None, after=[11, 0xFFFF])
add("too large", T + "req", env(KEY1, T + "req", body("phone", num="1" * 1000)), "too_large")
add("not json", T + "req", "{p:1}", "bad_json")
add("json array", T + "req", "[1,2]", "bad_json")
add("no p", T + "req", '{"s":"00"}', "bad_json")
add("s not a string", T + "req", json.dumps({"p": ok_phone, "s": 5}), "bad_json")
add("wrong version prefix", "lockcase/v2/s1/c1/req", env(KEY1, "lockcase/v2/s1/c1/req", ok_phone), "bad_topic")
add("unknown kind", T + "foo", env(KEY1, T + "foo", ok_phone), "bad_topic")
add("short topic", "lockcase/v1/c1/req", env(KEY1, "lockcase/v1/c1/req", ok_phone), "bad_topic")
add("other key", T + "req", env(KEY2, T + "req", ok_phone), "bad_sig")
add("tampered body", T + "req", env(KEY1, T + "req", ok_phone, sig(KEY1, T + "req", ok_phone.replace("555", "556"))), "bad_sig")
add("signed for another topic", T + "evt", env(KEY1, T + "evt", ok_phone, sig(KEY1, T + "req", ok_phone)), "bad_sig")
add("s not hex", T + "req", env(KEY1, T + "req", ok_phone, "zz" * 32), "bad_sig")
add("s truncated", T + "req", env(KEY1, T + "req", ok_phone, sig(KEY1, T + "req", ok_phone)[:62]), "bad_sig")
add("body not json", T + "req", env(KEY1, T + "req", "{v:1}"), "bad_json")
add("body an array", T + "req", env(KEY1, T + "req", "[1]"), "bad_json")
add("version 2", T + "req", env(KEY1, T + "req", ok_phone.replace('"v":1', '"v":2')), "bad_version")
add("version string", T + "req", env(KEY1, T + "req", ok_phone.replace('"v":1', '"v":"1"')), "bad_version")
add("version bool", T + "req", env(KEY1, T + "req", ok_phone.replace('"v":1', '"v":true')), "bad_version")
add("no version", T + "req", env(KEY1, T + "req", ok_phone.replace('"v":1,', "")), "bad_version")
add("body for another case", T + "req", env(KEY1, T + "req", body("phone", case="c2", num="1")), "wrong_case")
add("type of another kind", T + "cmd", env(KEY1, T + "cmd", body("phone", num="1")), "bad_type")
add("unknown type", T + "req", env(KEY1, T + "req", body("dance")), "bad_type")
add("missing seq", T + "req", env(KEY1, T + "req", ok_phone.replace('"seq":11,', "")), "bad_field")
add("seq a string", T + "req", env(KEY1, T + "req", ok_phone.replace('"seq":11', '"seq":"11"')), "bad_field")
add("exp a float", T + "req", env(KEY1, T + "req", ok_phone.replace(f'"exp":{NOW + 30}', f'"exp":{NOW + 30}.5')), "bad_field")
add("missing type field", T + "req", env(KEY1, T + "req", body("phone")), "bad_field")
add("bool field as int", T + "ack", env(KEY1, T + "ack", body("ack", re="c1", ok=1)), "bad_field")
add("id a number", T + "req", env(KEY1, T + "req", ok_phone.replace('"id":"m11"', '"id":11')), "bad_field")
add("expired", T + "req", env(KEY1, T + "req", body("phone", exp=NOW - 1, num="1")), "expired")
add("replay of highest", T + "req", env(KEY1, T + "req", body("phone", seq=10, num="1")), "replay")
add("replay inside window", T + "req", env(KEY1, T + "req", body("phone", seq=8, num="1")), "replay", mask=0b101)
add("too old for window", T + "req", env(KEY1, T + "req", body("phone", seq=10 - 16, num="1")), "replay", mask=1)
# cloud only: a hello is exempt from clock and replay window so a case can resynchronize
add("hello with a stale clock and old seq", T + "status",
    env(KEY1, T + "status", body("hello", seq=3, exp=946_684_830, fw="0.1.0")), None, side="cloud", after=[10, 0xFFFF])
add("hello still needs a signature", T + "status",
    env(KEY2, T + "status", body("hello", seq=3, exp=946_684_830, fw="0.1.0")), "bad_sig", side="cloud")
# case only: a time cmd counts as fresh when it answers the case's pending hello
add("time answering our hello", T + "cmd",
    env(KEY1, T + "cmd", body("time", exp=NOW, re="h1", now=NOW + 5, rx=3)), None, side="case",
    now=946_684_800, hello="h1", synced=False, after=[11, 0xFFFF])
add("time answering another hello", T + "cmd",
    env(KEY1, T + "cmd", body("time", re="h0", now=NOW, rx=3)), "replay", side="case", hello="h1", synced=False)
add("no clock yet", T + "cmd", env(KEY1, T + "cmd", body("unlock", grant="g1")), "no_clock", side="case",
    hello="h1", synced=False)


def main() -> None:
    out = {
        "about": "LockCase protocol v1 vectors; see docs/protocol.md. Generated by make_protocol_v1.py.",
        "max_bytes": 1024,
        "window": 16,
        "sign": [
            {"name": n, "key": KEY1, "topic": t, "p": p, "s": sig(KEY1, t, p), "payload": env(KEY1, t, p)}
            for n, t, p in SIGN
        ],
        "open": OPEN,
    }
    # one vector per line keeps diffs readable and the file small enough for MicroPython's heap
    path = Path(__file__).with_name("protocol_v1.json")
    lines = ",\n".join(json.dumps(v, separators=(",", ":")) for v in out["sign"])
    olines = ",\n".join(json.dumps(v, separators=(",", ":")) for v in out["open"])
    head = json.dumps({k: out[k] for k in ("about", "max_bytes", "window")})[:-1]
    path.write_text(f'{head},\n"sign":[\n{lines}\n],\n"open":[\n{olines}\n]}}\n')
    json.loads(path.read_text())


if __name__ == "__main__":
    main()
