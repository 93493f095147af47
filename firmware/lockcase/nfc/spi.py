# PN532 over SPI (UM0701-02 section 6.2.5.2), mode 0, CS driven here: every exchange starts
# with DW (data write), SR (status read) or DR (data read). Same API as i2c.py.
from lockcase.compat import const
from lockcase.nfc import frame as F

_DW = const(0x01)
_SR = const(0x02)
_DR = const(0x03)


class SPITransport:
    """SPI mode 0, CS driven here. The PN532 shifts LSB first: a bus that can (ESP32:
    firstbit=SPI.LSB) passes lsb_first=True; one that cannot (RP2040) leaves it False and every
    byte is bit-reversed in software on the way out and in."""

    def __init__(self, spi, cs, irq, lsb_first=False, hz=1_000_000):
        self.spi = spi
        self.cs = cs
        self.irq = irq
        self._rev = None if lsb_first else _reverse_table()
        self._buf = bytearray(F.MAX_FRAME + 1)
        self._mv = memoryview(self._buf)
        self._op = bytearray(1)
        # 8 clocks a byte, and the bit reversal in Python where the bus cannot shift LSB first.
        self._byte_us = 8_000_000 // hz + (0 if lsb_first else 5)
        self.hold_us = 0
        cs.value(1)

    def _held(self, n):
        self.hold_us += F.OP_US + n * self._byte_us

    def _fix(self, mv):
        rev = self._rev
        if rev is not None:
            for i in range(len(mv)):
                mv[i] = rev[mv[i]]

    def wake(self):
        # CS low for 2 ms wakes the chip from power-down (UM0701-02 section 3.1.2).
        import time

        self.cs.value(0)
        time.sleep_ms(2)
        self.cs.value(1)

    def write(self, data):
        n = len(data)
        if n + 1 > len(self._buf):
            raise ValueError("frame too long")
        mv = self._mv
        self._held(n + 1)
        self._buf[0] = _DW
        mv[1 : n + 1] = data
        self._fix(mv[: n + 1])
        self.cs.value(0)
        try:
            self.spi.write(mv[: n + 1])
        finally:
            self.cs.value(1)

    def _cmd(self, op):
        self._op[0] = op
        self._fix(self._op)
        self.spi.write(self._op)

    def ready(self):
        if self.irq is not None:
            return self.irq.value() == 0
        self._held(2)
        self.cs.value(0)
        try:
            self._cmd(_SR)
            self.spi.readinto(self._op, 0)
        finally:
            self.cs.value(1)
        self._fix(self._op)
        return bool(self._op[0] & 1)

    async def read_frame(self, guess=0):
        mv = self._mv
        self.cs.value(0)
        try:
            self._cmd(_DR)
            head = mv[: F.HEADER]
            self.spi.readinto(head, 0)
            self._fix(head)
            total = F.header(head, F.HEADER)[3]
            if total > F.MAX_FRAME:
                raise F.FrameError("frame too long")
            if total > F.HEADER:
                rest = mv[F.HEADER : total]
                self.spi.readinto(rest, 0)
                self._fix(rest)
        finally:
            self.cs.value(1)
        n = total if total > F.HEADER else F.HEADER
        self._held(n + 1)
        return mv[:n], n


def _reverse_table():
    t = bytearray(256)
    for i in range(256):
        r = 0
        for b in range(8):
            if i & (1 << b):
                r |= 0x80 >> b
        t[i] = r
    return t
