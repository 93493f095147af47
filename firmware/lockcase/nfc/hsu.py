# PN532 over HSU, its UART (UM0701-02 section 6.2.5.3): 115200 8N1 by default. Same API as
# i2c.py.
from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import frame as F

_BYTE_MS = const(30)  # longest gap inside one frame before the rest is given up on


class UARTTransport:
    """HSU: 115200 8N1 by default. The chip pushes its frames unasked, so ready() is just bytes
    in the receive FIFO."""

    def __init__(self, uart, sleep_ms, ticks_ms):
        self.uart = uart
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._buf = bytearray(F.MAX_FRAME)
        self._mv = memoryview(self._buf)
        # The UART's FIFO and driver move the bytes; the loop only pays for each call.
        self.hold_us = 0

    def _drain(self):
        while self.uart.any():
            self.uart.read()

    def wake(self):
        # The HSU wake-up: 0x55 0x55 then a long enough preamble (UM0701-02 section 6.3.2.3).
        self._drain()
        self.uart.write(b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")

    def write(self, data):
        self.hold_us += F.OP_US
        self.uart.write(data)

    def ready(self):
        self.hold_us += F.OP_US
        return self.uart.any() > 0

    async def _fill(self, start, end):
        mv = self._mv
        got = start
        deadline = ticks_add(self._ticks(), _BYTE_MS)
        while got < end:
            k = self.uart.any()
            self.hold_us += F.OP_US
            if k:
                k = self.uart.readinto(mv[got : got + min(k, end - got)]) or 0
                got += k
                deadline = ticks_add(self._ticks(), _BYTE_MS)
            elif ticks_diff(deadline, self._ticks()) <= 0:
                self._drain()
                raise F.Timeout("frame cut short")
            else:
                await self._sleep(1)

    async def read_frame(self, guess=0):
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
        if total > F.MAX_FRAME:
            self._drain()
            raise F.FrameError("frame too long")
        if total > got:
            await self._fill(got, total)
            got = total
        return self._mv[:got], got
