# Simulated keypad matrix for the sim board and the driver tests: the electrical behaviour of
# the wires, not a queue of key events, so the real lockcase.drivers.keypad scanner runs on it
# unchanged.
#
# A pressed key joins its row and column wires. A column reads 0 when a chain of pressed keys
# joins it to a row driven 0, else 1 (the pull-up). Rows at 1 behave as open-drain outputs, as
# on the boards, so the current can run back through them: three keys on the corners of a
# rectangle make the fourth corner read as pressed, as on a real diode-less keypad.
#
# Key state is worked out from clock() when a column is read, so a tap ends without anyone
# having to step the sim at the right moment.

from lockcase.compat import ticks_add, ticks_diff

try:
    from machine import PinBase
except ImportError:  # CPython tooling
    PinBase = object


class _Row(PinBase):
    def __init__(self):
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        return None


class _Col(PinBase):
    def __init__(self, matrix, index):
        self._m = matrix
        self._i = index

    def value(self, v=None):
        if v is None:
            return self._m._col(self._i)
        return None  # an input: writes go nowhere


class SimKeyMatrix:
    def __init__(self, keymap, clock):
        self.keymap = tuple(keymap)
        self._clock = clock
        self._pos = {}
        for r, line in enumerate(self.keymap):
            for c, key in enumerate(line):
                self._pos[key] = (r, c)
        self.rows = [_Row() for _ in self.keymap]
        self.cols = [_Col(self, c) for c in range(len(self.keymap[0]))]
        self._down = {}  # key -> release time (ticks ms), or None while held until release()
        self._bounce = {}  # key -> (start, toggles, period_ms, pressed when settled)

    def _key(self, key):
        if key not in self._pos:
            raise ValueError("no key %r on this keypad" % key)
        return key

    def press(self, key):
        self._bounce.pop(self._key(key), None)
        self._down[key] = None

    def release(self, key):
        self._bounce.pop(self._key(key), None)
        self._down.pop(key, None)

    def tap(self, key, hold_ms=60):
        """Press now; the key lets go by itself once clock() reaches now + hold_ms."""
        self._bounce.pop(self._key(key), None)
        self._down[key] = ticks_add(self._clock(), hold_ms)

    def bounce(self, key, n, period_ms=1):
        """Flip the key (press if up, release if down) with n contact bounces first.

        The contact takes the new state at once, then alternates every period_ms, and after n
        periods it stays in the new state.
        """
        self._key(key)
        self.update()
        target = not self._closed(key, self._clock())
        self._bounce[key] = (self._clock(), n, period_ms, target)

    def update(self):
        """Apply the releases of taps and the end of bounces that clock() has passed."""
        now = self._clock()
        for key in list(self._down):
            t = self._down[key]
            if t is not None and ticks_diff(now, t) >= 0:
                del self._down[key]
        for key in list(self._bounce):
            start, n, period, target = self._bounce[key]
            if ticks_diff(now, start) >= n * period:
                del self._bounce[key]
                if target:
                    self._down[key] = None
                else:
                    self._down.pop(key, None)

    def _closed(self, key, now):
        b = self._bounce.get(key)
        if b is not None:
            start, n, period, target = b
            step = ticks_diff(now, start) // period
            return target if step % 2 == 0 else not target
        return key in self._down

    def keys_down(self):
        """Keys whose contacts are closed now, in keymap order."""
        self.update()
        now = self._clock()
        return [k for line in self.keymap for k in line if self._closed(k, now)]

    def _col(self, col):
        if not self._down and not self._bounce:
            # Nothing pressed, the case nearly always: the pull-up, at once. The full model below
            # costs the emulator ~80 us a read on the Unix port, 1 ms of each 10 ms app step for a
            # 4x3 scan (a chip's pin reads take microseconds), and a reply from the cloud that
            # landed meanwhile waited for it (make bench, 2026-12-02).
            return 1
        self.update()
        now = self._clock()
        edges = [
            self._pos[k] for k in list(self._down) + list(self._bounce) if self._closed(k, now)
        ]
        if not edges:
            return 1
        # Spread "low" from the driven rows along closed keys until nothing new is reached.
        low_rows = set(r for r in range(len(self.rows)) if not self.rows[r]._v)
        low_cols = set()
        grew = True
        while grew:
            grew = False
            for r, c in edges:
                if r in low_rows and c not in low_cols:
                    low_cols.add(c)
                    grew = True
                elif c in low_cols and r not in low_rows:
                    low_rows.add(r)
                    grew = True
        return 0 if col in low_cols else 1
