# heap: 512k
# The running app's screen (App._show, TextDisplay.defer): a card tap's request leaves before the
# screen is written, and a display that fails is reported, not fatal. The app's own methods over
# a real Entry and a real LCD driver on the emulated I2C bus.
import os

from scratch import chdir_scratch

from boards.sim.i2c import SimI2C
from boards.sim.lcd import SimLcd
from lockcase import config, creds
from lockcase.app import App
from lockcase.display import make_display
from lockcase.entry import Entry
from lockcase.events import Bus

chdir_scratch("app_screen")


class Lock:
    state = "locked"
    t0 = None

    def shoppers_blocked(self):
        return False

    def alert(self):
        return None


class Cloud:
    # What the case's cloud client is to App.tap; records what the screen held when it was asked.
    def __init__(self, sim):
        self.sim = sim
        self.sent = []

    def available(self):
        return True

    def reachable(self, now):
        return True

    def token(self, uid, src, now):
        self.sent.append((uid, self.sim.text()[0].strip()))


class Case:
    # The attributes App.tap and App._show use, with the real Entry and display.
    def __init__(self):
        cfg = config.defaults()
        cfg.update(case_id="c1", provisioned=True)
        cfg["staff"] = {"salt": "00112233445566778899aabbccddeeff", "iter": 10, "pins": [], "badges": []}
        try:
            os.remove("safety.bin")
        except OSError:
            pass
        self.i2c = SimI2C()
        self.sim = self.i2c.attach(0x27, SimLcd(16, 2))
        self.events = []
        self.bus = Bus()
        self.bus.subscribe(lambda k, d: self.events.append((k, d)))
        self.display = make_display("lcd1602", self.i2c)
        self.staff = creds.StaffCreds(cfg["staff"])
        self.cloud = Cloud(self.sim)
        self.entry = Entry(self.bus, cfg, self.staff, Lock(), self.display, 1000, cloud=self.cloud)
        self._screen_at = None
        self.display.defer = True  # as App.run() sets it

    _tap = App._tap
    _show = App._show

    def show(self, now):
        self._show(now)

    def faults(self):
        return [(k, d.get("part")) for k, d in self.events if k in ("fault", "fault_cleared")]


def test_a_card_tap_asks_the_cloud_before_the_screen_is_written():
    c = Case()
    c.show(1000)
    idle = c.sim.text()[0].strip()
    App.tap(c, "04a1b2c3", "nfc", 1010)
    # Sent while the LCD still showed the idle screen: its ~1 ms I2C write came after, at once
    # (not in the next step, which the cloud's answer could have had to wait for).
    assert c.cloud.sent == [("04a1b2c3", idle)], c.cloud.sent
    assert c.sim.text()[0].strip() == "Please wait..."


def test_a_failing_display_is_a_fault_once_and_the_step_goes_on():
    c = Case()
    c.show(1000)
    c.i2c.detach(0x27)
    c.display.show("one")
    c.show(1010)  # no exception: the lock and the cloud work without a screen
    assert c.faults() == [("fault", "display")]
    c.show(1020)
    c.show(1500)
    assert c.faults() == [("fault", "display")]  # said once, not every step
    # The module comes back after losing power: a new controller, in its power-on state.
    c.sim = c.i2c.attach(0x27, SimLcd(16, 2))
    c.show(1600)  # retried once a second, not every 10 ms step
    assert c.sim.text()[0].strip() != "one"
    c.show(2010)
    assert c.sim.display_on and c.sim.four_bit  # set up again, not only written
    assert c.sim.text() == c.display.lines(), c.sim.text()
    assert c.faults() == [("fault", "display"), ("fault_cleared", "display")]


def test_a_bug_in_the_display_code_is_not_taken_for_a_bus_fault():
    c = Case()

    def broken(rows):
        raise TypeError("a bug")

    c.display._write = broken
    c.display.show("one")
    try:
        c.show(1000)
    except TypeError:
        pass
    else:
        raise AssertionError("swallowed")
    assert c.faults() == []
