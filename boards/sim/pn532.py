# An emulated PN532 (firmware v1.6) with cards on its antenna, for the sim board. It speaks the
# host-interface frames of UM0701-02 over the sim's I2C, SPI and UART, with its own frame code
# (not the firmware's), so the real driver runs against it unmodified and a driver bug shows up
# as a refused frame, not as two copies of one mistake agreeing.
#
# The chip: a command frame is ACKed at once; its response is ready `latency` ms later. The
# host's ACK aborts the command in progress; its NACK makes the chip send the last frame again.
# P70_IRQ (IrqPin) is low while a frame waits for the host. InListPassiveTarget with
# MxRtyPassiveActivation 0xFF keeps looking for a card, one activation attempt every _RETRY_MS,
# and answers (IRQ low) once one came: at the first attempt after the card entered the field,
# plus the activation time of a card already there.
# Faults for tests and the control socket: "corrupt" (the next responses carry a bad DCS),
# "garbage" (random bytes instead of every frame), "timeout" (ACK, then no response), "dead" (no
# answer at all, not even to the I2C address), "hang" (dead until the reset line is pulsed), "ok".
# One module on purpose: one chip as its datasheet describes it (frames, commands, the cards in
# its field, its I2C interface and its IRQ and reset lines), read side by side with UM0701-02 and
# the firmware's driver. Its SPI and HSU links are boards/sim/nfcbus.py: a case reads on I2C, and
# the heap harness's every loaded name is interned for good (docs/memory.md).
import os
import time

from lockcase.compat import const

_ACK = b"\x00\x00\xff\x00\xff\x00"
_NACK = b"\x00\x00\xff\xff\x00\x00"
_SYNTAX_ERROR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
_ENODEV = const(19)

# Response time (ms) per command, roughly what a PN532 with a card in the field takes.
_LATENCY = {0x02: 1, 0x14: 1, 0x32: 1, 0x52: 1, 0x4A: 4, 0x40: 3}
_HCE_MS = const(25)  # a phone app answering an APDU
_NO_CARD_MS = const(6)  # InListPassiveTarget giving up after MxRtyPassiveActivation retries
_RETRY_MS = const(2)  # one passive activation attempt that no card answered (_NO_CARD_MS / 3 attempts)


def _frame(data):
    n = len(data)
    return bytes((0, 0, 0xFF, n, (-n) & 0xFF)) + bytes(data) + bytes(((-sum(data)) & 0xFF, 0))


def _parse(buf):
    """A host frame -> ("ack"|"nack"|"cmd"|"bad", data)."""
    i = bytes(buf).find(b"\x00\xff")
    if i < 0 or len(buf) < i + 4:
        return "bad", None
    a, b = buf[i + 2], buf[i + 3]
    if (a, b) == (0x00, 0xFF):
        return "ack", None
    if (a, b) == (0xFF, 0x00):
        return "nack", None
    if (a + b) & 0xFF or a < 2:
        return "bad", None
    data = bytes(buf[i + 4 : i + 4 + a])
    if len(data) < a or len(buf) < i + 5 + a or (sum(data) + buf[i + 4 + a]) & 0xFF:
        return "bad", None
    if data[0] != 0xD4:
        return "bad", None
    return "cmd", data[1:]


# -- cards ------------------------------------------------------------------------------------
class UidCard:
    """A card known only by its UID: MIFARE Classic (4 bytes), Ultralight without NDEF (7),
    or an ISO-DEP card (10, or any with sak 0x20) that has no store app on it."""

    def __init__(self, uid, atqa=None, sak=None):
        self.uid = bytes(uid)
        n = len(self.uid)
        if n not in (4, 7, 10):
            raise ValueError("a UID has 4, 7 or 10 bytes")
        self.atqa = atqa if atqa is not None else {4: 0x0004, 7: 0x0044, 10: 0x0048}[n]
        self.sak = sak if sak is not None else {4: 0x08, 7: 0x00, 10: 0x20}[n]
        self.ats = b"\x05\x78\x80\x70\x02" if self.sak & 0x20 else b""
        self.mem = bytearray(64)  # a blank Type 2 tag: no Capability Container

    def activate(self):
        return self.uid

    def apdu(self, data):
        return b"\x6a\x82"  # file or application not found

    def read(self, page):
        if self.sak != 0x00:
            return None  # MIFARE Classic: no READ before authentication
        out = bytearray(16)
        n = len(self.mem) // 4
        for k in range(16):
            out[k] = self.mem[((page + k // 4) % n) * 4 + k % 4]
        return bytes(out)

    def latency(self, data):
        return 0


class Ntag(UidCard):
    """An NTAG213 whose NDEF message holds one Text record."""

    def __init__(self, uid, text, lang=b"en"):
        super().__init__(uid, 0x0044, 0x00)
        if len(self.uid) != 7:
            raise ValueError("an NTAG has a 7-byte UID")
        self.mem = bytearray(45 * 4)
        body = bytes((len(lang),)) + lang + text
        rec = bytes((0xD1, 1, len(body))) + b"T" + body  # MB ME SR, TNF well-known, type "T"
        u = self.uid
        self.mem[0:4] = bytes((u[0], u[1], u[2], 0x88 ^ u[0] ^ u[1] ^ u[2]))
        self.mem[4:8] = u[3:7]
        self.mem[12:16] = b"\xe1\x10\x12\x00"  # CC: NDEF 1.0, 144-byte data area, read/write
        # A Lock Control TLV first, as NTAGs ship, so the reader must skip TLVs to find NDEF.
        tlv = b"\x01\x03\xa0\x0c\x34" + bytes((0x03, len(rec))) + rec + b"\xfe"
        self.mem[16 : 16 + len(tlv)] = tlv


class Phone(UidCard):
    """A phone running the store app under host card emulation: a new random UID at every
    activation, ISO-DEP, our AID, and a token (None: the app has nothing to give, 6985)."""

    AID = b"\xf0LOCKCASE\x01"

    def __init__(self, token, app=True):
        super().__init__(b"\x08\x00\x00\x00", 0x0004, 0x20)
        self.token = token
        self.app = app
        self.selected = False
        self.requests = []  # GET TOKEN data (the case id) seen, for tests

    def activate(self):
        self.uid = b"\x08" + os.urandom(3)
        self.selected = False
        return self.uid

    def apdu(self, c):
        if len(c) >= 5 and c[0] == 0x00 and c[1] == 0xA4 and c[2] == 0x04:
            lc = c[4]
            self.selected = self.app and bytes(c[5 : 5 + lc]) == self.AID
            return b"\x90\x00" if self.selected else b"\x6a\x82"
        if not self.selected:
            return b"\x6d\x00"
        if len(c) >= 4 and c[0] == 0x80 and c[1] == 0x10:
            lc = c[4] if len(c) > 5 else 0
            self.requests.append(bytes(c[5 : 5 + lc]))
            if self.token is None:
                return b"\x69\x85"
            return self.token.encode() + b"\x90\x00"
        return b"\x6d\x00"  # instruction not supported

    def read(self, page):
        return None

    def latency(self, data):
        return _HCE_MS


# -- the chip ---------------------------------------------------------------------------------
class SimChip:
    """What the emulated readers share: the reset line (low holds the chip in reset, the rising
    edge boots it again and ends a "hang") and the faults that keep it silent."""

    in_reset = False
    fault = "ok"

    def reset_line(self, level):
        if not level:
            self.in_reset = True
            self._reset_held()
        elif self.in_reset:
            self._power_on()
            if self.fault == "hang":
                self.fault = "ok"

    def _reset_held(self):
        pass

    def _power_on(self):
        raise NotImplementedError

    def silent(self):
        return self.in_reset or self.fault in ("dead", "hang")


class SimPN532(SimChip):
    def __init__(self, clock, ic=0x32, ver=1, rev=6, support=7):
        self.clock = clock  # ticks_ms() of the board
        self.version = bytes((ic, ver, rev, support))
        self.card = None
        self.card_since = 0  # when the card entered the field, on the board's clock
        self.fault = "ok"
        self.fault_count = 0  # "corrupt"/"timeout": how many more; -1 = until "ok"
        self.commands = []  # (code, params) of the recent commands, for tests
        self.sent = 0  # frames sent to the host
        self.latency_extra = 0
        self._power_on()

    def _power_on(self):
        self.field = False
        self.asleep = True  # LowVbat after power-up; HSU needs the 0x55 wake-up
        self.sam = False
        self.retries = 0xFF
        self.target = None  # the activated card
        self._out = None  # frame on offer now (ACK or response)
        self._resp = None  # (frame, ready_at) after the ACK
        self._last = None  # last response, for NACK
        self._listen = None  # (params, since): InListPassiveTarget waiting for a card, forever
        self.in_reset = False

    # -- faults and cards ---------------------------------------------------------------------
    def set_fault(self, kind, count=1):
        if kind not in ("ok", "corrupt", "garbage", "timeout", "dead", "hang"):
            raise ValueError("unknown nfc fault %r" % (kind,))
        self.fault = kind
        self.fault_count = count
        if kind in ("dead", "hang", "garbage"):
            self._out = self._resp = self._listen = None

    def present(self, card):
        if card is not self.card:
            self.card_since = self.clock()
        self.card = card
        self.target = None

    def remove(self):
        self.card = None
        self.target = None

    def _reset_held(self):
        # RSTPDN low: whatever the chip was saying or waiting for is gone.
        self._out = self._resp = self._listen = None

    # -- the host side -------------------------------------------------------------------------
    def host_frame(self, buf):
        if self.silent():
            return
        kind, data = _parse(buf)
        if kind == "ack":  # abort
            self._out = self._resp = self._listen = None
            return
        if kind == "nack":
            if self._last is not None:
                self._out = self._emit(self._last)
            return
        if kind == "bad":
            return  # a real chip ignores a frame it cannot take (no ACK): the host times out
        self.asleep = False
        if len(self.commands) >= 64:  # the recent ones are what tests look at
            del self.commands[:32]
        self.commands.append((data[0], data[1:]))
        self._listen = None
        resp, ms = self._run(data[0], data[1:])
        self._out = self._emit(_ACK, ack=True)
        if self.fault == "timeout" and self.fault_count:
            if self.fault_count > 0:
                self.fault_count -= 1
            return
        if resp is None:  # listening for a card (see _found)
            self._listen = (data[1:], self.clock())
            return
        # ms None: the chip is still busy when the host gives up (it must abort with an ACK).
        at = None if ms is None else time.ticks_add(self.clock(), ms + self.latency_extra)
        self._resp = (resp, at)

    def _found(self):
        # A listen answers at the first activation attempt after the card came, once the card has
        # answered it (the same activation time as a card already in the field).
        p, since = self._listen
        c = self.card
        if c is None:
            return
        late = time.ticks_diff(self.card_since, since)
        start = since if late <= 0 else time.ticks_add(since, -(-late // _RETRY_MS) * _RETRY_MS)
        at = time.ticks_add(start, _LATENCY[0x4A] + (4 if c.ats else 0) + self.latency_extra)
        if self._due(at):
            self._listen = None
            frame, _ = self._list(p)
            self._last = frame
            self._out = self._emit(frame)

    def ready(self):
        if self.silent():
            return False
        if self._out is None and self._listen is not None:
            self._found()
        if self._out is None and self._resp is not None:
            frame, at = self._resp
            if self._due(at):
                self._resp = None
                self._last = frame
                self._out = self._emit(frame)
        return self._out is not None

    def _due(self, at):
        return at is not None and time.ticks_diff(self.clock(), at) >= 0

    def take(self):
        """The frame on offer, removed: the host has read it."""
        if not self.ready():
            return None
        out, self._out = self._out, None
        self.sent += 1
        return out

    def _emit(self, frame, ack=False):
        f = self.fault
        if f == "garbage":
            n = os.urandom(1)[0] % 24 + 1
            return os.urandom(n)
        if f == "corrupt" and not ack and self.fault_count:
            if self.fault_count > 0:
                self.fault_count -= 1
            b = bytearray(frame)
            b[-2] ^= 0x5A  # DCS
            return bytes(b)
        return frame

    # -- commands ------------------------------------------------------------------------------
    def _run(self, cmd, p):
        ms = _LATENCY.get(cmd, 1)
        if cmd == 0x02:
            return _frame(b"\xd5\x03" + self.version), ms
        if cmd == 0x14:
            if len(p) < 1 or not 1 <= p[0] <= 4:
                return _SYNTAX_ERROR, ms
            self.sam = True
            return _frame(b"\xd5\x15"), ms
        if cmd == 0x32:
            if len(p) >= 2 and p[0] == 0x01:
                self.field = bool(p[1] & 1)
                if not self.field:
                    self.target = None
            elif len(p) >= 4 and p[0] == 0x05:
                self.retries = p[3]
            elif len(p) < 2:
                return _SYNTAX_ERROR, ms
            return _frame(b"\xd5\x33"), ms
        if cmd == 0x4A:
            return self._list(p)
        if cmd == 0x40:
            return self._exchange(p)
        if cmd == 0x52:
            self.target = None
            return _frame(b"\xd5\x53\x00"), ms
        return _SYNTAX_ERROR, ms

    def _list(self, p):
        if len(p) < 2 or p[0] not in (1, 2):
            return _SYNTAX_ERROR, 1
        self.field = True
        c = self.card
        if c is None or p[1] != 0x00:
            # With MxRtyPassiveActivation at 0xFF the chip waits for a card forever: it answers
            # when one comes (type A only here), or the host aborts.
            if self.retries == 0xFF:
                return (None, None) if p[1] == 0x00 else (_frame(b"\xd5\x4b\x00"), None)
            return _frame(b"\xd5\x4b\x00"), _NO_CARD_MS
        uid = c.activate()
        self.target = c
        d = bytes((1, 1, c.atqa >> 8, c.atqa & 0xFF, c.sak, len(uid))) + uid + c.ats
        return _frame(b"\xd5\x4b" + d), _LATENCY[0x4A] + (4 if c.ats else 0)

    def _exchange(self, p):
        c = self.target
        if len(p) < 1:
            return _SYNTAX_ERROR, 1
        if c is None or p[0] != 1:
            return _frame(b"\xd5\x41\x27"), 1  # no such target: command not acceptable
        if c is not self.card:
            return _frame(b"\xd5\x41\x01"), 5  # the card left the field: RF timeout
        data = p[1:]
        ms = _LATENCY[0x40] + c.latency(data)
        if c.sak & 0x20:
            return _frame(b"\xd5\x41\x00" + c.apdu(data)), ms
        if len(data) == 2 and data[0] == 0x30:
            r = c.read(data[1])
            if r is not None:
                return _frame(b"\xd5\x41\x00" + r), ms
        return _frame(b"\xd5\x41\x01"), ms  # the card did not answer: RF timeout


# -- the host interface on I2C (SPI and HSU: boards/sim/nfcbus.py) ---------------------------
class I2CPort:
    """The chip at its I2C address: SimI2C hands each transaction over whole."""

    def __init__(self, chip):
        self.chip = chip

    def write(self, buf):
        if self.chip.silent():
            raise OSError(_ENODEV)  # no ACK to the address byte
        self.chip.host_frame(buf)

    def read(self, n):
        chip = self.chip
        if chip.silent():
            raise OSError(_ENODEV)
        if not chip.ready():
            return bytes(n)  # status byte 0x00: not ready
        if n == 1:
            return b"\x01"  # a status-only read leaves the frame where it is
        f = chip.take()
        out = b"\x01" + f
        return (out + bytes(n))[:n] if len(out) < n else out[:n]


class IrqPin:
    """P70_IRQ as an input pin: low while the chip has a frame for the host."""

    def __init__(self, chip):
        self.chip = chip

    def value(self, v=None):
        if v is None:
            return 0 if self.chip.ready() else 1


class ResetPin:
    """RSTPDN as an output pin: low resets the chip."""

    def __init__(self, chip):
        self.chip = chip
        self.v = 1
        self.pulses = 0

    def value(self, v=None):
        if v is None:
            return self.v
        v = 1 if v else 0
        if v == 0 and self.v == 1:
            self.pulses += 1
        self.v = v
        self.chip.reset_line(v)
