# PN532 command layer (UM0701-02 chapter 7). Every command follows the datasheet's dialog:
# command frame, ACK within a few ms, then the response once the chip is ready; a missing ACK or
# response is a Timeout, after which the command is aborted with an ACK from the host; a
# response with a bad checksum is asked for again once with a NACK. All waiting is awaited, so
# the keypad and lock keep running meanwhile.
#
# The host interface is injected: I2CTransport (i2c.py), SPITransport (spi.py) or UARTTransport
# (hsu.py), each with
#   write(frame)          send one host frame
#   ready()               non-blocking: a frame (ACK or response) is waiting
#   await read_frame(guess)  -> (memoryview, n): that frame, in the transport's own buffer
#                         (guess: the bytes to read first where the bus needs a length, I2C)
#   wake()                bring the chip out of power-down / LowVbat before the first command
#   irq                   P70_IRQ as an input Pin, or None
#   hold_us               bus time the transport has held the loop for, modelled from the bytes
#                         it moved (the reader budgets its share with it and zeroes it)
#
# With P70_IRQ wired the reader does not poll for cards: listen() leaves InListPassiveTarget
# running with MxRtyPassiveActivation 0xFF, so the chip itself keeps looking for a card, and the
# host only watches the IRQ line (a GPIO read, no bus traffic) until the chip pulls it low with the
# answer. This is the dialog of Adafruit's startPassiveTargetIDDetection/IRQ example.
from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import frame as F

_GET_FIRMWARE_VERSION = const(0x02)
_SAM_CONFIGURATION = const(0x14)
_RF_CONFIGURATION = const(0x32)
_IN_DATA_EXCHANGE = const(0x40)
_IN_LIST_PASSIVE_TARGET = const(0x4A)
_IN_RELEASE = const(0x52)

_PN532_IC = const(0x32)

_ACK_MS = const(30)
_POLL_MS = const(2)
_CMD_MS = const(100)
_LIST_MS = const(300)  # a card answering, and RATS/ATS for an ISO-DEP one
_EXCHANGE_MS = const(1000)  # a phone app may take a few hundred ms to answer an APDU
_RESET_MS = const(20)
_IRQ_MS = const(4)  # how often a listen looks at the IRQ line: a GPIO read, no bus traffic

# Mode normal (SAM unused), virtual-card timeout 1 s, and drive P70_IRQ.
_SAM_NORMAL = const(b"\x01\x14\x01")
# CfgItem 5, MaxRetries: MxRtyATR default, MxRtyPSL 1, MxRtyPassiveActivation 2. The default
# (0xFF) makes InListPassiveTarget wait forever for a card; 2 makes it answer "none" in ms.
_RETRIES = const(b"\x05\xff\x01\x02")
# The same with MxRtyPassiveActivation 0xFF: InListPassiveTarget answers only when a card came.
_RETRIES_FOREVER = const(b"\x05\xff\x01\xff")
_FIELD_OFF = const(b"\x01\x00")  # CfgItem 1, RF field: AutoRFCA off, RF off
_LIST_ONE_A = const(b"\x01\x00")  # MaxTg 1, BrTy 106 kbps type A
_RELEASE_ALL = const(b"\x00")


def _bus_error(exc):
    return F.NoChip("bus error %s" % (exc.args[0] if exc.args else exc))


class Target:
    """One ISO/IEC 14443A card from InListPassiveTarget."""

    def __init__(self, atqa, sak, uid, ats):
        self.atqa = atqa
        self.sak = sak
        self.uid = uid  # bytes, 4, 7 or 10 of them
        self.ats = ats  # bytes, empty unless the card speaks ISO 14443-4


def parse_target(p):
    """InListPassiveTarget's parameters (NbTg Tg SENS_RES SEL_RES NFCIDLength NFCID1 [ATS]) ->
    Target, or None when no card answered."""
    n = len(p)
    if n < 1:
        raise F.FrameError("empty target list")
    if p[0] == 0:
        return None
    if n < 6:
        raise F.FrameError("short target data")
    ulen = p[5]
    if ulen not in (4, 7, 10) or n < 6 + ulen:
        raise F.FrameError("bad UID length")
    atqa = (p[2] << 8) | p[3]
    sak = p[4]
    uid = bytes(p[6 : 6 + ulen])
    ats = b""
    rest = n - 6 - ulen
    if rest > 0:
        tl = p[6 + ulen]  # ATS starts with its own length byte
        if tl < 1 or tl > rest:
            raise F.FrameError("bad ATS length")
        ats = bytes(p[6 + ulen : 6 + ulen + tl])
    return Target(atqa, sak, uid, ats)


class PN532:
    name = "pn532"

    def __init__(self, transport, sleep_ms, ticks_ms, reset=None):
        self.t = transport
        self.reset_pin = reset  # RSTPDN, active low, or None
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._tx = bytearray(80)
        self._tmv = memoryview(self._tx)
        self._x = bytearray(72)  # InDataExchange parameters: Tg + the card command
        self.fw = None
        self.nacks = 0
        self._dirty = False
        self._forever = False  # the chip's MxRtyPassiveActivation is 0xFF (set by listen())
        # A plain attribute: MicroPython's getattr(obj, name, default) hands back the property
        # object itself when a property raises AttributeError.
        self.can_listen = getattr(transport, "irq", None) is not None

    def take_hold_us(self):
        """Bus time spent since the last call (modelled, see the transports), and start again."""
        t = self.t
        h = t.hold_us
        t.hold_us = 0
        return h

    # -- the dialog -----------------------------------------------------------------------------
    async def _wait(self, ms, step=_POLL_MS):
        deadline = ticks_add(self._ticks(), ms)
        while not self.t.ready():
            if ticks_diff(deadline, self._ticks()) <= 0:
                return False
            await self._sleep(step)
        return True

    def _send(self, data):
        try:
            self.t.write(data)
        except OSError as exc:  # no ACK to the address byte, a stuck bus, an unplugged cable
            raise _bus_error(exc)

    async def call(self, cmd, params=None, timeout_ms=_CMD_MS, idle=False):
        """Run one command; the response parameters as a memoryview into the transport's buffer,
        valid until the next call. idle: no answer within timeout_ms is not an error (a listen
        with no card): the command is aborted and an empty memoryview returned."""
        n = F.encode(self._tx, cmd, params)
        try:
            if self._dirty:
                await self._flush()
            self._dirty = True  # until this dialog ends as the datasheet says it should
            self._send(self._tmv[:n])
            if not await self._wait(_ACK_MS):
                raise F.Timeout("no ACK to command 0x%02x" % cmd)
            mv, k = await self.t.read_frame(6)  # an ACK: reading 24 bytes would cost 3x the bus
            if not F.is_ack(mv, k):
                raise F.FrameError("no ACK to command 0x%02x" % cmd)
            if not await self._wait(timeout_ms, _IRQ_MS if idle else _POLL_MS):
                self._abort()
                if idle:
                    # _dirty stays set: an answer that raced the abort is dropped by the next call.
                    return self._tmv[:0]
                raise F.Timeout("no answer to command 0x%02x" % cmd)
            mv, k = await self.t.read_frame()
            try:
                s, e = F.decode(mv, k, cmd)
            except F.FrameError:
                # A frame mangled on the wire: the datasheet's NACK asks for it once more.
                self.nacks += 1
                self._send(F.NACK)
                if not await self._wait(_ACK_MS):
                    raise F.Timeout("no resend after NACK")
                mv, k = await self.t.read_frame()
                s, e = F.decode(mv, k, cmd)
        except OSError as exc:
            raise _bus_error(exc)
        self._dirty = False
        return mv[s:e]

    async def _flush(self):
        # After a broken dialog a late frame may still arrive and pass for the next command's
        # ACK or answer: abort whatever runs and drop what is waiting.
        self._abort()
        for _ in range(3):
            if not self.t.ready():
                break
            try:
                await self.t.read_frame()
            except F.NfcError:
                pass
        self._dirty = False

    def _abort(self):
        # An ACK from the host aborts the command in progress (UM0701-02 section 6.2.1.3).
        try:
            self.t.write(F.ACK)
        except OSError:
            pass

    # -- commands -------------------------------------------------------------------------------
    async def begin(self):
        """Reset (if wired), wake, identify and configure the chip. Raises NoChip or WrongChip."""
        self.fw = None
        rst = self.reset_pin
        if rst is not None:
            rst.value(0)
            await self._sleep(_RESET_MS)
            rst.value(1)
            await self._sleep(_RESET_MS)
        try:
            self.t.wake()
        except OSError as exc:
            raise _bus_error(exc)
        try:
            p = await self.call(_GET_FIRMWARE_VERSION)
        except F.NfcError:
            # The first command after a wake-up may be lost while the chip starts: one retry.
            await self._sleep(_RESET_MS)
            try:
                p = await self.call(_GET_FIRMWARE_VERSION)
            except F.Timeout:
                raise F.NoChip("no answer from the PN532")
        if len(p) < 4:
            raise F.FrameError("short firmware version")
        if p[0] != _PN532_IC:
            raise F.WrongChip("IC 0x%02x answered, not a PN532" % p[0])
        self.fw = "%d.%d" % (p[1], p[2])
        await self.call(_SAM_CONFIGURATION, _SAM_NORMAL)
        await self.call(_RF_CONFIGURATION, _RETRIES)
        self._forever = False
        await self.field_off()
        return self.fw

    async def field_off(self):
        await self.call(_RF_CONFIGURATION, _FIELD_OFF)

    async def detect(self):
        """Switch the field on and look for one type A card: a Target, or None."""
        if self._forever:
            await self.call(_RF_CONFIGURATION, _RETRIES)
            self._forever = False
        p = await self.call(_IN_LIST_PASSIVE_TARGET, _LIST_ONE_A, _LIST_MS)
        return parse_target(p)

    async def listen(self, ms):
        """With IRQ wired: leave the chip looking for a card for up to ms and wait on the IRQ line
        meanwhile; a Target, or None when no card came (the command is then aborted). The field
        stays on while it listens."""
        if not self._forever:
            await self.call(_RF_CONFIGURATION, _RETRIES_FOREVER)
            self._forever = True
        p = await self.call(_IN_LIST_PASSIVE_TARGET, _LIST_ONE_A, ms, True)
        return parse_target(p) if len(p) else None  # an answer always has NbTg

    async def exchange(self, data, timeout_ms=_EXCHANGE_MS):
        """Send a card command (an APDU, or a Type 2 READ) to the listed card; its answer.
        The PN532 wraps ISO-DEP blocks itself. Raises ChipError with the RF status on failure."""
        n = len(data)
        x = self._x
        if n + 1 > len(x):
            raise ValueError("card command too long")
        x[0] = 1  # Tg
        x[1 : n + 1] = data
        p = await self.call(_IN_DATA_EXCHANGE, memoryview(x)[: n + 1], timeout_ms)
        if len(p) < 1:
            raise F.FrameError("no status byte")
        st = p[0] & 0x3F  # bit 6 MI, bit 7 NAD: not errors
        if st:
            raise F.ChipError(st, "card")
        return p[1:]

    async def release(self):
        await self.call(_IN_RELEASE, _RELEASE_ALL)
