# The three PN532 host interfaces (UM0701-02 section 6.2.5), each behind the same small API so the
# command layer never knows which one is wired:
#   write(frame)          send one host frame
#   ready()               non-blocking: a frame (ACK or response) is waiting
#   await read_frame()    -> (memoryview, n): the waiting frame, in the transport's own buffer
#   wake()                bring the chip out of power-down / LowVbat before the first command
# The buses are injected (machine.I2C/SoftI2C, SPI + CS pin, UART), never created here.
#
# I2C and clock stretching: the PN532 holds SCL low while it is busy, for up to about a
# millisecond, and some masters give up sooner (ESP32 hardware I2C in several IDF versions).
# With the IRQ pin wired the chip is only addressed once it has said it is ready, so it never
# needs to stretch; without it, run the bus at 100 kHz, as SoftI2C(scl, sda, freq=100_000)
# (its default 50 ms stretch timeout is ample) if the hardware master times out.
from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import frame as F

# Big enough for the longest answer the reader asks for (a token APDU of 64 bytes plus SW, or a
# 16-byte page read, inside InDataExchange's frame); longer frames are refused, not truncated.
MAX_FRAME = const(96)
_I2C_GUESS = const(24)  # bytes read at once: ACK, status and target answers fit, long ones NACK
_REREAD_MS = const(20)
_HSU_BYTE_MS = const(30)  # longest gap inside one frame before the rest is given up on

_DW = const(0x01)  # SPI: data write
_SR = const(0x02)  # SPI: status read
_DR = const(0x03)  # SPI: data read


class I2CTransport:
    def __init__(self, i2c, addr, irq, sleep_ms, ticks_ms):
        self.i2c = i2c
        self.addr = addr
        self.irq = irq  # P70_IRQ, active low, or None to poll the status byte
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._buf = bytearray(MAX_FRAME + 1)  # + the status byte every I2C read starts with
        self._mv = memoryview(self._buf)
        self._st = bytearray(1)

    def wake(self):
        # The chip wakes on its address; the first transaction may be lost, which the caller's
        # retry of its first command absorbs.
        pass

    def write(self, data):
        self.i2c.writeto(self.addr, data)

    def ready(self):
        if self.irq is not None:
            return self.irq.value() == 0
        self.i2c.readfrom_into(self.addr, self._st)
        return bool(self._st[0] & 1)

    async def read_frame(self):
        mv = self._mv
        n = _I2C_GUESS + 1
        self.i2c.readfrom_into(self.addr, mv[:n])
        if not self._buf[0] & 1:
            raise F.FrameError("read before the chip was ready")
        total = F.header(mv[1:n], n - 1)[3]
        if total > n - 1:
            if total > MAX_FRAME:
                raise F.FrameError("frame too long")
            # A read takes the frame off the chip; NACK asks for the whole of it again.
            self.i2c.writeto(self.addr, F.NACK)
            deadline = ticks_add(self._ticks(), _REREAD_MS)
            while not self.ready():
                if ticks_diff(deadline, self._ticks()) <= 0:
                    raise F.Timeout("no resend after NACK")
                await self._sleep(1)
            n = total + 1
            self.i2c.readfrom_into(self.addr, mv[:n])
            if not self._buf[0] & 1:
                raise F.FrameError("read before the chip was ready")
        return mv[1:n], n - 1


class SPITransport:
    """SPI mode 0, CS driven here. The PN532 shifts LSB first: a bus that can (ESP32:
    firstbit=SPI.LSB) passes lsb_first=True; one that cannot (RP2040) leaves it False and every
    byte is bit-reversed in software on the way out and in."""

    def __init__(self, spi, cs, irq, sleep_ms, ticks_ms, lsb_first=False):
        self.spi = spi
        self.cs = cs
        self.irq = irq
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._rev = None if lsb_first else _reverse_table()
        self._buf = bytearray(MAX_FRAME + 1)
        self._mv = memoryview(self._buf)
        self._op = bytearray(1)
        cs.value(1)

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
        self.cs.value(0)
        try:
            self._cmd(_SR)
            self.spi.readinto(self._op, 0)
        finally:
            self.cs.value(1)
        self._fix(self._op)
        return bool(self._op[0] & 1)

    async def read_frame(self):
        mv = self._mv
        self.cs.value(0)
        try:
            self._cmd(_DR)
            head = mv[: F.HEADER]
            self.spi.readinto(head, 0)
            self._fix(head)
            total = F.header(head, F.HEADER)[3]
            if total > MAX_FRAME:
                raise F.FrameError("frame too long")
            if total > F.HEADER:
                rest = mv[F.HEADER : total]
                self.spi.readinto(rest, 0)
                self._fix(rest)
        finally:
            self.cs.value(1)
        n = total if total > F.HEADER else F.HEADER
        return mv[:n], n


class UARTTransport:
    """HSU: 115200 8N1 by default. The chip pushes its frames unasked, so ready() is just bytes
    in the receive FIFO."""

    def __init__(self, uart, sleep_ms, ticks_ms):
        self.uart = uart
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._buf = bytearray(MAX_FRAME)
        self._mv = memoryview(self._buf)

    def _drain(self):
        while self.uart.any():
            self.uart.read()

    def wake(self):
        # The HSU wake-up: 0x55 0x55 then a long enough preamble (UM0701-02 section 6.3.2.3).
        self._drain()
        self.uart.write(b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")

    def write(self, data):
        self.uart.write(data)

    def ready(self):
        return self.uart.any() > 0

    async def _fill(self, start, end):
        mv = self._mv
        got = start
        deadline = ticks_add(self._ticks(), _HSU_BYTE_MS)
        while got < end:
            k = self.uart.any()
            if k:
                k = self.uart.readinto(mv[got : got + min(k, end - got)]) or 0
                got += k
                deadline = ticks_add(self._ticks(), _HSU_BYTE_MS)
            elif ticks_diff(deadline, self._ticks()) <= 0:
                self._drain()
                raise F.Timeout("frame cut short")
            else:
                await self._sleep(1)

    async def read_frame(self):
        # An ACK is 6 bytes and arrives on its own, so wait for 6 before looking for a length.
        await self._fill(0, 6)
        got = 6
        total = 0
        while True:
            try:
                total = F.header(self._buf, got)[3]
                break
            except F.FrameError:
                if got >= F.HEADER:
                    self._drain()
                    raise
            await self._fill(got, got + 1)
            got += 1
        if total > MAX_FRAME:
            self._drain()
            raise F.FrameError("frame too long")
        if total > got:
            await self._fill(got, total)
            got = total
        return self._mv[:got], got


def _reverse_table():
    t = bytearray(256)
    for i in range(256):
        r = 0
        for b in range(8):
            if i & (1 << b):
                r |= 0x80 >> b
        t[i] = r
    return t
