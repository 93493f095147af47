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

from board_mcu import CutoffTimer, McuBoard, pause_and_reset
from machine import WDT, Pin, Timer
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
PINS = {"lock": LOCK_PIN, "door": DOOR_PIN, "tamper": TAMPER_PIN, "rows": ROW_PINS, "cols": COL_PINS,
        "sda": SDA_PIN, "scl": SCL_PIN, "i2c_bus": I2C_BUS, "i2c_hz": I2C_HZ, "nfc_irq": NFC_IRQ_PIN,
        "nfc_reset": NFC_RESET_PIN, "buzzer": BUZZER_PIN, "led": LED_PIN}

_HW_TIMERS = const(4)  # two timer groups x two timers on the S3
# Older port versions counted the WDT timeout in whole seconds and refused 0; the port has no
# useful ceiling, so config.py's own limit is the cap.
_WDT_MIN_MS = const(1_000)
_WDT_MAX_MS = const(60_000)

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
    pause_and_reset(lock_safe, _wdt)


class Board(McuBoard):
    def __init__(self, cfg):
        McuBoard.__init__(self, cfg, PINS)
        self._next_timer = 0

    def timer(self):
        # Timer(n) hands back the same object for the same n, so each caller gets its own id. A
        # hardware timer, not a virtual one: the port's virtual timers count in FreeRTOS ticks
        # (10 ms). The port refuses hard=True, so the callback is scheduled (CutoffTimer): it runs
        # at the next bytecode boundary, and a loop stuck inside one long C call is left to the
        # watchdog.
        n = self._next_timer
        if n >= _HW_TIMERS:
            raise RuntimeError("board: all %d hardware timers are in use" % _HW_TIMERS)
        self._next_timer = n + 1
        return CutoffTimer(Timer(n))

    def wdt(self, timeout_ms):
        global _wdt
        _wdt = WDT(timeout=min(max(timeout_ms, _WDT_MIN_MS), _WDT_MAX_MS))
        return _wdt
