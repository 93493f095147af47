# The NFC reader service: looks for cards on asyncio, reads one credential per tap, and needs the
# card to leave the field before it reads again (a card left on the case makes one request, not
# one a poll). A reader that stops answering is taken out of the loop, re-initialised with
# exponential backoff and reported once as a fault event; nothing here blocks for longer than
# one bus transaction, so the keypad and the lock never wait for it.
#
# How it waits for a card, fastest first:
# - P70_IRQ wired (a PN532 whose chip.can_listen): the chip looks for cards itself and the reader
#   waits on the IRQ line (chip.listen), re-issuing the command every _REARM_MS so a chip that died
#   is noticed. No bus traffic while nobody taps.
# - otherwise it polls, adaptively: every fast_ms while idle (a tap waits at most one short
#   period), every poll_ms while a card is held on the antenna, after a failure, and while the loop
#   is busy (the reader's own sleep came back late: other tasks need the CPU more than a tap
#   needs 20 ms). Every cycle is also stretched so that the bus time the reader holds the loop for
#   (the chip's take_hold_us(), modelled from the bytes it moved) stays under SHARE_PCT of the
#   time: on 100 kHz I2C an empty PN532 poll holds the loop for about 8 ms, so it polls about
#   every 32 ms there, and every fast_ms on a faster bus.
import asyncio

from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import tags
from lockcase.nfc.frame import ChipError, NfcError, rf_error

START = "start"  # not initialised yet
DOWN = "down"
IDLE = "idle"
PRESENT = "present"  # a card was read and is still in the field

_FAILS = const(3)  # failed polls in a row before the reader counts as down
_ABSENT = const(2)  # empty polls in a row before a card counts as removed
_MISREADS = const(3)  # RF errors on one card before the shopper is told to tap again
BACKOFF_MIN_MS = const(500)
BACKOFF_MAX_MS = const(30000)
_FAST_MS = const(20)  # the idle poll period without IRQ, when the loop can spare it
SHARE_PCT = const(25)  # most of the loop's time the reader holds it for, on the bus
_REARM_MS = const(1000)  # a listen (IRQ wired) is aborted and re-issued after this long
_LAG_MS = const(15)  # a sleep this late means the loop is busy: poll slowly for a while
_CALM_MS = const(1000)  # ... this long after the last late sleep


def _text(exc):
    return ("%s: %s" % (type(exc).__name__, exc))[:60]


class Reader:
    def __init__(self, chip, deliver, emit, ticks_ms, sleep_ms=None, poll_ms=100, case_id="",
                 fast_ms=_FAST_MS):
        self.chip = chip  # begin(), detect(), exchange(), release(), field_off(), name, fw
        self.deliver = deliver  # fn(src, value): src "nfc", "card", "app"; or None and a reason
        self.emit = emit  # the app bus's emit
        self._ticks = ticks_ms
        self._sleep = sleep_ms or asyncio.sleep_ms
        self.poll_ms = poll_ms
        self.fast_ms = fast_ms if fast_ms < poll_ms else poll_ms
        self.listens = chip.can_listen is True  # IRQ wired: wait on it, not a schedule
        self.case_id = case_id
        self.state = START
        self._buf = bytearray(tags.NDEF_MAX)
        self._retry_at = ticks_ms()
        self._backoff = 0
        self._fails = 0
        self._absent = 0
        self._misreads = 0
        self._hold = False
        self._uid = b""  # the card last read
        self._cur = b""  # the card last seen
        self.faulted = False
        self.last_error = None
        self.taps = 0
        self.errors = 0
        self.restarts = 0
        self._lagging = False
        self._calm_at = 0
        self.share_pm = 0  # the loop's time the reader held it for on the bus, per mille, smoothed

    def status(self):
        return {"state": self.state, "chip": self.chip.name, "fw": self.chip.fw, "taps": self.taps,
                "errors": self.errors, "restarts": self.restarts, "error": self.last_error,
                "share_pm": self.share_pm, "irq": self.listens}

    async def run(self):
        while True:
            t0 = self._ticks()
            try:
                await self.step()
            except Exception as exc:  # a bug must not end NFC for good: it counts as a failure
                self._failed(exc)
            d = ticks_diff(self._ticks(), t0)
            hold = self.chip.take_hold_us()
            delay = self._delay(d, hold)
            cycle = d + delay
            if cycle > 0:
                self.share_pm = (self.share_pm * 7 + hold // cycle) // 8
            await self._sleep(delay)
            self._late(ticks_diff(self._ticks(), t0) - d - delay)

    def _late(self, ms):
        now = self._ticks()
        if ms > _LAG_MS:
            self._lagging = True
            self._calm_at = ticks_add(now, _CALM_MS)
        elif self._lagging and ticks_diff(now, self._calm_at) >= 0:
            self._lagging = False

    def _delay(self, took=0, hold_us=0):
        """The sleep before the next cycle, which took `took` ms and held the bus hold_us."""
        if self.state == DOWN or self.state == START:
            d = ticks_diff(self._retry_at, self._ticks())
            return d if d > 0 else 0
        if self._fails or self.state != IDLE or self._lagging:
            period = self.poll_ms
        elif self.listens:
            period = 0  # listen() did the waiting, on the IRQ line
        else:
            period = self.fast_ms
        # hold_us may be at most SHARE_PCT of the cycle: the cycle lasts hold_us * 100 / SHARE_PCT.
        least = -(-hold_us // (10 * SHARE_PCT))  # rounded up
        if least > period:
            period = least
        d = period - took
        return d if d > 0 else 0

    # -- one cycle ------------------------------------------------------------------------------
    async def step(self):
        if self.state == DOWN or self.state == START:
            if ticks_diff(self._retry_at, self._ticks()) <= 0:
                await self._start()
            return
        chip = self.chip
        try:
            if self.state == IDLE and self.listens:
                tgt = await chip.listen(_REARM_MS)
                if tgt is None:  # nobody tapped for _REARM_MS, and the chip took the command
                    self._fails = 0
                    self._misreads = 0
                    return
            else:
                tgt = await chip.detect()
            if tgt is None:
                await chip.field_off()
                self._fails = 0
                self._misreads = 0
                if self.state == PRESENT:
                    self._absent += 1
                    if self._absent >= _ABSENT:
                        self.state = IDLE
                return
            self._absent = 0
            self._cur = tgt.uid
            if self.state == IDLE or self._swapped(tgt.uid):
                await self._read(tgt)
            await chip.release()
            await chip.field_off()
            self._fails = 0
        except ChipError as exc:
            if not rf_error(exc.code):
                self._failed(exc)
                return
            await self._misread()
        except (NfcError, OSError) as exc:
            self._failed(exc)

    def _swapped(self, uid):
        # Another card in place of the one read, without a poll in between that saw none. A
        # phone's UID is new at every activation, so two phones in a row look like one.
        return uid != self._uid and not (tags.random_uid(uid) and tags.random_uid(self._uid))

    async def _read(self, tgt):
        src, value = await tags.read(self.chip, tgt, self.case_id, self._buf)
        self._uid = tgt.uid
        self.state = PRESENT
        self._misreads = 0
        self.taps += 1
        self._hand_over(src, value)

    async def _misread(self):
        # The card left mid-read or answered badly: the reader itself is fine.
        self._misreads += 1
        if self.state == IDLE and self._misreads >= _MISREADS:
            self.state = PRESENT
            self._uid = self._cur
            self._hand_over(None, tags.UNREADABLE)
        try:
            await self.chip.field_off()
        except (NfcError, OSError) as exc:
            self._failed(exc)

    def _hand_over(self, src, value):
        try:
            self.deliver(src, value)
        except Exception as exc:  # the app's problem, not the reader's
            print("nfc: deliver failed:", repr(exc))

    # -- health ---------------------------------------------------------------------------------
    async def _start(self):
        try:
            fw = await self.chip.begin()
        except Exception as exc:
            self.errors += 1
            self.last_error = _text(exc)
            self._down()
            return
        # A card that was read before the outage must still leave first: one tap, one request.
        self.state = PRESENT if self._hold else IDLE
        self._hold = False
        self._fails = 0
        self._absent = 0
        self._backoff = 0
        print("nfc: %s firmware %s ready" % (self.chip.name, fw))
        if self.faulted:
            self.faulted = False
            self.emit("fault_cleared", part="nfc")

    def _failed(self, exc):
        self.errors += 1
        self.last_error = _text(exc)
        print("nfc:", self.last_error)
        self._fails += 1
        if (self.state == IDLE or self.state == PRESENT) and self._fails >= _FAILS:
            self._down()

    def _down(self):
        if self.state == PRESENT:
            self._hold = True
        self.state = DOWN
        b = self._backoff * 2 if self._backoff else BACKOFF_MIN_MS
        if b > BACKOFF_MAX_MS:
            b = BACKOFF_MAX_MS
        self._backoff = b
        self._retry_at = ticks_add(self._ticks(), b)
        self.restarts += 1
        if not self.faulted:
            self.faulted = True
            self.emit("fault", part="nfc", error=self.last_error, retry_ms=b)
