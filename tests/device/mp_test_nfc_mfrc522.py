# heap: 256k
# The MFRC522 driver under MicroPython, against the sim's emulated MFRC522 (boards/sim/mfrc522.py)
# on a virtual clock: ISO/IEC 14443-3 anticollision over cascade levels, Type 2 reads, ISO-DEP
# with chaining and waiting-time extensions, and the same reader service as the PN532.
import asyncio
import time

from mpassert import raises_async as _raises

from boards.sim import nfcbus as B
from boards.sim import pn532 as E
from boards.sim.mfrc522 import SimMFRC522, SimMfrcSPI
from lockcase.nfc import frame as F
from lockcase.nfc import tags
from lockcase.nfc.mfrc522 import MFRC522, crc_a
from lockcase.nfc.reader import DOWN, IDLE, Reader

UID4 = bytes.fromhex("04a1b2c3")
UID7 = bytes.fromhex("04a1b2c3d4e5f6")
UID10 = bytes.fromhex("04a1b2c3d4e5f60708a9")


class Clock:
    def __init__(self):
        self.t = time.ticks_add(0, -5000)

    def ticks(self):
        return self.t

    async def sleep(self, ms):
        self.t = time.ticks_add(self.t, ms)
        await asyncio.sleep_ms(0)


def rig(version=0x92):
    c = Clock()
    chip = SimMFRC522(c.ticks, version)
    spi = SimMfrcSPI(chip)
    rst = E.ResetPin(chip)
    return c, chip, MFRC522(spi, B.SimCS(spi), c.sleep, c.ticks, rst), rst


def run(coro):
    return asyncio.run(coro)


def test_crc_a_vectors():
    # ISO/IEC 14443-3: HLTA is 50 00 57 CD, RATS (FSDI 5, CID 0) is E0 50 BC A5.
    assert crc_a(b"\x50\x00", 2) == 0xCD57
    assert crc_a(b"\xe0\x50", 2) == 0xA5BC


def test_begin_checks_the_version():
    c, chip, drv, rst = rig()
    assert run(drv.begin()) == "0x92" and rst.pulses == 1
    assert chip.regs[0x2A] == 0x80 and chip.regs[0x15] == 0x40 and chip.regs[0x11] == 0x3D
    assert not chip.field
    e = _raises(F.WrongChip, rig(0x12)[2].begin())
    assert "0x12" in str(e)
    c, chip, drv, _ = rig()
    chip.set_fault("dead")
    t0 = c.t
    _raises(F.NoChip, drv.begin())
    assert time.ticks_diff(c.t, t0) < 300


def _detect(uid):
    c, chip, drv, _ = rig()
    run(drv.begin())
    chip.present(E.UidCard(uid))
    return chip, run(drv.detect())


def test_cascade_levels():
    chip, t = _detect(UID4)
    assert t.uid == UID4 and t.sak == 0x08 and t.atqa == 0x0004
    sels = [bytes(f[:2]) for f, _ in chip.frames if f[:1] in (b"\x93", b"\x95", b"\x97")]
    assert sels == [b"\x93\x20", b"\x93\x70"]
    chip, t = _detect(UID7)
    assert t.uid == UID7 and t.atqa == 0x0044 and t.sak == 0x00
    cl1 = [f for f, _ in chip.frames if f[:2] == b"\x93\x70"][0]
    assert cl1[2] == 0x88  # the cascade tag, not part of the UID
    chip, t = _detect(UID10)
    assert t.uid == UID10 and t.sak == 0x20 and t.ats[0] == len(t.ats)


def test_no_card_is_none():
    c, chip, drv, _ = rig()
    run(drv.begin())
    assert run(drv.detect()) is None
    assert chip.frames[-1] == (b"\x26", 7)  # REQA, a 7-bit short frame


class Svc:
    def __init__(self):
        self.c, self.chip, self.drv, _ = rig()
        self.got = []
        self.events = []
        self.r = Reader(self.drv, lambda s, v: self.got.append((s, v)),
                        lambda k, **d: self.events.append(k), self.c.ticks, self.c.sleep, 100, "c1")

    def polls(self, n):
        for _ in range(n):
            run(self.r.step())
            self.c.t = time.ticks_add(self.c.t, 100)

    def tap(self, card, n=3):
        self.chip.present(card)
        self.polls(n)
        self.chip.remove()
        self.polls(3)


def test_credentials_through_the_mfrc522():
    s = Svc()
    s.polls(1)
    s.tap(E.UidCard(UID7))
    s.tap(E.Ntag(UID7, b"lockcase:" + b"n" * 64))
    s.tap(E.Phone("lt_" + "p" * 61))  # 64 bytes + SW: more than one 64-byte frame holds
    s.tap(E.Phone("lt_x", app=False))
    assert s.got == [("nfc", UID7.hex()), ("card", "n" * 64), ("app", "lt_" + "p" * 61),
                     (None, tags.NO_APP)]
    frames = [f for f, _ in s.chip.frames]
    assert any(f[:2] == b"\xf2\x01" for f in frames)  # answered the phone's S(WTX)
    assert any(f[0] & 0xF6 == 0xA2 for f in frames if f)  # R(ACK) for the chained answer
    assert s.events == []


def test_one_tap_one_request():
    s = Svc()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))
    s.polls(30)
    assert s.got == [("nfc", UID4.hex())]


def test_rf_corruption_is_a_misread_not_a_fault():
    s = Svc()
    s.polls(1)
    s.chip.set_fault("corrupt", 2)
    s.chip.present(E.UidCard(UID7))
    s.polls(4)
    assert s.got == [("nfc", UID7.hex())] and s.events == []


def test_dead_reader_fault_and_recovery():
    s = Svc()
    s.polls(1)
    s.chip.set_fault("dead")
    s.polls(3)
    assert s.r.state == DOWN and s.events == ["fault"]
    s.chip.set_fault("ok")
    s.polls(20)
    assert s.r.state == IDLE and s.events == ["fault", "fault_cleared"]
    s.tap(E.UidCard(UID4))
    assert s.got == [("nfc", UID4.hex())]


def test_hang_is_cleared_by_the_reset_line():
    s = Svc()
    s.polls(1)
    s.chip.set_fault("hang")
    s.polls(15)
    assert s.r.state == IDLE and s.events == ["fault", "fault_cleared"]


def test_garbage_only_raises_nfc_errors_and_never_opens():
    s = Svc()
    s.polls(1)
    s.chip.present(E.Phone("lt_x"))
    s.chip.set_fault("garbage", -1)
    for _ in range(200):
        try:
            run(s.drv.detect())
        except F.NfcError:
            pass
        s.c.t = time.ticks_add(s.c.t, 50)
    s.polls(200)
    assert all(src is None for src, _ in s.got)
