# Solenoid driver. With a PWM channel on the gate it pulls in at full duty and then holds at a
# lower duty (less heat, same holding force); with a plain pin it is simply on or off.
# off() is safe to call from a timer interrupt: it only writes the output.

FULL = 65535


class Coil:
    def __init__(self, pin, pwm=None, hold_duty=0.4):
        self._pin = pin
        self._pwm = pwm
        self._hold = int(FULL * min(max(hold_duty, 0.1), 1.0))
        self.off()

    def pull_in(self):
        if self._pwm is not None:
            self._pwm.duty_u16(FULL)
        else:
            self._pin.value(1)

    def hold(self):
        if self._pwm is not None:
            self._pwm.duty_u16(self._hold)

    def off(self):
        if self._pwm is not None:
            self._pwm.duty_u16(0)
        else:
            self._pin.value(0)

    def energized(self):
        if self._pwm is not None:
            return self._pwm.duty_u16() > 0
        return bool(self._pin.value())
