"""The journal's on-flash frame format under CPython (the filesystem side runs in tests/device).

A technician tool or the cloud can parse a journal image pulled off a board with the same
lockcase.journal.decode, so the format is pinned here with bytes written by MicroPython.
"""

from __future__ import annotations

import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from lockcase import journal

# Two frames exactly as MicroPython 1.29 (Unix port) wrote them: magic, kind, len, id, crc32, JSON.
GOLDEN = (
    b'Z\xa5\x01\x00\t\x00\x07\x00\x00\x00\xb6\x13\xa0\x84{"id": 7}'
    b'Z\xa5\x01\x00\x18\x00\x08\x00\x00\x00:\x8d\xf6Q{"id": 8, "who": "desk"}'
)


def test_golden_frames_from_micropython_decode():
    rec, off = journal.decode(GOLDEN)
    assert rec == {"id": 7}
    rec, end = journal.decode(GOLDEN, off)
    assert rec == {"id": 8, "who": "desk"} and end == len(GOLDEN)
    assert journal.encode({"id": 7}) + journal.encode({"id": 8, "who": "desk"}) == GOLDEN


def test_header_layout_and_crc():
    frame = journal.encode({"id": 300, "ts": 5, "type": "granted"})
    magic, kind, n, rid, crc = struct.unpack_from("<HHHII", frame)
    payload = frame[14:]
    assert (magic, kind, n, rid) == (0xA55A, 1, len(payload), 300)
    assert crc == zlib.crc32(payload, zlib.crc32(frame[:10]))


records = st.fixed_dictionaries(
    {
        "id": st.integers(1, 2**32 - 1),
        "ts": st.integers(0, 2**31),
        "type": st.sampled_from(["granted", "forced"]),
    },
    optional={"user": st.text(max_size=40), "n": st.integers(-(2**40), 2**40), "ok": st.booleans()},
)


@given(records)
def test_round_trip(rec):
    frame = journal.encode(rec)
    assert journal.decode(frame) == (rec, len(frame))
    assert journal.decode(frame[:-1]) == (None, 0)  # a torn tail is never a record


@settings(max_examples=300)
@given(records, st.data())
def test_any_single_damage_is_rejected(rec, data):
    frame = bytearray(journal.encode(rec))
    i = data.draw(st.integers(0, len(frame) - 1))
    bit = data.draw(st.integers(0, 7))
    frame[i] ^= 1 << bit
    got, off = journal.decode(bytes(frame))
    assert got is None and off == 0


@given(st.binary(max_size=200))
def test_garbage_never_raises_or_invents(buf):
    rec, off = journal.decode(buf)
    assert rec is None or journal.encode(rec) == buf[:off]
