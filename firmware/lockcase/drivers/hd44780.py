# HD44780 character LCD behind a PCF8574 I2C backpack, in 4-bit mode, write-only (R/W held low:
# we never poll the busy flag, the waits below cover the datasheet's execution times instead).
#
# Backpack wiring (the common one): P0=RS P1=RW P2=E P3=backlight P4..P7=D4..D7.
# Every PCF8574 byte written appears on its pins at once, so one nibble is two bytes: E high with
# the data, then E low with the same data (the LCD latches on the falling edge).

from lockcase.compat import const

_RS = const(0x01)
_E = const(0x04)
_BL = const(0x08)

_CLEAR = const(0x01)
_ENTRY_INC = const(0x06)  # cursor moves right, display does not shift
_DISPLAY_OFF = const(0x08)
_DISPLAY_ON = const(0x0C)  # cursor and blink off
_FUNC_4BIT_2LINE = const(0x28)  # 4-line modules are 2-line controllers too
_SET_DDRAM = const(0x80)


def _default_sleeps():
    import time

    try:
        return time.sleep_us, time.sleep_ms
    except AttributeError:  # CPython
        return (lambda us: time.sleep(us / 1e6)), (lambda ms: time.sleep(ms / 1e3))


class HD44780:
    def __init__(self, i2c, addr=0x27, cols=16, rows=2, sleep_us=None, sleep_ms=None):
        if sleep_us is None or sleep_ms is None:
            dus, dms = _default_sleeps()
            sleep_us = sleep_us or dus
            sleep_ms = sleep_ms or dms
        self._i2c = i2c
        self.addr = addr
        self.cols = cols
        self.rows = rows
        self._sleep_us = sleep_us
        self._sleep_ms = sleep_ms
        self._bl = _BL
        # Row starts in DDRAM: rows 2 and 3 continue rows 0 and 1 (0x14/0x54 on a 20-column part).
        self._offsets = (0x00, 0x40, cols, 0x40 + cols)
        self._cmd = bytearray(5)
        self._line = bytearray(5 * cols)
        self.col = 0
        self.row = 0
        self._init()

    def _init(self):
        try:
            self._i2c.writeto(self.addr, bytes((self._bl,)))
        except OSError as e:
            code = e.args[0] if e.args else 0
            raise OSError(code, "hd44780: no answer at I2C address 0x%02x" % self.addr)
        # Initialization by instruction: works whatever mode (8-bit or half-way through a 4-bit
        # byte after a soft reset) the controller was left in.
        self._sleep_ms(50)  # > 40 ms after Vcc reaches 2.7 V
        self._nibble(0x03)
        self._sleep_ms(5)  # > 4.1 ms
        self._nibble(0x03)
        self._sleep_us(150)  # > 100 us
        self._nibble(0x03)
        self._sleep_us(150)
        self._nibble(0x02)  # from here on, bytes go as two nibbles
        self._sleep_us(150)
        self._command(_FUNC_4BIT_2LINE)
        self._command(_DISPLAY_OFF)
        self.clear()
        self._command(_ENTRY_INC)
        self._command(_DISPLAY_ON)

    def _nibble(self, n):
        b = (n << 4) | self._bl
        self._i2c.writeto(self.addr, bytes((b | _E, b)))

    def _frame(self, buf, i, value, rs):
        # 5 port bytes a byte: E-high/E-low per nibble, then one idle byte so a following byte
        # in the same transfer latches >= 3 I2C byte times (67 us at 400 kHz) after this one:
        # the controller needs 37 us, 53 us at its slowest clock. No busy-flag polling.
        hi = (value & 0xF0) | self._bl | rs
        lo = ((value << 4) & 0xF0) | self._bl | rs
        buf[i] = hi | _E
        buf[i + 1] = hi
        buf[i + 2] = lo | _E
        buf[i + 3] = lo
        buf[i + 4] = lo

    def _command(self, cmd):
        self._frame(self._cmd, 0, cmd, 0)
        self._i2c.writeto(self.addr, self._cmd)

    def clear(self):
        self._command(_CLEAR)
        self._sleep_ms(2)  # clear takes 1.52 ms
        self.col = 0
        self.row = 0

    def move_to(self, col, row):
        self.col = col
        self.row = row
        self._command(_SET_DDRAM | (self._offsets[row] + col))

    def putstr(self, s):
        # One transfer per run of characters on a row. The cursor is tracked here so text wraps
        # row by row; DDRAM order alone would jump from row 0 to row 2 on a 4-line module.
        buf = self._line
        n = 0
        for ch in s:
            if ch == "\n" or self.col >= self.cols:
                if n:
                    self._i2c.writeto(self.addr, memoryview(buf)[:n])
                    n = 0
                self.move_to(0, (self.row + 1) % self.rows)
                if ch == "\n":
                    continue
            c = ord(ch)
            self._frame(buf, n, c if c < 0x100 else 0x3F, _RS)
            n += 5
            self.col += 1
        if n:
            self._i2c.writeto(self.addr, memoryview(buf)[:n])

    def backlight(self, on):
        self._bl = _BL if on else 0
        self._i2c.writeto(self.addr, bytes((self._bl,)))

    def display(self, on):
        self._command(_DISPLAY_ON if on else _DISPLAY_OFF)
