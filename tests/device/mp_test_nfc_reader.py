# heap: 256k
# The PN532 driver and the reader service under MicroPython, against the sim's emulated PN532
# (boards/sim/pn532.py) over its I2C, SPI and UART, on a virtual clock: every wait the driver
# makes moves the clock, so timeouts and backoff are exact and the tests take milliseconds.
import asyncio
import time

from mpassert import raises_async as _raises

from boards.sim import nfcbus as B
from boards.sim import pn532 as E
from boards.sim.i2c import SimI2C
from lockcase.nfc import frame as F
from lockcase.nfc import tags
from lockcase.nfc.hsu import UARTTransport
from lockcase.nfc.i2c import I2CTransport
from lockcase.nfc.pn532 import PN532
from lockcase.nfc.reader import BACKOFF_MAX_MS, BACKOFF_MIN_MS, DOWN, IDLE, PRESENT, Reader
from lockcase.nfc.spi import SPITransport

UID4 = bytes.fromhex("04a1b2c3")
UID7 = bytes.fromhex("04a1b2c3d4e5f6")
UID10 = bytes.fromhex("04a1b2c3d4e5f60718293a")[:10]


class Clock:
    def __init__(self):
        self.t = time.ticks_add(0, -5000)  # cross the ticks wrap-around in every test

    def ticks(self):
        return self.t

    async def sleep(self, ms):
        self.t = time.ticks_add(self.t, ms)
        await asyncio.sleep_ms(0)

    def advance(self, ms):
        self.t = time.ticks_add(self.t, ms)

    def since(self, t0):
        return time.ticks_diff(self.t, t0)


class CountingPort(E.I2CPort):
    def __init__(self, chip):
        super().__init__(chip)
        self.status_reads = 0

    def read(self, n):
        if n == 1:
            self.status_reads += 1
        return super().read(n)


def rig(bus="i2c", irq=False, ic=0x32, attach=True, lsb_bus=False, lsb_driver=None, reset=False):
    c = Clock()
    chip = E.SimPN532(c.ticks, ic=ic)
    port = None
    if bus == "i2c":
        b = SimI2C()
        port = CountingPort(chip)
        if attach:
            b.attach(0x24, port)
        t = I2CTransport(b, 0x24, E.IrqPin(chip) if irq else None, c.sleep, c.ticks)
    elif bus == "spi":
        spi = B.SimSPI(chip, B.SimSPI.LSB if lsb_bus else B.SimSPI.MSB)
        lsb = lsb_bus if lsb_driver is None else lsb_driver
        t = SPITransport(spi, B.SimCS(spi), E.IrqPin(chip) if irq else None, lsb)
    else:
        t = UARTTransport(B.SimUART(chip), c.sleep, c.ticks)
    rst = E.ResetPin(chip) if reset else None
    drv = PN532(t, c.sleep, c.ticks, rst)
    return c, chip, drv, port, rst


def run(coro):
    return asyncio.run(coro)


# -- the driver on each bus -------------------------------------------------------------------
def _begin_ok(**kw):
    c, chip, drv, port, _ = rig(**kw)
    assert run(drv.begin()) == "1.6"
    codes = [(cmd, bytes(p)) for cmd, p in chip.commands]
    assert codes == [(0x02, b""), (0x14, b"\x01\x14\x01"), (0x32, b"\x05\xff\x01\x02"), (0x32, b"\x01\x00")]
    assert chip.sam and not chip.field and chip.retries == 2
    return c, chip, drv, port


def test_i2c_status_polling():
    _begin_ok(bus="i2c")


def test_i2c_irq_pin_never_polls_the_status_byte():
    # With IRQ wired the chip is only addressed once it is ready: nothing for it to stretch.
    c, chip, drv, port = _begin_ok(bus="i2c", irq=True)
    assert port.status_reads == 0
    c2, chip2, drv2, port2 = _begin_ok(bus="i2c", irq=False)
    assert port2.status_reads > 0


def test_i2c_long_response_is_reread_after_nack():
    # More than the first read's 24 bytes: the driver NACKs and reads the whole frame.
    c, chip, drv, port = _begin_ok(bus="i2c")
    chip.present(E.UidCard(UID10))
    tgt = run(drv.detect())
    assert tgt.uid == UID10 and tgt.ats
    r = run(drv.exchange(tags.SELECT))
    assert bytes(r) == b"\x6a\x82"


def test_spi_lsb_first_bus():
    _begin_ok(bus="spi", lsb_bus=True)


def test_spi_msb_only_bus_reverses_bits():
    c, chip, drv, _ = _begin_ok(bus="spi", lsb_bus=False, irq=True)
    chip.present(E.UidCard(UID7))
    assert run(drv.detect()).uid == UID7


def test_spi_without_bit_reversal_gets_nowhere():
    # The check that the reversal matters: an MSB-first bus driven as if it were LSB-first.
    c, chip, drv, _, _ = rig(bus="spi", lsb_bus=False, lsb_driver=True)
    _raises(F.NfcError, drv.begin())
    assert chip.commands == []


def test_uart_wakes_the_chip():
    c, chip, drv, _ = _begin_ok(bus="uart")
    chip.present(E.Ntag(UID7, b"lockcase:t1"))
    assert run(drv.detect()).atqa == 0x0044


def test_uart_without_wakeup_is_no_answer():
    c, chip, drv, _, _ = rig(bus="uart")
    drv.t.wake = lambda: None
    t0 = c.t
    _raises(F.NoChip, drv.begin())
    assert chip.commands == [] and c.since(t0) < 200


def test_missing_chip_is_reported_not_waited_on():
    c, chip, drv, _, _ = rig(bus="i2c", attach=False)
    t0 = c.t
    e = _raises(F.NoChip, drv.begin())
    assert "19" in str(e) and c.since(t0) < 200


def test_silent_chip_times_out_quickly():
    for bus in ("i2c", "spi", "uart"):
        c, chip, drv, _, _ = rig(bus=bus, irq=(bus == "spi"))
        chip.set_fault("dead")
        t0 = c.t
        _raises(F.NoChip, drv.begin())
        assert c.since(t0) < 200, bus


def test_wrong_chip_is_reported():
    c, chip, drv, _, _ = rig(ic=0x33)  # a PN533 answering where a PN532 should
    e = _raises(F.WrongChip, drv.begin())
    assert "0x33" in str(e)


def test_error_frame_raises_chip_error():
    c, chip, drv, _ = _begin_ok()
    e = _raises(F.ChipError, drv.call(0x7E))  # a command the chip does not know
    assert e.code == 0x7F and not F.rf_error(e.code)
    e = _raises(F.ChipError, drv.call(0x14, b"\x09"))  # SAMConfiguration mode out of range
    assert e.code == 0x7F
    assert run(drv.call(0x02))[0] == 0x32  # and the next command is fine


def test_corrupt_frame_is_asked_for_again():
    c, chip, drv, _ = _begin_ok()
    chip.set_fault("corrupt", 1)
    chip.present(E.UidCard(UID4))
    assert run(drv.detect()).uid == UID4
    assert drv.nacks == 1


def test_corrupt_frames_raise():
    c, chip, drv, _ = _begin_ok()
    chip.set_fault("corrupt", -1)
    e = _raises(F.FrameError, drv.detect())
    assert "DCS" in str(e)


def test_timeout_aborts_the_command():
    c, chip, drv, _ = _begin_ok()
    chip.set_fault("timeout", 1)
    t0 = c.t
    _raises(F.Timeout, drv.detect())
    assert 250 <= c.since(t0) < 400
    assert chip._resp is None and chip._out is None  # the host's ACK aborted it
    chip.present(E.UidCard(UID4))
    assert run(drv.detect()).uid == UID4


def test_exchange_reports_rf_status():
    c, chip, drv, _ = _begin_ok()
    chip.present(E.UidCard(UID4))
    run(drv.detect())
    e = _raises(F.ChipError, drv.exchange(b"\x30\x04"))  # the Classic card does not answer
    assert e.code == 0x01 and F.rf_error(e.code)
    run(drv.release())
    e = _raises(F.ChipError, drv.exchange(b"\x30\x04"))  # nothing listed any more
    assert e.code == 0x27


def test_garbage_from_the_chip_only_raises_nfc_errors():
    for bus in ("i2c", "spi", "uart"):
        c, chip, drv, _ = _begin_ok(bus=bus)
        chip.present(E.Phone("lt_x"))
        chip.set_fault("garbage", -1)
        for _ in range(150):
            try:
                run(drv.detect())
                raise AssertionError("a target out of garbage")
            except F.NfcError:
                pass


# -- the reader service -----------------------------------------------------------------------
class Svc:
    def __init__(self, bus="i2c", reset=False, **kw):
        self.c, self.chip, self.drv, _, self.rst = rig(bus=bus, reset=reset, **kw)
        self.got = []
        self.events = []
        self.r = Reader(self.drv, lambda s, v: self.got.append((s, v)),
                        lambda k, **d: self.events.append((k, d)), self.c.ticks, self.c.sleep, 100, "c1")

    def polls(self, n):
        for _ in range(n):
            run(self.r.step())
            self.c.advance(100)

    def kinds(self):
        return [k for k, _ in self.events]


def test_reader_starts_and_idles():
    s = Svc()
    s.polls(3)
    assert s.r.state == IDLE and s.got == [] and s.events == []
    assert s.chip.field is False  # the field is off between polls


def test_one_tap_one_request():
    s = Svc()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))
    s.polls(50)  # a card left on the case for 5 s
    assert s.got == [("nfc", "04a1b2c3")] and s.r.state == PRESENT
    s.chip.remove()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))  # one empty poll is a wobble, not a removal
    s.polls(5)
    assert len(s.got) == 1
    s.chip.remove()
    s.polls(2)
    assert s.r.state == IDLE
    s.chip.present(E.UidCard(UID4))
    s.polls(2)
    assert s.got == [("nfc", "04a1b2c3")] * 2


def test_another_card_in_place_is_a_new_tap():
    s = Svc()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))
    s.polls(3)
    s.chip.present(E.UidCard(UID7))  # swapped between two polls
    s.polls(3)
    s.chip.present(E.Phone("lt_a"))  # a random UID: not the card that was there
    s.polls(5)  # a new UID at every poll, but one phone: one request
    s.chip.present(E.Phone("lt_b"))
    s.polls(3)  # two phones in a row cannot be told apart without a gap
    assert s.got == [("nfc", UID4.hex()), ("nfc", UID7.hex()), ("app", "lt_a")]


def test_uid_sizes():
    for uid in (UID4, UID7, UID10):
        s = Svc()
        s.polls(1)
        s.chip.present(E.UidCard(uid))
        s.polls(2)
        assert s.got == [("nfc", uid.hex())], uid


def test_phone_app_token():
    s = Svc()
    s.polls(1)
    phone = E.Phone("lt_AbCdEf0123456789")
    s.chip.present(phone)
    s.polls(20)
    assert s.got == [("app", "lt_AbCdEf0123456789")]
    assert phone.requests == [b"c1"]  # GET TOKEN carried the case id


def test_phone_without_app_or_token():
    s = Svc()
    s.polls(1)
    s.chip.present(E.Phone("lt_x", app=False))
    s.polls(3)
    s.chip.remove()
    s.polls(3)
    s.chip.present(E.Phone(None))  # app installed, signed out
    s.polls(3)
    assert s.got == [(None, tags.NO_APP), (None, tags.APP_NOT_READY)]


def test_ndef_token_and_foreign_ndef():
    s = Svc()
    s.polls(1)
    s.chip.present(E.Ntag(UID7, b"lockcase:member-4711"))
    s.polls(3)
    s.chip.remove()
    s.polls(3)
    s.chip.present(E.Ntag(UID7, b"https://example.com/a-long-text-that-spans-several-pages"))
    s.polls(3)
    assert s.got == [("card", "member-4711"), ("nfc", UID7.hex())]


def test_ndef_token_across_pages():
    s = Svc()
    s.polls(1)
    tok = "t" * 64
    s.chip.present(E.Ntag(UID7, b"lockcase:" + tok.encode()))
    s.polls(2)
    assert s.got == [("card", tok)]
    reads = [bytes(p) for cmd, p in s.chip.commands if cmd == 0x40]
    assert reads == [b"\x01\x30\x03", b"\x01\x30\x07", b"\x01\x30\x0b", b"\x01\x30\x0f",
                     b"\x01\x30\x13", b"\x01\x30\x17"]


class Fleeing(E.Phone):
    """A phone pulled away right after SELECT."""

    def __init__(self, chip):
        super().__init__("lt_gone")
        self.chip = chip
        self.flee = True

    def apdu(self, c):
        r = super().apdu(c)
        if self.flee and c[1] == 0xA4:
            self.chip.remove()
        return r


def test_card_leaving_mid_read_is_no_fault():
    s = Svc()
    s.polls(1)
    p = Fleeing(s.chip)
    s.chip.present(p)
    s.polls(2)
    assert s.got == [] and s.events == [] and s.r.state == IDLE
    p.flee = False
    s.chip.present(p)
    s.polls(1)
    assert s.got == [("app", "lt_gone")]


def test_reader_dies_mid_session_and_recovers_with_backoff():
    s = Svc()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))
    s.polls(2)
    s.chip.set_fault("dead")
    s.polls(3)
    assert s.r.state == DOWN and s.kinds() == ["fault"]
    assert s.events[0][1]["part"] == "nfc" and s.events[0][1]["retry_ms"] == BACKOFF_MIN_MS
    # Re-initialisation attempts back off: 0.5 s, 1 s, 2 s, ... up to the cap.
    attempts = []
    for _ in range(1200):  # two minutes in 100 ms steps
        before = s.r.restarts
        s.polls(1)
        if s.r.restarts != before:
            attempts.append(s.c.t)
    gaps = [time.ticks_diff(b, a) for a, b in zip(attempts, attempts[1:])]
    want = [1000, 2000, 4000, 8000, 16000, BACKOFF_MAX_MS, BACKOFF_MAX_MS]
    assert len(gaps) >= len(want), gaps
    for g, w in zip(gaps, want):
        assert w <= g < w + 100, gaps  # + the time one failed attempt takes
    assert s.kinds() == ["fault"]  # one fault event per outage, not one per attempt
    s.chip.set_fault("ok")
    s.polls(BACKOFF_MAX_MS // 100 + 1)
    assert s.kinds() == ["fault", "fault_cleared"]
    # The card read before the outage is still there: it must leave first.
    assert s.r.state == PRESENT and len(s.got) == 1
    s.chip.remove()
    s.polls(2)
    s.chip.present(E.UidCard(UID7))
    s.polls(1)
    assert s.got[-1] == ("nfc", UID7.hex())


def test_missing_reader_at_boot_is_a_fault():
    s = Svc(attach=False)
    s.polls(1)
    assert s.r.state == DOWN and s.kinds() == ["fault"]
    assert "bus error" in s.events[0][1]["error"]


def test_hung_chip_is_revived_by_the_reset_line():
    s = Svc(reset=True)
    s.polls(1)
    assert s.rst.pulses == 1  # begin() resets the chip it is given
    s.chip.set_fault("hang")
    s.polls(3)
    assert s.r.state == DOWN
    s.polls(10)
    assert s.r.state == IDLE and s.kinds() == ["fault", "fault_cleared"]
    assert s.rst.pulses == 2


def test_garbage_reader_never_delivers():
    s = Svc()
    s.polls(1)
    s.chip.present(E.UidCard(UID4))
    s.chip.set_fault("garbage", -1)
    s.polls(600)
    assert s.got == [] and s.kinds() == ["fault"]
    s.chip.set_fault("ok")
    s.polls(BACKOFF_MAX_MS // 100 + 2)
    assert s.got == [("nfc", "04a1b2c3")] and s.kinds() == ["fault", "fault_cleared"]


def test_run_never_blocks_the_loop():
    # Real time: the firmware's loop steps every 10 ms beside a reader that is timing out,
    # sending garbage, dead, or reading cards. Its longest gap stays near one tick.
    chip = E.SimPN532(time.ticks_ms)
    bus = SimI2C()
    bus.attach(0x24, E.I2CPort(chip))
    drv = PN532(I2CTransport(bus, 0x24, None, asyncio.sleep_ms, time.ticks_ms),
                asyncio.sleep_ms, time.ticks_ms)
    got = []
    r = Reader(drv, lambda s, v: got.append(v), lambda k, **d: None, time.ticks_ms, None, 50, "c1")
    gaps = []

    async def loop():
        last = time.ticks_ms()
        for i in range(150):
            await asyncio.sleep_ms(10)
            now = time.ticks_ms()
            gaps.append(time.ticks_diff(now, last))
            last = now
            if i == 20:
                chip.present(E.Phone("lt_x"))
            elif i == 40:
                chip.set_fault("timeout", -1)
            elif i == 70:
                chip.set_fault("garbage", -1)
            elif i == 100:
                chip.set_fault("dead")

    async def main():
        task = asyncio.create_task(r.run())
        await loop()
        task.cancel()

    run(main())
    assert got == ["lt_x"]
    # A reader that blocked in its waits would hold the loop for 30 to 1000 ms at a time; the
    # margin above one tick is for a busy test machine.
    assert max(gaps) < 100, max(gaps)



class Deaf(E.UidCard):
    """A Type 2 tag whose reads all fail on the air (RF timeout): a card, not the reader."""

    def __init__(self):
        super().__init__(UID7, 0x0044, 0x00)

    def read(self, page):
        return None


def test_unreadable_card_is_reported_once():
    s = Svc()
    s.polls(1)
    s.chip.present(Deaf())
    s.polls(20)
    assert s.got == [(None, tags.UNREADABLE)] and s.events == [] and s.r.state == PRESENT
    s.chip.commands = []
    s.polls(5)
    assert [c for c, _ in s.chip.commands if c == 0x40] == []  # no more tries at it while it stays
    s.chip.remove()
    s.polls(2)
    s.chip.present(E.UidCard(UID7))  # a readable card with the same UID, after a gap
    s.polls(1)
    assert s.got[-1] == ("nfc", UID7.hex())


# -- issue 8: event-driven with IRQ, adaptive without ---------------------------------------
class Counting(CountingPort):
    """Counts every I2C transaction, and remembers when each InListPassiveTarget went out."""

    def __init__(self, chip, clock):
        super().__init__(chip)
        self.clock = clock
        self.transactions = 0
        self.lists = []

    def write(self, buf):
        self.transactions += 1
        super().write(buf)
        if self.chip.commands and self.chip.commands[-1][0] == 0x4A and bytes(buf).find(b"\xd4\x4a") >= 0:
            self.lists.append(self.clock.t)

    def read(self, n):
        self.transactions += 1
        return super().read(n)


def live(irq, poll_ms=100, **kw):
    """A reader on its own run() loop over I2C, on the virtual clock; the port counts."""
    c = Clock()
    chip = E.SimPN532(c.ticks)
    b = SimI2C()
    port = Counting(chip, c)
    b.attach(0x24, port)
    drv = PN532(I2CTransport(b, 0x24, E.IrqPin(chip) if irq else None, c.sleep, c.ticks), c.sleep, c.ticks)
    got = []
    r = Reader(drv, lambda s, v: got.append((s, v, c.t)), lambda k, **d: None, c.ticks, c.sleep, poll_ms, "c1",
               **kw)
    return c, chip, port, r, got


def run_for(c, r, ms, at=None, card=None, hog=None):
    """Run the reader for ms of virtual time; put card on the antenna `at` ms in; hog: a task
    that holds the loop for that many ms at every turn (advances the clock without yielding)."""
    end = time.ticks_add(c.t, ms)
    put = None if at is None else time.ticks_add(c.t, at)

    async def watch():
        nonlocal put
        while time.ticks_diff(end, c.t) > 0:
            if put is not None and time.ticks_diff(c.t, put) >= 0:
                card[0].present(card[1])
                put = None
            if hog:
                c.advance(hog)
            await asyncio.sleep_ms(0)

    async def main():
        task = asyncio.create_task(r.run())
        await watch()
        task.cancel()

    run(main())


def test_irq_reader_waits_on_the_line_not_a_schedule():
    c, chip, port, r, got = live(irq=True)
    run_for(c, r, 10_000)
    assert r.state == IDLE and got == []
    # Today's reader polled every 100 ms: 100 InListPassiveTargets and 400 bus transactions in
    # 10 s. Listening, the chip looks for cards itself: one command per re-arm, no status reads.
    n = len(port.lists)  # (chip.commands keeps only the recent ones)
    assert n <= 10_000 // 1000 + 1, n
    assert port.status_reads == 0
    assert port.transactions <= 4 * (10_000 // 1000 + 1) + 20, port.transactions
    assert chip.field  # the chip keeps its field on while it listens
    assert chip.retries == 0xFF


def test_irq_tap_is_answered_by_the_listen_already_running():
    for at in (3_001, 3_517, 3_990):  # anywhere in a re-arm period
        c, chip, port, r, got = live(irq=True)
        t0 = c.t
        run_for(c, r, 5_000, at=at, card=(chip, E.UidCard(UID4)))
        assert [g[:2] for g in got] == [("nfc", "04a1b2c3")]
        put = time.ticks_add(t0, at)
        # The card was read off the InListPassiveTarget issued before it came: no new poll.
        lists_before = [t for t in port.lists if time.ticks_diff(t, put) < 0]
        assert lists_before and chip.commands and r.state == PRESENT
        first_after = [t for t in port.lists if time.ticks_diff(t, put) >= 0]
        # (PRESENT polls come after the read; the read itself issued no InListPassiveTarget)
        assert not first_after or time.ticks_diff(first_after[0], got[0][2]) >= 0
        # On the virtual clock, delivery follows within one IRQ check of the chip's answer: the
        # next activation attempt (2 ms), activation (4 ms), the IRQ check (4 ms), the reads.
        assert time.ticks_diff(got[0][2], put) <= 2 + 4 + 4 + 10, time.ticks_diff(got[0][2], put)


def test_irq_reader_notices_a_dead_chip_at_the_rearm():
    c, chip, port, r, got = live(irq=True)
    events = []
    r.emit = lambda k, **d: events.append(k)
    run_for(c, r, 2_000)
    chip.set_fault("dead")
    run_for(c, r, 6_000)
    assert r.state == DOWN and events == ["fault"]
    chip.set_fault("ok")
    run_for(c, r, BACKOFF_MAX_MS)
    assert r.state == IDLE and events == ["fault", "fault_cleared"]
    chip.present(E.UidCard(UID7))
    run_for(c, r, 1_000)
    assert [g[:2] for g in got] == [("nfc", UID7.hex())]


def test_adaptive_tap_is_detected_within_one_short_poll():
    # Without IRQ: a tap is read by the first poll after it, which comes within one short period
    # (fast_ms, stretched to the bus share), not poll_ms.
    for at in (2_000, 2_013, 2_031, 2_047):
        c, chip, port, r, got = live(irq=False, poll_ms=100)
        t0 = c.t
        run_for(c, r, 3_000, at=at, card=(chip, E.UidCard(UID4)))
        assert [g[:2] for g in got] == [("nfc", "04a1b2c3")]
        put = time.ticks_add(t0, at)
        after = [t for t in port.lists if time.ticks_diff(t, put) >= 0]
        before = [t for t in port.lists if time.ticks_diff(t, put) < 0]
        # the idle polls' period, as the reader ran it just before the tap
        period = time.ticks_diff(before[-1], before[-2])
        assert period < 50, period  # today: 100 (poll_ms)
        assert time.ticks_diff(after[0], put) <= period, (time.ticks_diff(after[0], put), period)
        assert time.ticks_diff(got[0][2], after[0]) <= 20  # read on that poll, not a later one


def test_adaptive_reader_keeps_to_its_share_of_the_loop():
    # Count-bounded: the bus time the reader's I2C transactions take on a 100 kHz bus (bytes x 9
    # clocks, plus a per-call overhead) is at most SHARE_PCT of the time it ran.
    from lockcase.nfc.reader import SHARE_PCT

    class Bytes(Counting):
        nbytes = 0

        def write(self, buf):
            self.nbytes += len(buf) + 1
            super().write(buf)

        def read(self, n):
            self.nbytes += n + 1
            return super().read(n)

    c = Clock()
    chip = E.SimPN532(c.ticks)
    b = SimI2C()
    port = Bytes(chip, c)
    b.attach(0x24, port)
    drv = PN532(I2CTransport(b, 0x24, None, c.sleep, c.ticks), c.sleep, c.ticks)
    r = Reader(drv, lambda s, v: None, lambda k, **d: None, c.ticks, c.sleep, 100, "c1")
    run_for(c, r, 10_000)
    polls = len(port.lists)
    assert polls >= 10_000 // 50, polls  # faster than poll_ms ...
    bus_us = port.nbytes * 90 + port.transactions * F.OP_US
    assert bus_us * 100 <= SHARE_PCT * 10_000 * 1000, (bus_us, polls)  # ... within its share
    assert 0 < r.share_pm <= SHARE_PCT * 10, r.share_pm


def test_adaptive_reader_gives_way_to_a_busy_loop():
    # Another task holds the loop for 30 ms at every turn: the reader's sleeps come back late and
    # it drops to poll_ms until the loop is calm again.
    c, chip, port, r, got = live(irq=False, poll_ms=100)
    run_for(c, r, 1_000)
    n0 = len(port.lists)
    run_for(c, r, 5_000, hog=30)
    busy = len(port.lists) - n0
    assert busy <= 5_000 // 100 + 2, busy
    n0 = len(port.lists)
    run_for(c, r, 5_000)
    calm = len(port.lists) - n0
    assert calm > 2 * busy, (calm, busy)
