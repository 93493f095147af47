# The simulated board: the board contract of docs/boards.md on the MicroPython Unix port, with
# emulated peripherals. Installed as the top-level module `board` by boards/sim/start.py (on a
# real device `board.py` is the board's own file), so the firmware never imports a fake itself.
from boards.sim.hw import PWM, WDT, Hardware, InPin, OutPin, Timer

NAME = "sim"

# Set by the launcher (boards/sim/start.py) or a test harness before create().
OPTIONS = {"virtual": False, "start_ms": 0, "ctl": None, "reset_cause": "power_on", "heap_report": False}

# The chip's pins exist before the firmware runs, so the hardware exists at import.
HW = Hardware()


def power_on(virtual=False, start_ms=0, reset_cause="power_on", epoch_s=0):
    """A fresh chip: every latch at its reset level. Tests call this to model a reset."""
    global HW
    OPTIONS["virtual"] = virtual
    OPTIONS["start_ms"] = start_ms
    OPTIONS["reset_cause"] = reset_cause
    HW = Hardware(virtual=virtual, start_ms=start_ms, epoch_s=epoch_s)
    return HW


def end_process_on_reset(cause_file):
    """What a reset means for a sim process: record why for the next boot, then end the process
    the way a reset line would, even if the main loop is stuck (this may run on the timer thread).
    The supervisor (SimCase, casectl's SimDevice) boots it again."""
    import os

    def on_reset(why):
        with open(cause_file, "w") as f:
            f.write(why)
        print("SIM RESET", why)
        os.system("kill -9 $PPID")

    HW.on_reset = on_reset


def lock_safe():
    HW.set_output("lock", 0)


def reset_cause():
    return OPTIONS["reset_cause"]


class Board:
    def __init__(self, hw, cfg):
        from boards.sim.i2c import SimI2C
        from boards.sim.keymatrix import SimKeyMatrix
        from lockcase.drivers.keypad import keymap_for

        self.hw = hw
        self.name = NAME
        self.ticks_ms = hw.ticks_ms
        self.epoch = hw.epoch
        self.lock_pin = OutPin(hw, "lock")
        self.lock_pwm = PWM(hw, "lock", freq=20000)
        self.keys = SimKeyMatrix(keymap_for(cfg.get("keypad")), hw.ticks_ms)
        self.keypad_rows = self.keys.rows
        self.keypad_cols = self.keys.cols
        self.i2c = SimI2C()
        self.display_device = None
        kind = cfg.get("display", "lcd1602")
        on_change = hw.set_output
        if kind in ("lcd1602", "lcd2004"):
            from boards.sim.lcd import SimLcd

            cols, rows = (20, 4) if kind == "lcd2004" else (16, 2)
            self.display_device = SimLcd(cols, rows, on_change=on_change)
            self.i2c.attach(0x27, self.display_device)
        elif kind == "ssd1306":
            from boards.sim.oled import SimSsd1306

            self.display_device = SimSsd1306(on_change=on_change)
            self.i2c.attach(0x3C, self.display_device)
        self._nfc(hw, cfg.get("nfc"))
        self.buzzer_pwm = PWM(hw, "buzzer", report="freq")
        self.led = OutPin(hw, "led")
        self._door = InPin(hw, "door")
        self._tamper = InPin(hw, "tamper")

    def _nfc(self, hw, ncfg):
        # The emulated PN532 (boards/sim/pn532.py) sits on the bus config.json names, or the
        # emulated MFRC522 on SPI; a case without an "nfc" entry has no reader, and keeps the RAM.
        self.nfc_chip = self.nfc_bus = self.nfc_irq = self.nfc_reset = self.nfc_cs = None
        self.nfc_bus_hz = None
        if not ncfg:
            return
        if ncfg.get("driver") == "mfrc522" or ncfg.get("bus", "i2c") != "i2c":
            from boards.sim import nfcbus

            nfcbus.attach(self, hw, ncfg)
            return
        from boards.sim import pn532

        chip = self.nfc_chip = pn532.SimPN532(hw.ticks_ms)
        self.nfc_irq = pn532.IrqPin(chip)
        self.nfc_reset = pn532.ResetPin(chip)
        # The clock the reference boards run the reader's bus at: the reader budgets its share of
        # the loop by the bus time a real board would spend (the emulated buses take none).
        self.nfc_bus_hz = 100_000
        self.i2c.attach(0x24, pn532.I2CPort(chip))  # fixed in the PN532's silicon
        self.nfc_bus = self.i2c

    def door_open(self):
        return bool(self._door.value())

    def tamper(self):
        return bool(self._tamper.value())

    def timer(self):
        return Timer(self.hw)

    def wdt(self, timeout_ms):
        self.hw.start_thread()
        return WDT(self.hw, timeout_ms)

    def wlan(self):
        return None  # the sim is on the host's network: always online, nothing to join

    def extras(self, app):
        if OPTIONS.get("heap_report"):
            # The app is built and its loop about to start: the boot's live heap, as the heap
            # harnesses measure it (start.py --heap-report; tests/host/heapcloud.py reads it).
            import gc

            import micropython

            gc.collect()
            print("HEAP boot live=%d free=%d" % (gc.mem_alloc(), gc.mem_free()))
            # The interned names: their pools grow in doublings, the last one a block of its own
            # (about 9 KB for the 7th, past 1,260 names; docs/memory.md).
            micropython.qstr_info()
        if OPTIONS.get("ctl"):
            from boards.sim.control import serve

            return (serve(self, app, OPTIONS["ctl"]),)
        return ()


def create(cfg):
    return Board(HW, cfg)


def fatal(exc):
    HW.reset("crash")
    if HW.on_reset is None:
        raise exc


def reset(why):
    """A deliberate reset (the over-the-air update's switch, docs/ota.md): as fatal, with its cause."""
    HW.reset(why)


def adopt(first):
    """boot.py switched to a release, whose own copy of this module it imported (docs/ota.md): the
    chip, its pins and what the launcher set are those the first copy made."""
    global HW
    HW = first.HW
    OPTIONS.update(first.OPTIONS)
