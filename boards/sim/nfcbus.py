# The sim's NFC chips on SPI and on the PN532's HSU (UART): machine.SPI, a chip-select pin and
# machine.UART as the firmware's drivers use them, wired to boards/sim/pn532.py's chip (or the
# MFRC522's register port for chip select). Apart from pn532.py so that a case with its reader
# on I2C, the reference boards' wiring, never loads them: on the 32-bit heap harness every name a
# module holds is interned for good (docs/memory.md).


def attach(board, hw, ncfg):
    """The reader of config.json's "nfc" on SPI or UART (Board._nfc keeps I2C to itself)."""
    from boards.sim import pn532

    if ncfg.get("driver") == "mfrc522":
        from boards.sim.mfrc522 import SimMFRC522, SimMfrcSPI

        chip = board.nfc_chip = SimMFRC522(hw.ticks_ms)
        board.nfc_reset = pn532.ResetPin(chip)
        board.nfc_bus = SimMfrcSPI(chip)
        board.nfc_cs = SimCS(board.nfc_bus)
        board.nfc_bus_hz = 1_000_000
        return
    chip = board.nfc_chip = pn532.SimPN532(hw.ticks_ms)
    board.nfc_irq = pn532.IrqPin(chip)
    board.nfc_reset = pn532.ResetPin(chip)
    board.nfc_bus_hz = 1_000_000
    if ncfg.get("bus") == "spi":
        board.nfc_bus = SimSPI(chip)  # MSB first, as machine.SPI defaults to
        board.nfc_cs = SimCS(board.nfc_bus)
    else:
        board.nfc_bus = SimUART(chip)


def _rev(b):
    r = 0
    for i in range(8):
        if b & (1 << i):
            r |= 0x80 >> i
    return r


class SimSPI:
    """machine.SPI subset wired to the PN532 (SPI mode 0). The chip shifts LSB first; a host set
    to firstbit=MSB (the default, and all an RP2040 can do) sees every byte bit-reversed."""

    MSB = 0
    LSB = 1

    def __init__(self, chip, firstbit=MSB):
        self.chip = chip
        self.firstbit = firstbit
        self._sel = False
        self._op = None
        self._rx = bytearray()
        self._tx = b""

    def init(self, baudrate=1000000, polarity=0, phase=0, firstbit=MSB, **kw):
        self.firstbit = firstbit

    def _wire(self, b):
        return b if self.firstbit == self.LSB else _rev(b)

    def select(self, on):
        if on and not self._sel:
            self._op = None
            self._rx = bytearray()
            self._tx = b""
        elif not on and self._sel:
            if self._op == 0x01 and self._rx:
                self.chip.host_frame(bytes(self._rx))
        self._sel = on

    def _byte(self, out_b):
        # One byte each way: host -> chip (out_b, host order), chip -> host (return, host order).
        v = self._wire(out_b)
        chip = self.chip
        if chip.silent():
            return 0xFF  # MISO floats high with nobody driving it
        if self._op is None:
            self._op = v
            if v == 0x03:
                self._tx = chip.take() or b""
            return 0
        if self._op == 0x01:
            self._rx.append(v)
            return 0
        if self._op == 0x02:
            return self._wire(1 if chip.ready() else 0)
        if self._op == 0x03:
            if self._tx:
                r, self._tx = self._tx[0], self._tx[1:]
                return self._wire(r)
            return 0
        return 0

    def write(self, buf):
        if not self._sel:
            return
        for b in buf:
            self._byte(b)

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = self._byte(write) if self._sel else 0xFF

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(wbuf)):
            rbuf[i] = self._byte(wbuf[i]) if self._sel else 0xFF


class SimCS:
    """The PN532's chip select (active low) as a machine.Pin output."""

    def __init__(self, spi):
        self.spi = spi
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        self.spi.select(self.v == 0)

    def __call__(self, v=None):
        return self.value(v)


class SimUART:
    """machine.UART subset wired to the PN532's HSU. After power-up the chip sleeps (LowVbat)
    and ignores frames until the host sends the 0x55 wake-up."""

    def __init__(self, chip):
        self.chip = chip
        self._in = bytearray()  # host -> chip, not yet a whole frame
        self._rx = bytearray()  # chip -> host
        self.baudrate = 115200

    def init(self, baudrate=115200, **kw):
        self.baudrate = baudrate

    def write(self, buf):
        chip = self.chip
        if chip.silent():
            return len(buf)
        data = bytes(buf)
        if chip.asleep:
            i = data.find(b"\x55")
            if i < 0:
                return len(buf)
            chip.asleep = False
            data = data[i:].lstrip(b"\x55")
        self._in += data
        # A frame ends at the postamble after LEN + DCS; ACK/NACK are 6 bytes.
        while True:
            b = bytes(self._in)
            s = b.find(b"\x00\xff")
            if s < 0 or len(b) < s + 4:
                if s < 0:
                    self._in = bytearray(b[-1:]) if b.endswith(b"\x00") else bytearray()
                return len(buf)
            a, c = b[s + 2], b[s + 3]
            if (a, c) in ((0x00, 0xFF), (0xFF, 0x00)):
                end = s + 5
            else:
                end = s + 4 + a + 2
            if len(b) < end:
                return len(buf)
            chip.host_frame(b[max(0, s - 1) : end])
            self._in = bytearray(b[end:])

    def any(self):
        f = self.chip.take()
        if f:
            self._rx += f
        return len(self._rx)

    def read(self, n=None):
        self.any()
        if not self._rx:
            return None
        n = len(self._rx) if n is None else n
        out = bytes(self._rx[:n])
        self._rx = self._rx[n:]
        return out

    def readinto(self, buf, nbytes=None):
        self.any()
        n = len(buf) if nbytes is None else nbytes
        n = min(n, len(self._rx))
        if not n:
            return None
        buf[:n] = self._rx[:n]
        self._rx = self._rx[n:]
        return n
