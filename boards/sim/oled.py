# SSD1306 OLED controller as seen over I2C: control byte (Co, D/C#), the command set with its
# argument bytes, the three addressing modes and a 128x64 GDDRAM. Rendering options
# (remap, contrast, multiplex...) are recorded rather than applied: framebuffer() is the RAM.

# Commands followed by argument bytes, and how many.
_ARGS = {
    0x20: 1, 0x21: 2, 0x22: 2, 0x26: 6, 0x27: 6, 0x29: 5, 0x2A: 5, 0x81: 1, 0x8D: 1,
    0xA3: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1, 0xDB: 1,
}  # fmt: skip

_HORIZONTAL = 0
_VERTICAL = 1
_PAGE = 2

_glyphs = None  # 8 bytes of framebuf's 8x8 font -> character, built on first decode


def _glyph_table():
    global _glyphs
    if _glyphs is None:
        import framebuf

        buf = bytearray(8)
        fb = framebuf.FrameBuffer(buf, 8, 8, framebuf.MONO_VLSB)
        _glyphs = {}
        for c in range(32, 127):
            fb.fill(0)
            fb.text(chr(c), 0, 0, 1)
            _glyphs[bytes(buf)] = chr(c)
    return _glyphs


class SimSsd1306:
    def __init__(self, width=128, height=64, on_change=None):
        self.width = width
        self.height = height
        self.on_change = on_change
        self.ram = bytearray(128 * 8)
        self.on = False
        self.contrast = 0x7F
        self.inverted = False
        self.seg_remap = False  # column 127 drives SEG0
        self.com_reversed = False  # COM scan from COM[N-1]
        self.com_pins = 0x12
        self.mode = _PAGE  # reset default
        self.col_start, self.col_end = 0, 127
        self.page_start, self.page_end = 0, 7
        self.col = 0
        self.page = 0
        self.mux = 63
        self.charge_pump = False
        self.commands = 0
        self.data_bytes = 0
        self._cmd = None  # command waiting for arguments
        self._args = []
        self._dirty = False

    # I2C device interface
    def write(self, buf):
        i = 0
        n = len(buf)
        while i < n:
            ctl = buf[i]
            i += 1
            data = ctl & 0x40
            if ctl & 0x80:
                # Co=1: one byte, then another control byte.
                if i < n:
                    self._byte(data, buf[i])
                    i += 1
            else:
                for j in range(i, n):
                    self._byte(data, buf[j])
                break
        if self._dirty:
            self._dirty = False
            if self.on_change:
                self.on_change("display", self.text() if self.on else self._blank())

    def read(self, n):
        # Status byte: D6 set while the display is off.
        return bytes((0 if self.on else 0x40,)) * n

    def _byte(self, data, b):
        if data:
            self._data(b)
        elif self._cmd is not None:
            self._args.append(b)
            if len(self._args) == _ARGS[self._cmd]:
                cmd, self._cmd = self._cmd, None
                self._command(cmd, self._args)
        elif b in _ARGS:
            self._cmd = b
            self._args = []
        else:
            self._command(b, ())

    def _command(self, c, a):
        self.commands += 1
        if c == 0x20:
            self.mode = a[0] & 3
        elif c == 0x21:
            self.col_start, self.col_end = a[0] & 0x7F, a[1] & 0x7F
            self.col = self.col_start
        elif c == 0x22:
            self.page_start, self.page_end = a[0] & 7, a[1] & 7
            self.page = self.page_start
        elif c == 0x81:
            self.contrast = a[0]
        elif c == 0x8D:
            self.charge_pump = bool(a[0] & 0x04)
        elif c == 0xA8:
            self.mux = a[0] & 0x3F
        elif c in (0xAE, 0xAF):
            on = c == 0xAF
            if on != self.on:
                self.on = on
                self._dirty = True
        elif c in (0xA6, 0xA7):
            self.inverted = c == 0xA7
        elif c in (0xA0, 0xA1):
            self.seg_remap = c == 0xA1
        elif c in (0xC0, 0xC8):
            self.com_reversed = c == 0xC8
        elif c == 0xDA:
            self.com_pins = a[0]
        elif c < 0x10:  # page mode: lower column nibble
            self.col = (self.col & 0xF0) | c
        elif c < 0x20:  # page mode: upper column nibble
            self.col = (self.col & 0x0F) | ((c & 0x07) << 4)
        elif 0xB0 <= c <= 0xB7:  # page mode: page
            self.page = c & 7

    def _data(self, b):
        self.data_bytes += 1
        i = self.page * 128 + self.col
        if self.ram[i] != b:
            self.ram[i] = b
            self._dirty = True
        if self.mode == _HORIZONTAL:
            self.col += 1
            if self.col > self.col_end:
                self.col = self.col_start
                self.page = self.page + 1 if self.page < self.page_end else self.page_start
        elif self.mode == _VERTICAL:
            self.page += 1
            if self.page > self.page_end:
                self.page = self.page_start
                self.col = self.col + 1 if self.col < self.col_end else self.col_start
        else:
            self.col = (self.col + 1) & 0x7F

    def _blank(self):
        return [" " * (self.width // 8)] * (self.height // 8)

    def framebuffer(self):
        # The visible panel's pages, in MONO_VLSB order (width bytes per page).
        if self.width == 128:
            return bytes(self.ram[: self.height // 8 * 128])
        out = bytearray()
        for p in range(self.height // 8):
            out += self.ram[p * 128 : p * 128 + self.width]
        return bytes(out)

    def text(self):
        # Reads back text drawn with framebuf's 8x8 font on the 8-pixel grid; other pixels
        # in a cell show as "?", a blank cell as " ".
        glyphs = _glyph_table()
        rows = []
        for p in range(self.height // 8):
            line = []
            for c in range(self.width // 8):
                i = p * 128 + c * 8
                line.append(glyphs.get(bytes(self.ram[i : i + 8]), "?"))
            rows.append("".join(line))
        return rows
