# The hardware boards' own code (boards/mcu/board_mcu.py, boards/esp32s3/board.py,
# boards/picow/board.py) run under the Unix port against a recording stand-in for `machine`: the
# Unix port has no Pin, PWM, I2C, Timer or WDT, and without this these files were only parsed.
# What is checked is what the safety argument leans on: the lock pin driven low before anything
# else, the coil's PWM starting at 0 duty, the cut-off timer's hard-IRQ request and its one-time
# fallback, and fatal()'s pause with the watchdog fed before the reset.
import sys

import micropython

CFG = {"display": "lcd", "nfc": {"driver": "pn532", "bus": "i2c"}}


class Reset(Exception):
    pass


class FakeMachine:
    # One instance per board import: every hardware object it hands out is recorded in `log`.
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

    def __init__(self, hard_timers):
        self.log = []
        self.pins = {}
        self.pwms = []
        self.timers = {}
        self.wdts = []
        self.cause = self.PWRON_RESET
        self.mem32 = {0x4005801C: 0}
        machine = self

        class Pin:
            IN, OUT, OPEN_DRAIN, PULL_UP = "in", "out", "od", "up"

            def __init__(self, n, mode=None, pull=None, value=None):
                self.n, self.mode, self.pull = n, mode, pull
                self.v = 1 if pull == "up" else 0
                if value is not None:
                    self.v = value
                machine.pins[n] = self
                machine.log.append(("pin", n, mode, value))

            def value(self, v=None):
                if v is None:
                    return self.v
                self.v = v

        class PWM:
            def __init__(self, pin, freq=0, duty_u16=None):
                self.pin, self.freq, self.duty = pin, freq, duty_u16
                machine.pwms.append(self)
                machine.log.append(("pwm", pin.n, freq, duty_u16))

            def duty_u16(self, d=None):
                if d is None:
                    return self.duty
                self.duty = d

        class I2C:
            def __init__(self, bus, scl=None, sda=None, freq=0, timeout=0):
                self.bus, self.freq, self.timeout = bus, freq, timeout
                machine.log.append(("i2c", bus, scl.n, sda.n, freq))

        class Timer:
            ONE_SHOT, PERIODIC = 0, 1

            def __init__(self, n):
                self.n = n
                self.inits = []
                self.tries = 0
                self.cb = None
                machine.timers[n] = self

            def init(self, mode=1, period=-1, callback=None, hard=None):
                self.tries += 1
                if hard is not None and not hard_timers:
                    # what ports/esp32/machine_timer.c answers to hard=True
                    raise ValueError("hard Timers are not implemented")
                self.inits.append((mode, period, hard))
                self.cb = callback

            def deinit(self):
                self.cb = None

        class WDT:
            def __init__(self, timeout=0):
                self.timeout = timeout
                self.feeds = 0
                machine.wdts.append(self)

            def feed(self):
                self.feeds += 1

        self.Pin, self.PWM, self.I2C, self.Timer, self.WDT = Pin, PWM, I2C, Timer, WDT

    def reset(self):
        self.log.append(("reset",))
        raise Reset()

    def reset_cause(self):
        return self.cause


class FakeTime:
    def __init__(self, machine):
        self.machine = machine
        self.slept = 0

    def sleep_ms(self, ms):
        self.slept += ms
        self.machine.log.append(("sleep", ms))

    def ticks_ms(self):
        return 0

    def time(self):
        return 0


def load(name, hard_timers=True):
    """Import boards/<name>/board.py (and board_mcu beside it) afresh against a new FakeMachine."""
    m = FakeMachine(hard_timers)
    sys.modules["machine"] = m
    for mod in ("board", "board_mcu"):
        if mod in sys.modules:
            del sys.modules[mod]
    saved = sys.path[:]
    sys.path[:0] = ["boards/" + name, "boards/mcu"]
    try:
        import board
        import board_mcu
    finally:
        sys.path[:] = saved
    board_mcu.time = FakeTime(m)
    return m, board, board_mcu


def test_lock_safe_drives_the_lock_pin_low_as_it_becomes_an_output():
    for name, lock in (("esp32s3", 4), ("picow", 15)):
        m, board, _ = load(name)
        board.lock_safe()
        assert m.log == [("pin", lock, "out", 0)], (name, m.log)


def test_board_starts_with_the_coil_off_and_inputs_pulled_up():
    for name in ("esp32s3", "picow"):
        m, board, _ = load(name)
        b = board.create(CFG)
        lock = board.PINS["lock"]
        # the lock pin is created low before its PWM, and the PWM starts at duty 0
        assert m.log[0] == ("pin", lock, "out", 0), m.log[0]
        assert m.log[1][0:2] == ("pwm", lock) and m.log[1][3] == 0, m.log[1]
        assert b.lock_pwm.duty_u16() == 0
        assert m.pins[board.PINS["door"]].pull == "up" and m.pins[board.PINS["tamper"]].pull == "up"
        # a cut wire reads as open / tripped: the pull-up wins
        assert b.door_open() and b.tamper()
        m.pins[board.PINS["door"]].v = 0
        assert not b.door_open()
        # keypad rows open-drain and idle high, so two keys in a column cannot short two outputs
        for n in board.PINS["rows"]:
            assert m.pins[n].mode == "od" and m.pins[n].v == 1
        # the PN532 shares the display's I2C bus; its reset line is held high (running)
        assert b.nfc_bus is b.i2c and b.i2c is not None
        assert m.pins[board.PINS["nfc_reset"]].v == 1
        assert b.buzzer_pwm.duty_u16() == 0 and m.pins[board.PINS["led"]].v == 0


def test_no_i2c_bus_without_display_or_reader():
    m, board, _ = load("esp32s3")
    b = board.create({"display": "none"})
    assert b.i2c is None and b.nfc_bus is None and b.nfc_irq is None and b.nfc_reset is None
    assert not [e for e in m.log if e[0] == "i2c"]


def test_cutoff_timer_asks_for_a_hard_irq_where_the_port_has_one():
    m, board, bm = load("picow", hard_timers=True)
    t = board.create(CFG).timer()
    fired = []
    t.init(mode=t.ONE_SHOT, period=30, callback=fired.append)
    raw = m.timers[-1]
    assert raw.inits == [(0, 30, True)]
    raw.cb(raw)  # the port fires it
    assert fired == [t]
    t.deinit()
    assert raw.cb is None


def test_cutoff_timer_falls_back_once_to_a_scheduled_callback_on_esp32():
    m, board, bm = load("esp32s3", hard_timers=False)
    b = board.create(CFG)
    t = b.timer()
    fired = []
    t.init(mode=t.ONE_SHOT, period=30, callback=fired.append)
    t.init(mode=t.ONE_SHOT, period=40, callback=fired.append)
    raw = m.timers[0]
    assert raw.inits == [(0, 30, None), (0, 40, None)]
    assert raw.tries == 3  # hard=True refused once, then never asked again
    raw.cb(raw)
    assert fired == [t]
    # each caller its own hardware timer, and a clear error past the S3's four
    for _ in range(3):
        b.timer()
    try:
        b.timer()
    except RuntimeError as e:
        assert "hardware timers" in str(e)
    else:
        raise AssertionError("a fifth timer was handed out")


def test_a_callback_that_allocates_in_hard_irq_context_is_scheduled_instead():
    m, board, bm = load("picow", hard_timers=True)
    t = board.create(CFG).timer()
    calls = []

    def cb(timer):
        calls.append(timer)
        if len(calls) == 1:
            raise MemoryError  # what allocating inside a hard IRQ raises

    t.init(mode=t.ONE_SHOT, period=5, callback=cb)
    m.timers[-1].cb(m.timers[-1])  # raises nothing: the MemoryError is caught
    # the scheduler runs it again at a bytecode boundary (here, outside any IRQ, at once)
    for _ in range(100):
        if len(calls) == 2:
            break
        micropython.schedule  # a few bytecodes
    assert calls == [t, t], calls


def test_fatal_makes_the_lock_safe_pauses_with_the_watchdog_fed_then_resets():
    for name in ("esp32s3", "picow"):
        m, board, bm = load(name)
        b = board.create(CFG)
        wdt = b.wdt(5_000)
        m.log.clear()
        try:
            board.fatal(RuntimeError("boom"))
        except Reset:
            pass
        else:
            raise AssertionError("fatal() returned")
        assert m.log[0] == ("pin", board.PINS["lock"], "out", 0), m.log[:2]
        assert m.log[-1] == ("reset",)
        sleeps = [e[1] for e in m.log if e[0] == "sleep"]
        assert sum(sleeps) == 5_000 and max(sleeps) < wdt.timeout, (sleeps, wdt.timeout)
        assert wdt.feeds == len(sleeps)


def test_watchdog_timeouts_are_clamped_to_what_each_chip_takes():
    for name, lo, hi in (("esp32s3", 1_000, 60_000), ("picow", 1, 8_388)):
        m, board, _ = load(name)
        b = board.create(CFG)
        assert b.wdt(0).timeout == lo and b.wdt(10**9).timeout == hi
        assert b.wdt(2_000).timeout == 2_000


def test_reset_causes_are_named():
    m, board, _ = load("esp32s3")
    want = {m.PWRON_RESET: "power_on", m.WDT_RESET: "watchdog", m.SOFT_RESET: "soft",
            m.HARD_RESET: "hard", m.DEEPSLEEP_RESET: "deepsleep", 99: "unknown"}
    for cause, name in want.items():
        m.cause = cause
        assert board.reset_cause() == name, (cause, board.reset_cause())
