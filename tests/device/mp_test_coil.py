# The solenoid driver on its own: whatever the output was left at (a warm reset, a board whose pin
# comes up high), constructing a Coil drives it off.
from lockcase.drivers.coil import FULL, Coil


class Pin:
    def __init__(self, v):
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class PWM:
    def __init__(self, d):
        self.d = d

    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d


def test_plain_pin_that_starts_high_is_driven_off():
    pin = Pin(1)
    c = Coil(pin)
    assert pin.v == 0 and not c.energized()


def test_pwm_that_starts_at_full_duty_is_driven_off():
    pwm = PWM(FULL)
    c = Coil(Pin(1), pwm, 0.4)
    assert pwm.d == 0 and not c.energized()


def test_pull_in_hold_off():
    pwm = PWM(0)
    c = Coil(Pin(0), pwm, 0.4)
    c.pull_in()
    assert pwm.d == FULL and c.energized()
    c.hold()
    assert 0 < pwm.d < FULL and c.energized()
    c.off()
    assert pwm.d == 0 and not c.energized()
    # A hold duty out of range is clamped, never 0 (the bolt would drop) nor above full.
    for duty, want in ((0.0, int(FULL * 0.1)), (5.0, FULL)):
        pwm = PWM(0)
        Coil(Pin(0), pwm, duty).hold()
        assert pwm.d == want, (duty, pwm.d)
