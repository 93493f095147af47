# PN532 over I2C (UM0701-02 section 6.2.5.1), one of the three transports with the same API
# (see pn532.py): write(frame), ready(), await read_frame() -> (memoryview, n), wake().
#
# Clock stretching: the PN532 holds SCL low while it is busy, for up to about a millisecond, and
# some masters give up sooner (ESP32 hardware I2C in several IDF versions). With the IRQ pin
# wired the chip is only addressed once it has said it is ready, so it never needs to stretch;
# without it, run the bus at 100 kHz with a long enough timeout (the boards pass 50 ms), or use
# SoftI2C(scl, sda, freq=100_000), whose stretch timeout is 50 ms by default.
from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.nfc import frame as F

_GUESS = const(24)  # bytes read at once: status and target answers fit, long ones NACK
_REREAD_MS = const(20)


class I2CTransport:
    def __init__(self, i2c, addr, irq, sleep_ms, ticks_ms, hz=100_000):
        self.i2c = i2c
        self.addr = addr
        self.irq = irq  # P70_IRQ, active low, or None to poll the status byte
        self._sleep = sleep_ms
        self._ticks = ticks_ms
        self._buf = bytearray(F.MAX_FRAME + 1)  # + the status byte every I2C read starts with
        self._mv = memoryview(self._buf)
        self._st = bytearray(1)
        self._byte_us = 9_000_000 // hz  # 8 data bits and the ACK bit, at the bus's clock
        self.hold_us = 0

    def _held(self, n):
        # n bytes after the address byte: an I2C transaction blocks the loop for all of them.
        self.hold_us += F.OP_US + (n + 1) * self._byte_us

    def wake(self):
        # The chip wakes on its address; the first transaction may be lost, which the caller's
        # retry of its first command absorbs.
        pass

    def write(self, data):
        self._held(len(data))
        self.i2c.writeto(self.addr, data)

    def ready(self):
        if self.irq is not None:
            return self.irq.value() == 0
        self._held(1)
        self.i2c.readfrom_into(self.addr, self._st)
        return bool(self._st[0] & 1)

    async def read_frame(self, guess=_GUESS):
        mv = self._mv
        n = guess + 1
        self._held(n)
        self.i2c.readfrom_into(self.addr, mv[:n])
        if not self._buf[0] & 1:
            raise F.FrameError("read before the chip was ready")
        total = F.header(mv[1:n], n - 1)[3]
        if total > n - 1:
            if total > F.MAX_FRAME:
                raise F.FrameError("frame too long")
            # A read takes the frame off the chip; NACK asks for the whole of it again.
            self._held(len(F.NACK))
            self.i2c.writeto(self.addr, F.NACK)
            deadline = ticks_add(self._ticks(), _REREAD_MS)
            while not self.ready():
                if ticks_diff(deadline, self._ticks()) <= 0:
                    raise F.Timeout("no resend after NACK")
                await self._sleep(1)
            n = total + 1
            self._held(n)
            self.i2c.readfrom_into(self.addr, mv[:n])
            if not self._buf[0] & 1:
                raise F.FrameError("read before the chip was ready")
        return mv[1:n], n - 1
