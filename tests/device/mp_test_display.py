# Display, buzzer and LED drivers under the real MicroPython: the drivers talk over SimI2C to the
# emulators, which decode the controller protocol independently of the drivers.
import asyncio
from time import ticks_add, ticks_diff, ticks_ms

import framebuf
from mpassert import raises

from boards.sim.i2c import SimI2C
from boards.sim.lcd import SimLcd
from boards.sim.oled import SimSsd1306
from lockcase.display import DisplayMissing, TextDisplay, make_display
from lockcase.drivers.buzzer import TONES, Buzzer
from lockcase.drivers.hd44780 import HD44780
from lockcase.drivers.led import PATTERNS, StatusLed
from lockcase.drivers.ssd1306 import SSD1306


def _nosleep(_):
    pass


def _lcd(cols, rows, addr=0x27, on_change=None):
    bus = SimI2C()
    sim = bus.attach(addr, SimLcd(cols, rows, on_change))
    lcd = HD44780(bus, addr, cols, rows, sleep_us=_nosleep, sleep_ms=_nosleep)
    return bus, sim, lcd


def _raises(exc, fn, *args):
    return str(raises(exc, fn, *args))


# --- HD44780 / PCF8574 -----------------------------------------------------------------------


def test_lcd1602_init_and_text():
    bus, sim, lcd = _lcd(16, 2)
    assert sim.four_bit and sim.two_line and sim.display_on
    assert not sim.cursor_on and sim.increment and sim.backlight
    assert sim.text() == [" " * 16, " " * 16]
    lcd.putstr("Hello")
    lcd.move_to(3, 1)
    lcd.putstr("World")
    assert sim.text() == ["Hello           ", "   World        "], sim.text()
    lcd.move_to(15, 0)
    lcd.putstr("!")
    assert sim.text()[0] == "Hello          !"
    assert sim.errors == 0 and sim.busy_errors == 0


def test_lcd2004_rows_and_wrap():
    bus, sim, lcd = _lcd(20, 4)
    for r in range(4):
        lcd.move_to(r, r)
        lcd.putstr("row" + str(r))
    t = sim.text()
    assert t[0] == "row0" + " " * 16
    assert t[1] == " row1" + " " * 15
    assert t[2] == "  row2" + " " * 14  # DDRAM 0x14..: not row 1's continuation
    assert t[3] == "   row3" + " " * 13
    lcd.clear()
    lcd.putstr("A" * 20 + "BC\nD")  # wraps by rows, not by DDRAM order
    t = sim.text()
    assert t[0] == "A" * 20
    assert t[1] == "BC" + " " * 18
    assert t[2] == "D" + " " * 19
    assert t[3] == " " * 20
    assert sim.errors == 0 and sim.busy_errors == 0


def test_lcd_clear_backlight_and_events():
    events = []
    bus, sim, lcd = _lcd(16, 2, on_change=lambda n, v: events.append((n, v)))
    lcd.putstr("PIN: 1234")
    assert events[-1] == ("display", ["PIN: 1234       ", " " * 16])
    lcd.clear()
    assert sim.text() == [" " * 16] * 2
    assert events[-1] == ("display", [" " * 16] * 2)
    lcd.backlight(False)
    assert not sim.backlight and events[-1] == ("backlight", False)
    lcd.putstr("x")  # text still goes out with the backlight off
    assert sim.text()[0][0] == "x" and not sim.backlight
    lcd.backlight(True)
    assert sim.backlight


def test_lcd_reinit_from_4bit_mode():
    # A soft reset re-runs the init while the controller is still in 4-bit mode.
    bus, sim, lcd = _lcd(16, 2)
    lcd.putstr("old")
    lcd._nibble(0x04)  # a reset mid-byte leaves a stray half
    lcd2 = HD44780(bus, 0x27, 16, 2, sleep_us=_nosleep, sleep_ms=_nosleep)
    lcd2.putstr("new")
    assert sim.text()[0] == "new" + " " * 13


def test_lcd_init_timing():
    log = []
    bus = SimI2C()
    bus.attach(0x27, SimLcd())
    bus.log = log
    HD44780(
        bus,
        sleep_us=lambda us: log.append(("us", us)),
        sleep_ms=lambda ms: log.append(("us", ms * 1000)),
    )

    def waited_after(i):
        total = 0
        for e in log[i + 1 :]:
            if e[0] != "us":
                break
            total += e[1]
        return total

    # Single-nibble writes are the 8-bit phase: E high+low with D7..D4 = 3, 3, 3, 2.
    nib = [i for i, e in enumerate(log) if e[0] == 0x27 and len(e[1]) == 2]
    assert [log[i][1][1] >> 4 for i in nib] == [3, 3, 3, 2]
    assert waited_after(0) >= 40000  # the presence probe precedes the power-on wait
    assert waited_after(nib[0]) >= 4100
    assert waited_after(nib[1]) >= 100
    assert waited_after(nib[2]) >= 100
    clear = [
        i
        for i, e in enumerate(log)
        if e[0] == 0x27 and len(e[1]) == 5 and e[1][1] >> 4 == 0 and e[1][3] >> 4 == 1
    ]
    assert clear and waited_after(clear[0]) >= 1520


def test_lcd_missing_device():
    bus = SimI2C()
    msg = _raises(OSError, HD44780, bus, 0x27)
    assert "0x27" in msg, msg
    msg = _raises(DisplayMissing, make_display, "lcd1602", bus)
    assert "lcd1602" in msg and "0x27" in msg, msg
    msg = _raises(DisplayMissing, make_display, "ssd1306", bus)
    assert "ssd1306" in msg and "0x3c" in msg, msg
    msg = _raises(DisplayMissing, make_display, "lcd2004", None)
    assert "lcd2004" in msg


# --- SSD1306 ---------------------------------------------------------------------------------


def _rendered(width, height, rows):
    buf = bytearray(width * height // 8)
    fb = framebuf.FrameBuffer(buf, width, height, framebuf.MONO_VLSB)
    for r, s in enumerate(rows):
        fb.text(s, 0, r * 8, 1)
    return bytes(buf)


def test_oled_128x64_matches_local_framebuf():
    bus = SimI2C()
    sim = bus.attach(0x3C, SimSsd1306(128, 64))
    oled = SSD1306(bus, 128, 64)
    assert sim.on and sim.charge_pump and sim.mux == 63 and sim.mode == 0
    # Modules mount the panel rotated: both remaps put (0, 0) at the top left.
    assert sim.seg_remap and sim.com_reversed and sim.com_pins == 0x12
    assert sim.framebuffer() == bytes(1024)
    oled.text("LOCKED", 0, 0, 1)
    oled.text("Enter PIN", 0, 8, 1)
    oled.text("~!@#", 0, 56, 1)
    oled.show()
    assert sim.framebuffer() == _rendered(
        128, 64, ["LOCKED", "Enter PIN", "", "", "", "", "", "~!@#"]
    )
    assert sim.text()[0] == "LOCKED" + " " * 10 and sim.text()[7][:4] == "~!@#"


def test_oled_128x32_and_power():
    bus = SimI2C()
    sim = bus.attach(0x3C, SimSsd1306(128, 32))
    oled = SSD1306(bus, 128, 32)
    assert sim.mux == 31 and sim.com_pins == 0x02
    oled.text("0123456789ABCDEF", 0, 24, 1)
    oled.show()
    assert sim.framebuffer() == _rendered(128, 32, ["", "", "", "0123456789ABCDEF"])
    oled.poweroff()
    assert not sim.on
    oled.poweron()
    assert sim.on
    oled.contrast(0x10)
    assert sim.contrast == 0x10


def test_oled_partial_show_sends_only_pages():
    bus = SimI2C()
    sim = bus.attach(0x3C, SimSsd1306())
    oled = SSD1306(bus)
    oled.text("top", 0, 0, 1)
    oled.text("two", 0, 16, 1)
    before = sim.data_bytes
    oled.show(2, 2)
    assert sim.data_bytes - before == 128
    assert sim.text()[2][:3] == "two" and sim.text()[0][:3] == "   "  # page 0 not sent yet
    oled.show()
    assert sim.text()[0][:3] == "top"


def test_oled_missing_device():
    msg = _raises(OSError, SSD1306, SimI2C(), 128, 64, 0x3D)
    assert "0x3d" in msg, msg


# --- TextDisplay -----------------------------------------------------------------------------


def test_display_lcd1602_only_changed_lines():
    bus = SimI2C()
    sim = bus.attach(0x27, SimLcd(16, 2))
    d = make_display("lcd1602", bus)
    assert (d.width, d.height) == (16, 2)
    d.show("Hello", "World")
    assert sim.text() == ["Hello           ", "World           "]
    assert d.lines() == sim.text()
    n = bus.writes
    n_bytes = bus.bytes_written
    d.show("Hello", "World")
    assert bus.writes == n  # nothing changed: nothing sent
    d.show("Hello", "PIN: **")
    assert bus.writes - n == 2  # one cursor move, one row of characters
    assert bus.bytes_written - n_bytes == 5 * (1 + 16)
    assert sim.text() == ["Hello           ", "PIN: **         "]
    d.show("0123456789ABCDEFGHIJ")  # too long, and row 2 omitted = blank
    assert sim.text() == ["0123456789ABCDEF", " " * 16]
    assert d.lines() == sim.text()
    d.show("caf\xe9")  # outside the common glyph set
    assert sim.text()[0] == "caf?" + " " * 12 == d.lines()[0]


def test_display_lcd2004():
    bus = SimI2C()
    sim = bus.attach(0x3F, SimLcd(20, 4))  # the PCF8574AT address, found without config
    d = make_display("lcd2004", bus)
    assert (d.width, d.height) == (20, 4)
    d.show("a", "b", "c", "d" * 25)
    assert sim.text() == ["a" + " " * 19, "b" + " " * 19, "c" + " " * 19, "d" * 20]


def test_display_ssd1306_rows():
    bus = SimI2C()
    sim = bus.attach(0x3C, SimSsd1306())
    d = make_display("ssd1306", bus)
    assert (d.width, d.height) == (16, 8)
    d.show("LOCKED", "", "Enter PIN")
    assert sim.text()[:3] == ["LOCKED" + " " * 10, " " * 16, "Enter PIN" + " " * 7]
    assert sim.framebuffer() == _rendered(128, 64, ["LOCKED", "", "Enter PIN"])
    before = sim.data_bytes
    d.show("LOCKED", "", "PIN: ***")
    assert sim.data_bytes - before == 128  # one page
    assert sim.text()[2] == "PIN: ***" + " " * 8
    before = sim.data_bytes
    d.show("LOCKED", "", "PIN: ***")
    assert sim.data_bytes == before


def test_display_none_and_bad_kind():
    d = make_display("none", None)
    assert isinstance(d, TextDisplay) and d.kind == "none"
    d.show("x" * 40, 12)
    assert d.lines() == ["x" * 16, "12" + " " * 14]
    _raises(ValueError, make_display, "vfd", None)


def test_display_retries_after_bus_error():
    bus = SimI2C()
    sim = bus.attach(0x27, SimLcd())
    d = make_display("lcd1602", bus)
    d.show("one", "two")
    bus.detach(0x27)
    _raises(OSError, d.show, "three", "two")
    assert d.lines()[0].strip() == "three"
    bus.attach(0x27, sim)
    d.show("three", "two")  # same text asked again: the failed row is still resent
    assert sim.text()[0] == "three" + " " * 11


def test_deferred_display_sends_on_flush_only():
    # The running app's mode: show() records, flush() (at the end of the app's step) sends.
    bus = SimI2C()
    sim = bus.attach(0x27, SimLcd(16, 2))
    d = make_display("lcd1602", bus)
    d.show("Ready")
    d.defer = True
    n = bus.writes
    d.show("Please wait...")
    d.show("Open the door", "now")
    assert bus.writes == n and sim.text()[0].strip() == "Ready"  # nothing on the bus yet
    assert d.lines() == ["Open the door   ", "now             "]  # what the app asked for
    d.flush()
    assert sim.text() == d.lines()
    assert bus.writes - n == 4  # two rows, once each: the text shown in between never sent
    n = bus.writes
    d.flush()
    assert bus.writes == n  # nothing changed since


def test_deferred_display_resends_after_bus_error():
    bus = SimI2C()
    sim = bus.attach(0x27, SimLcd(16, 2))
    d = make_display("lcd1602", bus)
    d.defer = True
    d.show("one")
    bus.detach(0x27)
    d.show("two")  # deferred: no error here, whatever the bus
    _raises(OSError, d.flush)
    bus.attach(0x27, sim)
    d.flush()
    assert sim.text()[0].strip() == "two"


def test_lcd_events_through_display():
    events = []
    bus = SimI2C()
    bus.attach(0x27, SimLcd(16, 2, lambda n, v: events.append((n, v))))
    d = make_display("lcd1602", bus)
    d.show("Ready")
    assert events[-1] == ("display", ["Ready" + " " * 11, " " * 16])
    del events[:]
    d.show("Ready", "PIN: *")
    assert events == [("display", ["Ready" + " " * 11, "PIN: *" + " " * 10])]  # once a row


# --- Buzzer ----------------------------------------------------------------------------------


class FakePwm:
    def __init__(self):
        self.events = []
        self._freq = 0
        self._duty = 0

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self.events.append(("freq", f, ticks_ms()))

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self._duty = d
        self.events.append(("duty", d, ticks_ms()))

    def sounded(self):
        # Frequencies actually heard, in order.
        out = []
        f = 0
        for kind, v, _ in self.events:
            if kind == "freq":
                f = v
            elif v and (not out or out[-1] != f):
                out.append(f)
        return out


def test_buzzer_tones_distinct_and_played():
    assert sorted(TONES) == ["alarm", "failure", "key", "reminder", "success"]
    seen = []
    for name in ("key", "success", "failure", "alarm", "reminder"):
        pwm = FakePwm()
        b = Buzzer(pwm)
        t0 = ticks_ms()
        asyncio.run(b.play(name))
        took = ticks_diff(ticks_ms(), t0)
        expect = [f for f, _ in TONES[name] if f]
        assert pwm.sounded() == expect, (name, pwm.sounded())
        assert pwm.duty_u16() == 0  # silent afterwards
        assert took >= sum(ms for _, ms in TONES[name]) - 5
        seen.append(tuple(TONES[name]))
    assert len(set(seen)) == 5
    s = [f for f, _ in TONES["success"] if f]
    assert s == sorted(s) and len(s) == 2  # rising
    f = TONES["failure"]
    assert max(x for x, _ in f) < min(s) and sum(ms for _, ms in f) >= 400
    a = [x for x, _ in TONES["alarm"]]
    assert len(set(a)) >= 2


def test_buzzer_does_not_block_and_is_overridden():
    pwm = FakePwm()
    b = Buzzer(pwm)
    ticks = []

    async def other():
        for _ in range(10):
            ticks.append(ticks_ms())
            await asyncio.sleep_ms(10)

    async def main():
        t0 = ticks_ms()
        task = b.start("failure")  # 600 ms long
        await asyncio.gather(other())
        assert task is not None
        await b.play("key")  # overrides the failure tone mid-way
        await asyncio.sleep_ms(700)  # the failure coroutine wakes up and must leave the PWM alone
        return t0

    t0 = asyncio.run(main())
    assert len(ticks) == 10 and ticks_diff(ticks[-1], t0) < 200  # ran during the tone
    assert pwm.sounded() == [330, 2400]
    assert pwm.duty_u16() == 0
    last = pwm.events[-1]
    assert last[0] == "duty" and last[1] == 0
    assert ticks_diff(last[2], t0) < 300  # key ended it, the failure tail did not touch it


def test_buzzer_repeat_and_stop():
    pwm = FakePwm()
    b = Buzzer(pwm)

    async def main():
        b.start("alarm", 0)  # until stopped
        await asyncio.sleep_ms(1000)
        b.stop()
        await asyncio.sleep_ms(300)

    asyncio.run(main())
    heard = pwm.sounded()
    assert len(heard) >= 4 and heard[:4] == [2800, 1900, 2800, 1900], heard
    assert pwm.duty_u16() == 0


def test_buzzer_without_pwm():
    b = Buzzer(None)
    t0 = ticks_ms()
    asyncio.run(b.play("alarm"))
    assert ticks_diff(ticks_ms(), t0) < 50
    b.stop()
    _raises(ValueError, b.start, "nope")


# --- Status LED ------------------------------------------------------------------------------


class FakePin:
    def __init__(self):
        self.v = None
        self.writes = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        self.writes += 1


def _trace(name, start=0, ms=6000, dt=10):
    pin = FakePin()
    led = StatusLed(pin)
    led.mode(name)
    out = bytearray(ms // dt)
    t = start
    for i in range(len(out)):
        led.step(t)
        out[i] = pin.v
        t = ticks_add(t, dt)
    return out, pin


def test_led_patterns_differ():
    traces = {}
    for name in PATTERNS:
        tr, pin = _trace(name)
        traces[name] = bytes(tr)
        assert pin.writes <= 1 + len(tr) // 2  # writes only on a level change
    assert len(set(traces.values())) == len(PATTERNS)
    assert set(traces["off"]) == {0}
    assert set(traces["ok"]) == {1}
    edges = {}
    for n, tr in traces.items():
        edges[n] = sum(1 for i in range(1, len(tr)) if tr[i] != tr[i - 1])
    # Urgency shows as flash rate.
    assert edges["alarm"] > edges["busy"] > edges["error"] > edges["idle"] > 0
    assert edges["alarm"] >= 100 and edges["off"] == edges["ok"] == 0
    assert 0 < sum(traces["idle"]) < len(traces["idle"]) // 10  # a brief heartbeat


def test_led_mode_change_and_wrap():
    tr_a, _ = _trace("error")
    near_wrap = ticks_add(0, -3000)  # crosses the ticks wrap-around half-way
    tr_b, _ = _trace("error", start=near_wrap)
    assert tr_a == tr_b
    pin = FakePin()
    led = StatusLed(pin)
    led.mode("busy")
    led.step(1000)
    assert pin.v == 1
    led.step(1130)
    assert pin.v == 0
    led.mode("busy")  # same mode: rhythm kept
    led.step(1250)
    assert pin.v == 1
    led.mode("ok")
    led.step(1260)
    assert pin.v == 1 and led.current() == "ok"
    led.mode("off")
    led.step(1270)
    assert pin.v == 0
    _raises(ValueError, led.mode, "disco")
    StatusLed(None).step(5)  # no LED fitted
