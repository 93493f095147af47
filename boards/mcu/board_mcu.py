# What the hardware boards (esp32s3, picow) build alike from their pin maps: the solenoid gate and
# its PWM, door and tamper inputs, the keypad matrix, the I2C bus the display and the PN532 share,
# the reader's IRQ and reset lines, the buzzer and the LED; and the coil's cut-off timer. Each
# board's board.py keeps what is its own (pins, reset causes, watchdog limits, timers, Wi-Fi) and
# passes its pin map in. `casectl build` deploys this file as board_mcu.py beside board.py; the sim
# board builds emulated parts of its own instead.
import time

from machine import I2C, PWM, Pin, Timer
from micropython import const, schedule

_LOCK_PWM_HZ = const(20_000)  # above hearing, so the hold duty does not whine
_BUZZER_HZ = const(2_700)  # typical piezo resonance
_I2C_TIMEOUT_US = const(50_000)  # also the longest a device may stretch SCL
_FATAL_PAUSE_MS = const(5_000)  # slows a crash loop down so it cannot wear out the flash
_FEED_MS = const(250)  # below the smallest watchdog timeout config.py allows


def pause_and_reset(lock_safe, wdt):
    """A board's fatal(): main.py has made the lock safe already (doing it again costs nothing);
    wait a moment with the watchdog fed, so a crash loop cannot hammer the flash, then reset."""
    import machine

    lock_safe()
    for _ in range(_FATAL_PAUSE_MS // _FEED_MS):
        if wdt is not None:
            wdt.feed()
        time.sleep_ms(_FEED_MS)
    machine.reset()


class McuBoard:
    """The Board object of docs/boards.md, less timer() and wdt(), which each board defines.

    pins: {"lock", "door", "tamper", "rows", "cols", "sda", "scl", "i2c_bus", "i2c_hz", "nfc_irq",
    "nfc_reset", "buzzer", "led"}: the board module's pin map."""

    def __init__(self, cfg, pins):
        self.ticks_ms = time.ticks_ms
        self.lock_pin = Pin(pins["lock"], Pin.OUT, value=0)
        # duty_u16=0 in the constructor: some port versions start a new PWM at 50 %.
        self.lock_pwm = PWM(self.lock_pin, freq=_LOCK_PWM_HZ, duty_u16=0)
        self._door = Pin(pins["door"], Pin.IN, Pin.PULL_UP)
        self._tamper = Pin(pins["tamper"], Pin.IN, Pin.PULL_UP)
        # Open-drain rows only ever pull low, so two keys pressed in one column cannot short a
        # driven-high row against the driven-low one.
        self.keypad_rows = tuple(Pin(n, Pin.OPEN_DRAIN, value=1) for n in pins["rows"])
        self.keypad_cols = tuple(Pin(n, Pin.IN, Pin.PULL_UP) for n in pins["cols"])
        nfc = cfg.get("nfc")
        if cfg.get("display", "none") != "none" or nfc:
            # The PN532 stretches SCL for up to ~1 ms while busy; the port's 50 ms transaction
            # timeout covers it, and with P70_IRQ wired the driver never addresses a busy chip.
            self.i2c = I2C(pins["i2c_bus"], scl=Pin(pins["scl"]), sda=Pin(pins["sda"]), freq=pins["i2c_hz"],
                           timeout=_I2C_TIMEOUT_US)
        else:
            self.i2c = None
        # The PN532 shares the display's bus at 0x24; these boards wire no SPI or HSU for it.
        self.nfc_bus = self.i2c if nfc and nfc.get("bus") == "i2c" else None
        self.nfc_cs = None
        irq = pins["nfc_irq"]
        self.nfc_irq = Pin(irq, Pin.IN, Pin.PULL_UP) if nfc and irq is not None else None
        # The reader budgets its share of the loop by its bus time (lockcase/nfc/reader.py).
        self.nfc_bus_hz = pins["i2c_hz"]
        self.nfc_reset = Pin(pins["nfc_reset"], Pin.OUT, value=1) if nfc else None
        self.buzzer_pwm = PWM(Pin(pins["buzzer"]), freq=_BUZZER_HZ, duty_u16=0)
        self.led = Pin(pins["led"], Pin.OUT, value=0)

    def door_open(self):
        return self._door.value() == 1

    def tamper(self):
        return self._tamper.value() == 1

    def epoch(self):
        # The port's RTC: after a power cut it restarts from the port's epoch (the cloud link keeps
        # its own offset to the cloud's clock, see docs/protocol.md).
        return time.time()

    def wlan(self):
        # The station interface; lockcase.drivers.wifi joins the configured network with it.
        import network

        return network.WLAN(network.STA_IF)

    def extras(self, app):
        return ()


class CutoffTimer:
    """A machine.Timer for the coil's cut-off whose callback runs in hard IRQ context where the
    port allows it, scheduled where it does not.

    A scheduled callback waits for the VM, e.g. behind a garbage collection or a long C call; a
    hard one cuts the coil on time. rp2 has hard virtual timers; the esp32 port refuses
    `hard=True` ("hard Timers are not implemented", ports/esp32/machine_timer.c up to 1.29), so
    there the first init falls back, once, to a scheduled callback.
    """

    ONE_SHOT = Timer.ONE_SHOT
    PERIODIC = Timer.PERIODIC

    def __init__(self, timer):
        self._timer = timer
        self._callback = None
        self._hard = True
        self._fire_cb = self._fire  # bound once here: a hard IRQ must not allocate

    def init(self, *, mode=Timer.PERIODIC, period=-1, callback=None):
        self._callback = callback
        cb = self._fire_cb if callback is not None else None
        if self._hard:
            try:
                self._timer.init(mode=mode, period=period, callback=cb, hard=True)
                return
            except (TypeError, ValueError):
                self._hard = False
        self._timer.init(mode=mode, period=period, callback=cb)

    def deinit(self):
        self._timer.deinit()

    def _fire(self, _t):
        cb = self._callback
        if cb is None:
            return
        try:
            cb(self)
        except MemoryError:
            # The callback allocated, which hard IRQ context forbids: run it from the scheduler.
            schedule(cb, self)
