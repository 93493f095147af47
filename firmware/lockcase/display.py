# The app's text screen: a few fixed-width rows, whatever the hardware. show() keeps what the
# app asked for and what the hardware holds apart, and sends only rows that differ: on an I2C
# LCD a full redraw is ~70 bus transactions, too slow to do on every keypress.

from lockcase.compat import const

_KINDS = const(("lcd1602", "lcd2004", "ssd1306", "none"))

# Addresses tried in order when none is given: PCF8574T / PCF8574AT backpacks, SSD1306 SA0=0/1.
_LCD_ADDRS = const((0x27, 0x3F))
_OLED_ADDRS = const((0x3C, 0x3D))


class DisplayMissing(Exception):
    pass


def _clean(s, width):
    # Only printable ASCII: both the LCD ROM and framebuf's font agree on those glyphs, so
    # lines() is exactly what the screen shows.
    s = str(s)
    out = []
    for ch in s[:width]:
        out.append(ch if " " <= ch <= "~" else "?")
    n = len(out)
    if n < width:
        out.append(" " * (width - n))
    return "".join(out)


class TextDisplay:
    """Remembers its lines only: the "none" display, and the base of the real ones."""

    kind = "none"

    def __init__(self, width=16, height=2):
        self.width = width
        self.height = height
        blank = " " * width
        self._want = [blank] * height
        self._hw = [blank] * height  # "" where the hardware state is unknown
        # Deferred (the app's running loop): show() only records the lines and flush(), at the
        # end of the app's step, sends them. A bus write is slow (an I2C LCD's row is ~1 ms on a
        # chip), and done in show() it stood between a card tap and its request to the cloud.
        self.defer = False

    def show(self, *lines):
        w = self.width
        self._want = [_clean(lines[i] if i < len(lines) else "", w) for i in range(self.height)]
        if not self.defer:
            self.flush()

    def flush(self):
        """Sends the rows that differ from what the hardware holds. Raises what the bus raises
        (the rows it did not finish are sent again by the next flush)."""
        changed = [i for i in range(self.height) if self._hw[i] != self._want[i]]
        if not changed:
            return
        for i in changed:
            self._hw[i] = ""  # a bus error half-way leaves the row unknown: redraw next time
        self._write(changed)
        for i in changed:
            self._hw[i] = self._want[i]

    def lines(self):
        return list(self._want)

    def reinit(self):
        """Sets the controller up again and forgets what it holds (the next flush sends every
        row): after a bus error it may have lost power, and a module that comes back is in its
        power-on state (an HD44780 in 8-bit mode and off). Raises what the bus raises."""
        self._hw = [""] * self.height

    def _write(self, rows):
        pass


class LcdDisplay(TextDisplay):
    def __init__(self, lcd, kind):
        self.kind = kind
        self.lcd = lcd
        super().__init__(lcd.cols, lcd.rows)

    def reinit(self):
        self.lcd._init()  # initialization by instruction: from whatever mode it is in
        TextDisplay.reinit(self)

    def _write(self, rows):
        lcd = self.lcd
        for r in rows:
            lcd.move_to(0, r)
            lcd.putstr(self._want[r])


class OledDisplay(TextDisplay):
    kind = "ssd1306"

    def __init__(self, oled):
        self.oled = oled
        super().__init__(oled.width // 8, oled.height // 8)

    def reinit(self):
        self.oled.init_display()
        TextDisplay.reinit(self)

    def _write(self, rows):
        o = self.oled
        for r in rows:
            o.fill_rect(0, r * 8, o.width, 8, 0)
            o.text(self._want[r], 0, r * 8, 1)
        # One text row is one controller page: send the span of changed pages.
        o.show(rows[0], rows[-1])


def _open(kind, i2c, addrs):
    if i2c is None:
        raise DisplayMissing("display %s: no I2C bus on this board" % kind)
    err = None
    for a in addrs:
        try:
            if kind == "ssd1306":
                from lockcase.drivers.ssd1306 import SSD1306

                return OledDisplay(SSD1306(i2c, 128, 64, a))
            from lockcase.drivers.hd44780 import HD44780

            cols, rows = (20, 4) if kind == "lcd2004" else (16, 2)
            return LcdDisplay(HD44780(i2c, a, cols, rows), kind)
        except OSError as e:
            err = e
    where = "/".join("0x%02x" % a for a in addrs)
    raise DisplayMissing("display %s missing at I2C %s (%s)" % (kind, where, err))


def make_display(kind, i2c, addr=None):
    if kind == "none":
        return TextDisplay()
    if kind == "ssd1306":
        return _open(kind, i2c, (addr,) if addr is not None else _OLED_ADDRS)
    if kind in ("lcd1602", "lcd2004"):
        return _open(kind, i2c, (addr,) if addr is not None else _LCD_ADDRS)
    raise ValueError("display kind must be one of " + ", ".join(_KINDS))
