# ESP32-S3-DevKitC-1 (WROOM-1/-1U or WROOM-2 module). Wiring and the power stage: README.md here.
#
# Pins to stay away from on this board, and why none of them appears below:
#   0, 3, 45, 46  strapping pins, sampled at reset (0 also has the BOOT button)
#   19, 20        native USB D-/D+ (USB-Serial-JTAG console)
#   26-32         SPI flash/PSRAM inside the module, not on the headers
#   33-37         octal flash/PSRAM on N8R8 / WROOM-2 modules
#   38 (v1.1), 48 (v1.0)  the on-board addressable RGB LED's data line
#   39-42         JTAG (MTCK/MTDO/MTDI/MTMS) if the JTAG eFuse is ever set
#   43, 44        UART0 TX/RX: the ROM bootloader prints here at every reset
# The lock gate must sit on a pin that is high-Z with no pull-up from power-on until boot.py runs,
# so the external 100k pull-down holds the MOSFET off through reset, flashing and boot.
import time

from machine import I2C, PWM, WDT, Pin, Timer
from micropython import const

NAME = "esp32s3"

# -- pin map (GPIO numbers) -----------------------------------------------------------------------
LOCK_PIN = 4  # solenoid MOSFET gate: PWM, external 100k pull-down
DOOR_PIN = 5  # reed to GND, pull-up: high = door open (or wire cut)
TAMPER_PIN = 6  # enclosure switch to GND, pull-up: high = tripped (or wire cut)
NFC_IRQ_PIN = 7  # PN532 P70_IRQ, active low; None where it is not wired (the reader then polls)
SDA_PIN = 8  # I2C: display + PN532 (0x24), 4.7k pull-ups to 3V3
SCL_PIN = 9
ROW_PINS = (10, 11, 12, 13)  # keypad rows R1..R4, open-drain
COL_PINS = (14, 21, 1, 2)  # keypad cols C1..C4, pull-ups
NFC_RESET_PIN = 15  # PN532 RSTPDN, active low
BUZZER_PIN = 16  # piezo driver transistor base/gate: PWM
LED_PIN = 17  # status LED, active high (the on-board RGB LED is not a plain pin)

I2C_BUS = 0
I2C_HZ = 100_000  # the LCD backpack's PCF8574 is a 100 kHz part
_I2C_TIMEOUT_US = const(50_000)  # also the longest a device may stretch SCL

_LOCK_PWM_HZ = const(20_000)  # above hearing, so the hold duty does not whine
_BUZZER_HZ = const(2_700)  # typical piezo resonance
_HW_TIMERS = const(4)  # two timer groups x two timers on the S3
# Older port versions counted the WDT timeout in whole seconds and refused 0; the port has no
# useful ceiling, so config.py's own limit is the cap.
_WDT_MIN_MS = const(1_000)
_WDT_MAX_MS = const(60_000)
_FATAL_PAUSE_MS = const(5_000)  # slows a crash loop down so it cannot wear out the flash
_FEED_MS = const(250)  # below the smallest watchdog timeout config.py allows

_wdt = None  # the running watchdog, kept so fatal() can pause without being reset by it


def lock_safe():
    # value= is applied before the pad becomes an output, so the gate goes from pulled-down
    # high-Z straight to driven low. Re-creating the Pin also detaches a PWM left on it.
    Pin(LOCK_PIN, Pin.OUT, value=0)


def reset_cause():
    import machine

    c = machine.reset_cause()
    if c == machine.PWRON_RESET:
        return "power_on"
    if c == machine.WDT_RESET:
        return "watchdog"
    if c == machine.SOFT_RESET:  # esp_restart(): machine.reset(), fatal()
        return "soft"
    if c == machine.HARD_RESET:
        return "hard"
    if c == machine.DEEPSLEEP_RESET:
        return "deepsleep"
    return "unknown"


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
        # duty_u16=0 in the constructor: some port versions start a new PWM at 50 %.
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
        self._next_timer = 0

    def door_open(self):
        return self._door.value() == 1

    def tamper(self):
        return self._tamper.value() == 1

    def epoch(self):
        # The port's RTC: after a power cut it restarts from the port's epoch (the cloud link keeps
        # its own offset to the cloud's clock, see docs/protocol.md).
        return time.time()

    def timer(self):
        # Timer(n) hands back the same object for the same n, so each caller gets its own id.
        # The callback is scheduled (the port has no hard timer IRQ): it runs at the next
        # bytecode boundary, so a loop stuck inside one long C call is left to the watchdog.
        n = self._next_timer
        if n >= _HW_TIMERS:
            raise RuntimeError("board: all %d hardware timers are in use" % _HW_TIMERS)
        self._next_timer = n + 1
        return Timer(n)

    def wdt(self, timeout_ms):
        global _wdt
        _wdt = WDT(timeout=min(max(timeout_ms, _WDT_MIN_MS), _WDT_MAX_MS))
        return _wdt

    def wlan(self):
        # The station interface; lockcase.drivers.wifi joins the configured network with it.
        import network

        w = network.WLAN(network.STA_IF)
        return w

    def extras(self, app):
        return ()
