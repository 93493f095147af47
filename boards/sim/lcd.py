# PCF8574 backpack + HD44780 controller, decoded from the bytes the backpack would put on its
# pins. Starts in 8-bit mode as after power-on, so a driver that skips or botches the
# initialization by instruction shows garbage here just as it would on the real module.
#
# Backpack wiring: P0=RS P1=RW P2=E P3=backlight P4..P7=D4..D7 (D0..D3 are not connected, so in
# 8-bit mode the low half of every instruction reads as 0).

from lockcase.compat import const

_RS = const(0x01)
_RW = const(0x02)
_E = const(0x04)
_BL = const(0x08)


class SimLcd:
    def __init__(self, cols=16, rows=2, on_change=None):
        self.cols = cols
        self.rows = rows
        self.on_change = on_change
        self._offsets = (0x00, 0x40, cols, 0x40 + cols)
        self._port = 0xFF  # PCF8574 outputs come up high
        self.ddram = bytearray(b" " * 0x80)
        self.four_bit = False
        self.two_line = False
        self.display_on = False
        self.cursor_on = False
        self.blink_on = False
        self.increment = True
        self.backlight = False
        self.ac = 0
        self._cgram = False
        self._high = None  # first nibble of a 4-bit transfer, waiting for the second
        self.errors = 0  # data changed on the same write as E fell (hold-time violation)
        # Latches that came too soon after an instruction. Time is counted in I2C byte times
        # (address byte included); 3 of them are 67 us at 400 kHz, more than the 53 us an
        # instruction takes at the controller's slowest clock. Clear/home (1.52 ms) are not
        # checked here: drivers wait for those with a sleep this cannot see.
        self.busy_errors = 0
        self._gap = 99
        self.commands = 0
        self._dirty = False  # an instruction ran since the last report: the text may have changed
        self._shown = self._visible()

    # I2C device interface
    def write(self, buf):
        self._gap += 1  # the address byte
        for b in buf:
            self._pin_write(b)
        self._report()

    def read(self, n):
        # Quasi-bidirectional port: reads back the pin levels.
        return bytes((self._port,)) * n

    def _pin_write(self, b):
        old = self._port
        self._port = b
        self._gap += 1
        bl = bool(b & _BL)
        if bl != self.backlight:
            self.backlight = bl
            if self.on_change:
                self.on_change("backlight", bl)
        if old & _E and not b & _E and not old & _RW:
            if (old ^ b) & 0xF3:
                self.errors += 1
            if self._gap < 3:
                self.busy_errors += 1
            self._latch(old >> 4, old & _RS)

    def _latch(self, nibble, rs):
        if not self.four_bit:
            self._execute(nibble << 4, rs)
        elif self._high is None:
            self._high = nibble
        else:
            value = (self._high << 4) | nibble
            self._high = None
            self._execute(value, rs)

    def _execute(self, v, rs):
        self.commands += 1
        self._gap = 0
        self._dirty = True
        if rs:
            self._data(v)
        elif v & 0x80:
            self.ac = v & 0x7F
            self._cgram = False
        elif v & 0x40:
            self._cgram = True  # custom glyph bitmaps: not emulated, but must not reach DDRAM
        elif v & 0x20:
            self.four_bit = not v & 0x10
            self.two_line = bool(v & 0x08)
        elif v & 0x10:
            if not v & 0x08:  # cursor move (display shift is not emulated)
                self.ac = self._step(self.ac, bool(v & 0x04))
        elif v & 0x08:
            self.display_on = bool(v & 0x04)
            self.cursor_on = bool(v & 0x02)
            self.blink_on = bool(v & 0x01)
        elif v & 0x04:
            self.increment = bool(v & 0x02)
        elif v & 0x02:
            self.ac = 0
            self._cgram = False
        elif v & 0x01:
            for i in range(len(self.ddram)):
                self.ddram[i] = 0x20
            self.ac = 0
            self.increment = True
            self._cgram = False

    def _step(self, ac, up):
        # DDRAM is 0x00-0x27 and 0x40-0x67 in 2-line mode, 0x00-0x4F in 1-line mode.
        if self.two_line:
            if up:
                ac += 1
                if ac == 0x28:
                    ac = 0x40
                elif ac >= 0x68:
                    ac = 0
            else:
                ac -= 1
                if ac < 0:
                    ac = 0x67
                elif ac == 0x3F:
                    ac = 0x27
        else:
            ac = (ac + (1 if up else -1)) % 0x50
        return ac

    def _data(self, v):
        if self._cgram:
            return
        self.ddram[self.ac & 0x7F] = v
        self.ac = self._step(self.ac, self.increment)

    def text(self):
        out = []
        for r in range(self.rows):
            start = self._offsets[r]
            out.append("".join(chr(c) for c in self.ddram[start : start + self.cols]))
        return out

    def _visible(self):
        if not self.display_on:
            return [" " * self.cols] * self.rows
        return self.text()

    def _report(self):
        # Only after an instruction: most bus writes are half a nibble transfer, and building the
        # text each time is garbage a chip's heap (which the sim's is measured as) never sees.
        if not self._dirty:
            return
        self._dirty = False
        now = self._visible()
        if now != self._shown:
            self._shown = now
            if self.on_change:
                self.on_change("display", list(now))
