# SSD1306 monochrome OLED on I2C. The FrameBuffer's MONO_VLSB layout (one byte = 8 vertical
# pixels, rows of bytes = pages) is exactly the controller's GDDRAM layout in horizontal
# addressing mode, so the buffer goes out as is.

import framebuf

from lockcase.compat import const

_CTRL_CMD = const(0x00)  # control byte, Co=0 D/C#=0: the rest of the transfer is commands
_CTRL_DATA = const(0x40)  # Co=0 D/C#=1: the rest is GDDRAM data

_CONTRAST = const(0x81)
_DISPLAY_OFF = const(0xAE)
_DISPLAY_ON = const(0xAF)
_NORMAL = const(0xA6)
_COL_ADDR = const(0x21)
_PAGE_ADDR = const(0x22)


class SSD1306(framebuf.FrameBuffer):
    def __init__(self, i2c, width=128, height=64, addr=0x3C, external_vcc=False):
        self.i2c = i2c
        self.addr = addr
        self.width = width
        self.height = height
        self.pages = height // 8
        self.external_vcc = external_vcc
        self.buffer = bytearray(self.pages * width)
        super().__init__(self.buffer, width, height, framebuf.MONO_VLSB)
        self._ctl = bytes((_CTRL_DATA,))
        self._writevto = getattr(i2c, "writevto", None)
        try:
            self.init_display()
        except OSError as e:
            code = e.args[0] if e.args else 0
            raise OSError(code, "ssd1306: no answer at I2C address 0x%02x" % addr)

    def init_display(self):
        ext = self.external_vcc
        self._commands(
            (
                _DISPLAY_OFF,
                0xD5, 0x80,  # clock divide 1, oscillator at its reset value
                0xA8, self.height - 1,  # multiplex ratio
                0xD3, 0x00,  # no vertical offset
                0x40,  # start line 0
                0x8D, 0x10 if ext else 0x14,  # charge pump, must be on before display-on
                0x20, 0x00,  # horizontal addressing: the whole buffer streams in one transfer
                0xA1,  # column 127 -> SEG0 and
                0xC8,  # COM scan reversed: the usual module wiring, so (0, 0) is top left
                0xDA, 0x02 if self.height == 32 else 0x12,  # COM pins: sequential for 32 rows
                _CONTRAST, 0x9F if ext else 0xCF,
                0xD9, 0x22 if ext else 0xF1,  # pre-charge periods
                0xDB, 0x40,  # VCOMH deselect level
                0xA4,  # display follows RAM
                _NORMAL,
                0x2E,  # no scrolling
            )
        )  # fmt: skip
        self.fill(0)
        self.show()
        self.poweron()

    def _commands(self, cmds):
        self.i2c.writeto(self.addr, bytes((_CTRL_CMD,)) + bytes(cmds))

    def poweroff(self):
        self._commands((_DISPLAY_OFF,))

    def poweron(self):
        self._commands((_DISPLAY_ON,))

    def contrast(self, v):
        self._commands((_CONTRAST, max(0, min(255, v))))

    def show(self, first_page=0, last_page=None):
        # A page range lets a text UI resend only the 8-pixel rows it changed.
        if last_page is None:
            last_page = self.pages - 1
        w = self.width
        self._commands((_COL_ADDR, 0, w - 1, _PAGE_ADDR, first_page, last_page))
        data = memoryview(self.buffer)[first_page * w : (last_page + 1) * w]
        if self._writevto is not None:
            self._writevto(self.addr, (self._ctl, data))
        else:
            self.i2c.writeto(self.addr, self._ctl + bytes(data))
