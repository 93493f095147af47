# MFRC522 over SPI (NXP MFRC522 data sheet, rev. 3.9), with the same chip interface as pn532.py
# (begin, detect, exchange, release, field_off), so tags.py and the reader service work with
# either. Where the PN532 runs ISO/IEC 14443-3 and -4 in its own firmware, the MFRC522 is a
# transceiver only: anticollision, SELECT, RATS and the ISO-DEP block protocol (I-blocks,
# chaining, waiting-time extensions) are done here.
from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import frame as F
from lockcase.nfc.pn532 import Target

_COMMAND = const(0x01)
_COM_IRQ = const(0x04)
_ERROR = const(0x06)
_FIFO_DATA = const(0x09)
_FIFO_LEVEL = const(0x0A)
_CONTROL = const(0x0C)
_BIT_FRAMING = const(0x0D)
_MODE = const(0x11)
_TX_CONTROL = const(0x14)
_TX_ASK = const(0x15)
_T_MODE = const(0x2A)
_T_PRESCALER = const(0x2B)
_T_RELOAD_H = const(0x2C)
_T_RELOAD_L = const(0x2D)
_VERSION = const(0x37)

_IDLE = const(0x00)
_TRANSCEIVE = const(0x0C)
_SOFT_RESET = const(0x0F)

_RX_IRQ = const(0x20)
_TIMER_IRQ = const(0x01)

# VersionReg: 0x91/0x92 NXP v1/v2, 0x88/0x89/0xB2 the common FM17522 clones.
_VERSIONS = (0x88, 0x89, 0x91, 0x92, 0xB2)
_TICK_US = const(25)  # timer tick with TPrescaler 0xA9: 13.56 MHz / 339, up to 1.6 s
_FWT_MS = const(25)  # ISO 14443-3 answers come within a few ms
_ISO_FWT_MS = const(200)  # a phone app behind ISO-DEP, before any waiting-time extension
_GUARD_MS = const(5)  # unmodulated field before REQA, for the card to power up
_FSDI = const(5)  # RATS: we take frames of 64 bytes (the FIFO's size)


def crc_a(buf, n):
    """ISO/IEC 14443-3 CRC_A over buf[:n] (preset 0x6363), as an int sent low byte first."""
    crc = 0x6363
    for i in range(n):
        b = buf[i] ^ (crc & 0xFF)
        b = (b ^ (b << 4)) & 0xFF
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)
    return crc


class MFRC522:
    name = "mfrc522"

    can_listen = False  # its IRQ pin is not used: the reader polls it (adaptively, see reader.py)

    def __init__(self, spi, cs, sleep_ms, ticks_ms, reset=None, hz=1_000_000):
        self.spi = spi
        self.cs = cs
        self.reset_pin = reset  # NRSTPD, active low, or None
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._b2 = bytearray(2)
        self._tx = bytearray(72)
        self._ftx = bytearray(65)
        self._frx = bytearray(65)
        self._out = bytearray(96)  # an APDU answer, reassembled from chained blocks
        self._version = 0
        self._field = False
        self._iso = False
        self._bn = 0
        self._fwt = 0
        self.fw = None
        self._byte_us = 8_000_000 // hz
        self.hold_us = 0  # bus time held, modelled as in the PN532 transports
        cs.value(1)

    def take_hold_us(self):
        h = self.hold_us
        self.hold_us = 0
        return h

    # -- registers ------------------------------------------------------------------------------
    def _w(self, reg, v):
        b = self._b2
        b[0] = (reg << 1) & 0x7E
        b[1] = v
        self.hold_us += F.OP_US + 2 * self._byte_us
        self.cs.value(0)
        try:
            self.spi.write(b)
        finally:
            self.cs.value(1)

    def _r(self, reg):
        b = self._b2
        b[0] = 0x80 | ((reg << 1) & 0x7E)
        b[1] = 0
        self.hold_us += F.OP_US + 2 * self._byte_us
        self.cs.value(0)
        try:
            self.spi.write_readinto(b, b)
        finally:
            self.cs.value(1)
        return b[1]

    def _fifo_write(self, mv):
        b = self._b2
        b[0] = _FIFO_DATA << 1
        self.hold_us += F.OP_US + (len(mv) + 1) * self._byte_us
        self.cs.value(0)
        try:
            self.spi.write(memoryview(b)[:1])
            self.spi.write(mv)
        finally:
            self.cs.value(1)

    def _fifo_read(self, n):
        # Send the read address n times and 0 to end: each byte out clocks the previous one in.
        t = self._ftx
        a = 0x80 | (_FIFO_DATA << 1)
        for i in range(n):
            t[i] = a
        t[n] = 0
        self.hold_us += F.OP_US + (n + 1) * self._byte_us
        self.cs.value(0)
        try:
            self.spi.write_readinto(memoryview(t)[: n + 1], memoryview(self._frx)[: n + 1])
        finally:
            self.cs.value(1)
        return memoryview(self._frx)[1 : n + 1]

    def _timer(self, ms):
        if ms == self._fwt:
            return
        self._fwt = ms
        reload = ms * 1000 // _TICK_US
        if reload > 0xFFFF:
            reload = 0xFFFF
        self._w(_T_RELOAD_H, reload >> 8)
        self._w(_T_RELOAD_L, reload & 0xFF)

    # -- the chip -------------------------------------------------------------------------------
    async def begin(self):
        self.fw = None
        rst = self.reset_pin
        if rst is not None:
            rst.value(0)
            await self._sleep(10)
            rst.value(1)
            await self._sleep(50)  # oscillator start-up
        self._w(_COMMAND, _SOFT_RESET)
        deadline = ticks_add(self._ticks(), 100)
        while self._r(_COMMAND) & 0x10:  # PowerDown stays set until the reset is done
            if ticks_diff(deadline, self._ticks()) <= 0:
                raise F.NoChip("no answer from the MFRC522")
            await self._sleep(2)
        v = self._r(_VERSION)
        if v in (0x00, 0xFF):  # MISO held or floating: nobody there
            raise F.NoChip("no answer from the MFRC522")
        if v not in _VERSIONS:
            raise F.WrongChip("version 0x%02x answered, not an MFRC522" % v)
        self._version = v
        self.fw = "0x%02x" % v
        self._w(_T_MODE, 0x80)  # TAuto: the timer starts at the end of each transmission
        self._w(_T_PRESCALER, 0xA9)
        self._fwt = 0
        self._timer(_FWT_MS)
        self._w(_TX_ASK, 0x40)  # 100 % ASK, as type A needs
        self._w(_MODE, 0x3D)  # CRC preset 0x6363
        await self.field_off()
        return self.fw

    def _check(self):
        # An SPI read never fails by itself: a reader that went away reads as 0x00 or 0xFF.
        if self._r(_VERSION) != self._version:
            raise F.NoChip("the MFRC522 stopped answering")

    async def field_off(self):
        self._w(_TX_CONTROL, self._r(_TX_CONTROL) & 0xFC)
        self._field = False
        self._iso = False

    async def _field_on(self):
        if not self._field:
            self._w(_TX_CONTROL, self._r(_TX_CONTROL) | 0x03)
            self._field = True
            await self._sleep(_GUARD_MS)

    async def _tcv(self, n, bits=0, fwt_ms=_FWT_MS):
        """Transceive self._tx[:n] (the last byte bits long if bits); the answer's length in
        bits, its bytes in the FIFO read buffer. No answer is ChipError 0x01 (RF timeout)."""
        self._timer(fwt_ms)
        self._w(_COMMAND, _IDLE)
        self._w(_COM_IRQ, 0x7F)
        self._w(_FIFO_LEVEL, 0x80)
        self._fifo_write(memoryview(self._tx)[:n])
        self._w(_BIT_FRAMING, bits)
        self._w(_COMMAND, _TRANSCEIVE)
        self._w(_BIT_FRAMING, 0x80 | bits)  # StartSend
        deadline = ticks_add(self._ticks(), fwt_ms + 20)
        while True:
            irq = self._r(_COM_IRQ)
            if irq & 0x80:  # Set1 reads 0 on a real chip
                raise F.NoChip("the MFRC522 stopped answering")
            if irq & _RX_IRQ:
                break
            if irq & _TIMER_IRQ:
                raise F.ChipError(0x01, "card")
            if ticks_diff(deadline, self._ticks()) <= 0:
                raise F.Timeout("MFRC522 transceive never ended")
            await self._sleep(1)
        self._w(_BIT_FRAMING, 0)
        err = self._r(_ERROR)
        if err & 0x08:
            raise F.ChipError(0x06, "card")  # bit collision: two cards
        if err & 0x10:
            raise F.ChipError(0x09, "card")  # FIFO overflow
        if err & 0x01:
            raise F.ChipError(0x0B, "card")  # protocol
        if err & 0x06:
            raise F.ChipError(0x03, "card")  # parity or CRC
        k = self._r(_FIFO_LEVEL) & 0x7F
        last = self._r(_CONTROL) & 0x07
        self._fifo_read(k)
        return k * 8 if not last else (k - 1) * 8 + last

    def _with_crc(self, n):
        c = crc_a(self._tx, n)
        self._tx[n] = c & 0xFF
        self._tx[n + 1] = c >> 8
        return n + 2

    def _crc_ok(self, bits):
        if bits % 8 or bits < 24:
            return 0
        k = bits // 8
        r = memoryview(self._frx)[1:]
        c = crc_a(r, k - 2)
        if r[k - 2] != c & 0xFF or r[k - 1] != c >> 8:
            raise F.ChipError(0x02, "card")
        return k - 2

    # -- ISO/IEC 14443-3 ------------------------------------------------------------------------
    async def detect(self):
        self._check()
        await self._field_on()
        self._iso = False
        self._tx[0] = 0x26  # REQA, a short frame
        try:
            bits = await self._tcv(1, 7)
        except F.ChipError as exc:
            if exc.code == 0x01:
                return None  # no card in the field
            raise
        if bits != 16:
            raise F.ChipError(0x0B, "card")
        r = self._frx
        atqa = (r[2] << 8) | r[1]
        uid = bytearray(10)
        n = 0
        sak = 0
        for sel in (0x93, 0x95, 0x97):
            self._tx[0] = sel
            self._tx[1] = 0x20  # anticollision, NVB: no UID bits known
            if await self._tcv(2) != 40:
                raise F.ChipError(0x0B, "card")
            cl = bytes(memoryview(r)[1:6])
            if cl[0] ^ cl[1] ^ cl[2] ^ cl[3] != cl[4]:
                raise F.ChipError(0x23, "card")  # BCC wrong
            self._tx[1] = 0x70  # SELECT: all 40 bits
            self._tx[2:7] = cl
            k = self._crc_ok(await self._tcv(self._with_crc(7)))
            if k != 1:
                raise F.ChipError(0x0B, "card")
            sak = r[1]
            if sak & 0x04:  # cascade bit: the UID goes on at the next level, after CT 0x88
                if cl[0] != 0x88 or n == 6:
                    raise F.ChipError(0x0B, "card")
                uid[n : n + 3] = cl[1:4]
                n += 3
                continue
            uid[n : n + 4] = cl[0:4]
            n += 4
            break
        ats = b""
        if sak & 0x20:
            self._tx[0] = 0xE0  # RATS, CID 0
            self._tx[1] = _FSDI << 4
            k = self._crc_ok(await self._tcv(self._with_crc(2)))
            if k < 1 or r[1] != k:
                raise F.ChipError(0x0B, "card")
            ats = bytes(memoryview(r)[1 : 1 + k])
            self._iso = True
            self._bn = 0
        return Target(atqa, sak, bytes(uid[:n]), ats)

    async def exchange(self, data, timeout_ms=_ISO_FWT_MS):
        if self._iso:
            return await self._apdu(data, timeout_ms)
        n = len(data)
        self._tx[:n] = data
        bits = await self._tcv(self._with_crc(n))
        if bits == 4:  # a 4-bit NAK
            raise F.ChipError(0x13, "card")
        k = self._crc_ok(bits)
        return memoryview(self._frx)[1 : 1 + k]

    async def release(self):
        self._iso = False

    # -- ISO/IEC 14443-4 (ISO-DEP) --------------------------------------------------------------
    async def _apdu(self, apdu, timeout_ms):
        n = len(apdu)
        if n + 3 > 64:
            raise ValueError("APDU too long for one block")
        tx = self._tx
        r = self._frx
        tx[0] = 0x02 | self._bn
        tx[1 : n + 1] = apdu
        k = self._crc_ok(await self._tcv(self._with_crc(n + 1), 0, timeout_ms))
        out = self._out
        got = 0
        while True:
            if k < 1:
                raise F.ChipError(0x0B, "card")
            pcb = r[1]
            if pcb & 0xF7 == 0xF2 and k >= 2:  # S(WTX): the card asks for more time
                wtxm = r[2] & 0x3F
                tx[0] = 0xF2
                tx[1] = wtxm
                k = self._crc_ok(await self._tcv(self._with_crc(2), 0, timeout_ms * (wtxm or 1)))
                continue
            if pcb & 0xE2 != 0x02 or pcb & 0x01 != self._bn:
                raise F.ChipError(0x0B, "card")
            self._bn ^= 1
            m = k - 1
            if got + m > len(out):
                raise F.ChipError(0x0E, "card")  # more than any answer we ask for
            out[got : got + m] = memoryview(r)[2 : 2 + m]
            got += m
            if not pcb & 0x10:  # no chaining: the answer is complete
                return memoryview(out)[:got]
            tx[0] = 0xA2 | self._bn  # R(ACK): send the next part
            k = self._crc_ok(await self._tcv(self._with_crc(1), 0, timeout_ms))
