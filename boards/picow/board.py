# Raspberry Pi Pico W (RP2040 + CYW43439). Wiring and the power stage: README.md here.
#
# GP23, GP24, GP25 and GP29 belong to the wireless chip (power, SPI data/IRQ, CS, clock) and are
# not on the headers; the on-board LED hangs off the wireless chip as Pin("LED"). The RP2040 has
# no strapping pins, and every GPIO comes out of reset as an input with its pull-down on, so the
# lock gate is held off by both that and the external 100k pull-down until boot.py runs.
#
# PWM: a slice (GPIO // 2 % 8) has one frequency for both its channels. The lock (GP15, slice 7)
# and the buzzer (GP18, slice 1) must stay on different slices; keep GP14 off PWM.
import sys
import time

from machine import I2C, PWM, WDT, Pin, Timer
from micropython import const, schedule

NAME = "picow"

# -- pin map (GPIO numbers) -----------------------------------------------------------------------
SDA_PIN = 4  # I2C0: display + PN532 (0x24), 4.7k pull-ups to 3V3
SCL_PIN = 5
ROW_PINS = (6, 7, 8, 9)  # keypad rows R1..R4, open-drain
COL_PINS = (10, 11, 12, 13)  # keypad cols C1..C4, pull-ups
LOCK_PIN = 15  # solenoid MOSFET gate: PWM slice 7B, external 100k pull-down
DOOR_PIN = 16  # reed to GND, pull-up: high = door open (or wire cut)
TAMPER_PIN = 17  # enclosure switch to GND, pull-up: high = tripped (or wire cut)
BUZZER_PIN = 18  # piezo driver transistor: PWM slice 1A
NFC_IRQ_PIN = 20  # PN532 P70_IRQ, active low; None where it is not wired (the reader then polls)
NFC_RESET_PIN = 21  # PN532 RSTPDN, active low
LED_PIN = "LED"  # on-board LED, through the wireless chip

I2C_BUS = 0
I2C_HZ = 100_000  # the LCD backpack's PCF8574 is a 100 kHz part
_I2C_TIMEOUT_US = const(50_000)  # also the longest a device may stretch SCL

_LOCK_PWM_HZ = const(20_000)  # above hearing, so the hold duty does not whine
_BUZZER_HZ = const(2_700)  # typical piezo resonance
_WDT_MIN_MS = const(1)
_WDT_MAX_MS = const(8_388)  # RP2040: 24-bit counter at 2 ticks/us; larger values raise
_FATAL_PAUSE_MS = const(5_000)  # slows a crash loop down so it cannot wear out the flash
_FEED_MS = const(250)  # below the smallest watchdog timeout config.py allows

# RP2040 watchdog SCRATCH4. The SDK's watchdog_enable() (machine.WDT) writes the magic there and
# watchdog_reboot() (machine.reset(), picotool, the UF2 bootloader) overwrites it, so it tells a
# real watchdog timeout from a commanded reboot, which the port reports as WDT_RESET too.
_WD_SCRATCH4 = const(0x4005801C)
_WD_NON_REBOOT_MAGIC = const(0x6AB73121)

_cause = None
_wdt = None  # the running watchdog, kept so fatal() can pause without being reset by it


def lock_safe():
    # value= is applied before the pad becomes an output, so the gate goes from pulled-down
    # high-Z straight to driven low. Re-creating the Pin also takes the pad back from a PWM slice.
    Pin(LOCK_PIN, Pin.OUT, value=0)


def reset_cause():
    # Latched on the first call: starting the watchdog rewrites SCRATCH4, and Board.wdt() calls
    # this first so the answer stays right whatever order the firmware asks in.
    global _cause
    if _cause is None:
        _cause = _read_cause()
    return _cause


def _read_cause():
    import machine

    c = machine.reset_cause()
    if c == machine.PWRON_RESET:  # also the RUN pin and the on-chip reset
        return "power_on"
    if c == machine.WDT_RESET:
        if "RP2040" not in sys.implementation._machine:  # other chips: SCRATCH4 lives elsewhere
            return "watchdog"
        if machine.mem32[_WD_SCRATCH4] == _WD_NON_REBOOT_MAGIC:
            return "watchdog"
        # A commanded reboot: "soft", as the ESP32 port reports machine.reset() too.
        return "soft"
    return "unknown"  # the port defines no other causes


def create(cfg):
    return Board(cfg)


def fatal(exc):
    # main.py has made the lock safe already; doing it again costs nothing.
    import machine

    lock_safe()
    for _ in range(_FATAL_PAUSE_MS // _FEED_MS):
        if _wdt is not None:
            _wdt.feed()
        time.sleep_ms(_FEED_MS)
    machine.reset()


class Board:
    def __init__(self, cfg):
        self.ticks_ms = time.ticks_ms
        self.lock_pin = Pin(LOCK_PIN, Pin.OUT, value=0)
        self.lock_pwm = PWM(self.lock_pin, freq=_LOCK_PWM_HZ, duty_u16=0)
        self._door = Pin(DOOR_PIN, Pin.IN, Pin.PULL_UP)
        self._tamper = Pin(TAMPER_PIN, Pin.IN, Pin.PULL_UP)
        # Open-drain rows only ever pull low, so two keys pressed in one column cannot short a
        # driven-high row against the driven-low one.
        self.keypad_rows = tuple(Pin(n, Pin.OPEN_DRAIN, value=1) for n in ROW_PINS)
        self.keypad_cols = tuple(Pin(n, Pin.IN, Pin.PULL_UP) for n in COL_PINS)
        nfc = cfg.get("nfc")
        if cfg.get("display", "none") != "none" or nfc:
            # The PN532 stretches SCL for up to ~1 ms while busy; the port's 50 ms transaction
            # timeout covers it, and with P70_IRQ wired the driver never addresses a busy chip.
            self.i2c = I2C(I2C_BUS, scl=Pin(SCL_PIN), sda=Pin(SDA_PIN), freq=I2C_HZ,
                           timeout=_I2C_TIMEOUT_US)
        else:
            self.i2c = None
        # The PN532 shares the display's bus at 0x24; this board wires no SPI or HSU for it.
        self.nfc_bus = self.i2c if nfc and nfc.get("bus") == "i2c" else None
        self.nfc_cs = None
        self.nfc_irq = Pin(NFC_IRQ_PIN, Pin.IN, Pin.PULL_UP) if nfc and NFC_IRQ_PIN is not None else None
        # The reader budgets its share of the loop by its bus time (lockcase/nfc/reader.py).
        self.nfc_bus_hz = I2C_HZ
        self.nfc_reset = Pin(NFC_RESET_PIN, Pin.OUT, value=1) if nfc else None
        self.buzzer_pwm = PWM(Pin(BUZZER_PIN), freq=_BUZZER_HZ, duty_u16=0)
        self.led = Pin(LED_PIN, Pin.OUT, value=0)

    def door_open(self):
        return self._door.value() == 1

    def tamper(self):
        return self._tamper.value() == 1

    def epoch(self):
        # The port's RTC: after a power cut it restarts from the port's epoch (the cloud link keeps
        # its own offset to the cloud's clock, see docs/protocol.md).
        return time.time()

    def timer(self):
        return _CutoffTimer()

    def wdt(self, timeout_ms):
        global _wdt
        reset_cause()
        _wdt = WDT(timeout=min(max(timeout_ms, _WDT_MIN_MS), _WDT_MAX_MS))
        return _wdt

    def wlan(self):
        # The station interface; lockcase.drivers.wifi joins the configured network with it.
        import network

        w = network.WLAN(network.STA_IF)
        # The CYW43's power saving drops incoming packets for hundreds of ms: a reply to an
        # unlock request would wait for it. 0xA11140 is the "performance" mode.
        w.active(True)
        try:
            w.config(pm=0xA11140)
        except (ValueError, OSError):
            pass
        return w

    def extras(self, app):
        return ()


class _CutoffTimer:
    """A virtual machine.Timer whose callback runs in hard IRQ context where the firmware allows.

    A scheduled callback waits for the VM, e.g. behind a garbage collection or a long C call; a
    hard one cuts the coil on time. Firmware older than hard timer support falls back to
    scheduled callbacks.
    """

    ONE_SHOT = Timer.ONE_SHOT
    PERIODIC = Timer.PERIODIC

    def __init__(self):
        self._timer = Timer(-1)
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
