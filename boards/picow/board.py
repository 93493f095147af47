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

from board_mcu import CutoffTimer, McuBoard, pause_and_reset
from machine import WDT, Pin, Timer
from micropython import const

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
PINS = {"lock": LOCK_PIN, "door": DOOR_PIN, "tamper": TAMPER_PIN, "rows": ROW_PINS, "cols": COL_PINS,
        "sda": SDA_PIN, "scl": SCL_PIN, "i2c_bus": I2C_BUS, "i2c_hz": I2C_HZ, "nfc_irq": NFC_IRQ_PIN,
        "nfc_reset": NFC_RESET_PIN, "buzzer": BUZZER_PIN, "led": LED_PIN}

_WDT_MIN_MS = const(1)
_WDT_MAX_MS = const(8_388)  # RP2040: 24-bit counter at 2 ticks/us; larger values raise

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
    pause_and_reset(lock_safe, _wdt)


class Board(McuBoard):
    def __init__(self, cfg):
        McuBoard.__init__(self, cfg, PINS)

    def timer(self):
        # rp2 has virtual timers only, and they take hard=True (CutoffTimer).
        return CutoffTimer(Timer(-1))

    def wdt(self, timeout_ms):
        global _wdt
        reset_cause()
        _wdt = WDT(timeout=min(max(timeout_ms, _WDT_MIN_MS), _WDT_MAX_MS))
        return _wdt

    def wlan(self):
        w = McuBoard.wlan(self)
        # The CYW43's power saving drops incoming packets for hundreds of ms: a reply to an
        # unlock request would wait for it. 0xA11140 is the "performance" mode.
        w.active(True)
        try:
            w.config(pm=0xA11140)
        except (ValueError, OSError):
            pass
        return w
