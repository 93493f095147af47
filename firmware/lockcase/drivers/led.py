# Status LED blink patterns, stepped by the app's tick (no task or timer of its own, so it costs
# nothing between ticks and freezes visibly if the loop stalls). Active-low LEDs come in as a
# machine.Signal, so level 1 here always means lit.

from lockcase.compat import ticks_add, ticks_diff

# (level, ms) segments, repeated. Each mode differs in rhythm, not just rate, so they can be
# told apart without a reference.
PATTERNS = {
    "off": ((0, 1000),),
    "idle": ((1, 60), (0, 2940)),  # heartbeat
    "busy": ((1, 120), (0, 120)),
    "ok": ((1, 1000),),
    "error": ((1, 150), (0, 150), (1, 150), (0, 1050)),  # double blink
    "alarm": ((1, 50), (0, 50)),
}


class StatusLed:
    def __init__(self, pin, mode="off"):
        self._pin = pin
        self._level = None
        self._name = None
        self.mode(mode)
        self._write(0)

    def mode(self, name):
        if name == self._name:
            return  # same mode again: keep the rhythm instead of restarting it
        pattern = PATTERNS.get(name)
        if pattern is None:
            raise ValueError("unknown LED mode: %s" % name)
        self._name = name
        self._pattern = pattern
        self._period = sum(ms for _, ms in pattern)
        self._t0 = None  # the next step() starts the pattern at its beginning

    def current(self):
        return self._name

    def level(self):
        return self._level

    def step(self, now_ms):
        if self._t0 is None:
            self._t0 = now_ms
        elapsed = ticks_diff(now_ms, self._t0)
        if elapsed < 0:
            elapsed = 0
        if elapsed >= self._period:
            # Keep t0 within a period of now: ticks_diff is only valid up to half the ticks range.
            whole = elapsed - elapsed % self._period
            self._t0 = ticks_add(self._t0, whole)
            elapsed -= whole
        for level, ms in self._pattern:
            if elapsed < ms:
                self._write(level)
                return level
            elapsed -= ms
        return self._level

    def _write(self, level):
        if level != self._level:
            self._level = level
            if self._pin is not None:
                self._pin.value(level)
