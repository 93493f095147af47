# The NFC reader service: polls the chip on asyncio, reads one credential per tap, and needs the
# card to leave the field before it reads again (a card left on the case makes one request, not
# one a poll). A reader that stops answering is taken out of the loop, re-initialised with
# exponential backoff and reported once as a fault event; nothing here blocks for longer than
# one bus transaction, so the keypad and the lock never wait for it.
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


def _text(exc):
    return ("%s: %s" % (type(exc).__name__, exc))[:60]


class Reader:
    def __init__(self, chip, deliver, emit, ticks_ms, sleep_ms=None, poll_ms=100, case_id=""):
        self.chip = chip  # begin(), detect(), exchange(), release(), field_off(), name, fw
        self.deliver = deliver  # fn(src, value): src "nfc", "card", "app"; or None and a reason
        self.emit = emit  # the app bus's emit
        self._ticks = ticks_ms
        self._sleep = sleep_ms or asyncio.sleep_ms
        self.poll_ms = poll_ms
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

    def status(self):
        return {"state": self.state, "chip": self.chip.name, "fw": self.chip.fw, "taps": self.taps,
                "errors": self.errors, "restarts": self.restarts, "error": self.last_error}

    async def run(self):
        while True:
            try:
                await self.step()
            except Exception as exc:  # a bug must not end NFC for good: it counts as a failure
                self._failed(exc)
            await self._sleep(self._delay())

    def _delay(self):
        if self.state == DOWN or self.state == START:
            d = ticks_diff(self._retry_at, self._ticks())
            return d if d > 0 else 0
        return self.poll_ms

    # -- one cycle ------------------------------------------------------------------------------
    async def step(self):
        if self.state == DOWN or self.state == START:
            if ticks_diff(self._retry_at, self._ticks()) <= 0:
                await self._start()
            return
        chip = self.chip
        try:
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
