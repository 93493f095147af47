"""The cloud codec (casecloud.codec) against the shared vectors, and both codecs against each other.

tests/device/mp_test_codec.py checks the same vectors with the firmware codec under MicroPython;
the interop tests here run the firmware codec in the real MicroPython port and hand its bytes to the
cloud codec, and the other way round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casecloud import codec as C

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "protocol_v1.json").read_text())
T = "lockcase/v1/s1/c1/"
KEY = bytes(range(32))
NOW = 1_750_000_000


@pytest.mark.parametrize("v", VECTORS["sign"], ids=lambda v: v["name"])
def test_sign_vector(v: dict[str, Any]) -> None:
    key = bytes.fromhex(v["key"])
    assert C.signature(key, v["topic"], v["p"]) == v["s"]
    assert json.loads(C.seal(key, v["topic"], v["p"])) == {"p": v["p"], "s": v["s"]}


CLOUD_OPEN = [v for v in VECTORS["open"] if v["side"] in ("both", "cloud")]


@pytest.mark.parametrize("v", CLOUD_OPEN, ids=lambda v: v["name"])
def test_open_vector(v: dict[str, Any]) -> None:
    key = bytes.fromhex(v["key"])
    try:
        body, rx, mask = C.check(key, v["topic"], v["payload"].encode(), v["now"], v["rx"], v["mask"])
    except C.Rejected as e:
        assert e.reason == v["reason"]
        return
    assert v["reason"] is None, f"accepted, expected {v['reason']}"
    assert [rx, mask] == v["after"]
    assert body["case"] == "c1"


def test_vectors_cover_every_reason() -> None:
    seen = {v["reason"] for v in VECTORS["open"]}
    assert set(C.REASONS) - seen == {"unknown_case"}  # the cloud's key lookup, tested in tests/cloud
    assert VECTORS["max_bytes"] == C.MAX_BYTES and VECTORS["window"] == C.WINDOW


@given(st.lists(st.integers(min_value=1, max_value=200), max_size=60))
def test_window_accepts_each_seq_at_most_once(seqs: list[int]) -> None:
    rx, mask, taken = 0, 0, set()
    for s in seqs:
        try:
            rx, mask = C.window(rx, mask, s)
        except C.Rejected:
            assert s in taken or s <= rx - C.WINDOW
            continue
        assert s not in taken
        taken.add(s)
        assert rx == max(taken)


def test_encode_fills_header_and_refuses_mismatched_type() -> None:
    full, payload = C.encode(KEY, T + "rep", {"t": "deny", "re": "r1", "why": "flagged"}, case="c1", seq=4, now=NOW)
    body, rx, _ = C.check(KEY, T + "rep", payload, NOW, 0, 0)
    assert body == full and body["seq"] == 4 and body["exp"] == NOW + C.TTL and rx == 4
    with pytest.raises(ValueError):
        C.encode(KEY, T + "req", {"t": "deny"}, case="c1", seq=5, now=NOW)


def _mp_json(mpy: Any, code: str) -> Any:
    out = mpy("import json\nfrom lockcase.uplink import codec as P\n" + code)
    return json.loads(out.strip().splitlines()[-1])


def test_firmware_signed_messages_open_in_the_cloud(mpy: Any) -> None:
    msgs = _mp_json(
        mpy,
        f"""
c = P.Codec("c1", bytes(range(32)), P.MemorySeqs(0, 0), clock=lambda: {NOW})
out = []
for topic, body in (("{T}status", {{"t": "hello", "fw": "0.1.0"}}),
                    ("{T}req", {{"t": "phone", "num": "5551234567"}}),
                    ("{T}evt", {{"t": "evts", "evts": [{{"i": "e1", "k": "opened", "ts": {NOW}, "d": {{"n": "caf\\u00e9"}}}}]}}),
                    ("{T}ack", {{"t": "ack", "re": "c9", "ok": True}})):
    out.append([topic, c.sign(topic, body).decode()])
print(json.dumps(out))
""",
    )
    rx = mask = 0
    body: dict[str, Any] = {}
    for topic, payload in msgs:
        body, rx, mask = C.check(KEY, topic, payload.encode(), NOW, rx, mask)
        assert body["case"] == "c1"
    assert rx == 4
    assert body["t"] == "ack" and body["ok"] is True
    # and the cloud refuses a replay of the first data message
    with pytest.raises(C.Rejected, match="replay"):
        C.check(KEY, msgs[1][0], msgs[1][1].encode(), NOW, rx, mask)


def test_cloud_signed_messages_open_on_the_case(mpy: Any) -> None:
    sent = []
    for seq, (kind, body) in enumerate(
        (
            ("cmd", {"t": "time", "re": "HELLO", "now": NOW, "rx": 9}),
            ("rep", {"t": "challenge", "re": "r1", "sid": "s1", "need": "code", "ttl": 120}),
            ("cmd", {"t": "unlock", "grant": "g\u00e9\"\\", "secs": 5}),
            ("evtack", {"t": "evtack", "re": "b1", "ids": ["e1", "e2"]}),
        ),
        start=1,
    ):
        _, payload = C.encode(KEY, T + kind, body, case="c1", seq=seq, now=NOW)
        sent.append([T + kind, payload.decode()])
    got = _mp_json(
        mpy,
        f"""
c = P.Codec("c1", bytes(range(32)), P.MemorySeqs(0, 0), clock=lambda: 946684800)
h = {{"t": "hello", "fw": "x", "id": "HELLO"}}  # the id the cloud's time answers (re=HELLO)
c.sign("{T}status", h)
msgs = json.loads({json.dumps(json.dumps(sent))})
out = []
for topic, payload in msgs:
    b = c.open(topic, payload.encode())
    out.append([b["t"], b.get("grant"), c.tx])
print(json.dumps(out))
""",
    )
    assert [g[0] for g in got] == ["time", "challenge", "unlock", "evtack"]
    assert got[2][1] == "g\u00e9\"\\"
    assert got[0][2] == 9  # tx jumped to what the cloud had accepted
