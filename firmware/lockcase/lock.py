# Lock controller: solenoid + door reed sensor + tamper switch, as a state machine stepped with
# an explicit clock so the same code runs on a board, in the sim and under test with virtual time.
#
# Safety rules enforced here:
# - the coil is energized only by grant(), for at most unlock_ms, and a hardware one-shot timer
#   cuts it even if step() is never called again (a stalled loop is then reset by the watchdog);
# - the coil drops as soon as the door opens;
# - a sliding-window duty budget caps energized time per window so a grant stream cannot cook it,
#   across resets and power cuts too: before the coil is energized, the worst-case energized time
#   that may still count against the window is on flash (lockcase.safestate), and a boot starts
#   from it as if all of it had just happened (docs/safety.md);
# - the grant's record is on flash before the coil is energized (in the small safety file, one
#   cheap write, not a journal append); the journal gets it right after, and a boot that finds a
#   grant the journal never got journals it then: no opening goes unrecorded, whatever instant
#   the power is cut at;
# - a tripped tamper switch latches: shopper unlocks are refused until staff or the cloud clear it.

from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.safestate import TP, G, U

LOCKED = "locked"
RELEASED = "released"  # energized, waiting for the door to open
OPEN = "open"  # opened after a grant
FORCED = "forced"  # opened without a grant: alarm until closed

_DOOR_DEBOUNCE_MS = const(50)
_MIN_GRANT_MS = const(200)  # shorter than this and the bolt may not retract: refuse instead
_HISTORY = const(32)


class DutyBudget:
    """Energized time in any window of window_ms never exceeds budget_ms.

    A grant starting at t may last budget - used(t - window, t): every window that overlaps the new
    interval then sees at most the budget (see docs/safety.md for the argument).
    """

    def __init__(self, budget_ms, window_ms):
        self.budget_ms = budget_ms
        self.window_ms = window_ms
        self._start = [0] * _HISTORY
        self._end = [0] * _HISTORY
        self._n = 0
        self._head = 0  # index of the oldest interval

    def used(self, now):
        # Ages relative to now keep this correct across ticks_ms wrap-around.
        w = self.window_ms
        total = 0
        for i in range(self._n):
            j = (self._head + i) % _HISTORY
            start_age = ticks_diff(now, self._start[j])
            end_age = ticks_diff(now, self._end[j])
            if start_age > w:
                start_age = w
            if end_age < 0:
                end_age = 0  # still running: counts up to now
            if start_age > end_age:
                total += start_age - end_age
        return total

    def allowance(self, now):
        self._expire(now)
        if self._n == _HISTORY:
            return 0  # more grants in one window than we track: that is abuse, refuse
        left = self.budget_ms - self.used(now)
        return left if left > 0 else 0

    def start(self, now, duration):
        j = (self._head + self._n) % _HISTORY
        self._start[j] = now
        self._end[j] = ticks_add(now, duration)
        self._n += 1

    def cut(self, now):
        # The coil dropped before its planned end (door opened): charge only what was used.
        if self._n:
            j = (self._head + self._n - 1) % _HISTORY
            if ticks_diff(self._end[j], now) > 0:
                self._end[j] = now

    def _expire(self, now):
        while self._n and ticks_diff(now, self._end[self._head]) > self.window_ms:
            self._head = (self._head + 1) % _HISTORY
            self._n -= 1


class Lock:
    def __init__(self, coil, door, tamper, timer, bus, cfg, now, store=None, clock=None):
        # door: callable -> True when the door is open; tamper: callable -> True when tripped
        # (either may be None if the case has no such switch). store: a SafeState, where the duty
        # record and the tamper latch survive resets (None in tests of the logic alone). clock:
        # ticks_ms, read again after the flash write a grant waits for (see grant).
        coil.off()  # first of all, whatever the caller did before
        self.coil = coil
        self._clock = clock
        self._door = door
        self._tamper = tamper
        self._timer = timer
        self.bus = bus
        self.unlock_ms = cfg["unlock_ms"]
        self.pull_in_ms = cfg["pull_in_ms"]
        self.held_open_ms = cfg["held_open_s"] * 1000
        self.duty = DutyBudget(cfg["duty_budget_ms"], cfg["duty_window_s"] * 1000)
        self.store = store
        self.tamper_blocks = cfg.get("tamper_blocks_shoppers", True)
        self.why = None  # why the last grant() was refused: "duty", "tamper" or "store"
        # ticks of the shopper flow's first key or tap, set by the entry as its request goes to
        # the cloud: the next shopper grant journals how long the shopper waited (wait_ms).
        self.t0 = None
        self._duty_clear_at = now  # from then on the duty record on flash may read 0
        self.tamper_latched = False
        if store is not None:
            u = min(store.get(U), self.duty.budget_ms)
            if u > 0:
                # The ticks clock starts again at a reset and the old intervals' times are lost;
                # what is known is that at most u ms of energized time may still lie in the
                # window. Taking it as one interval that ended at boot over-counts every later
                # window (the real ones ended no later than that): the budget holds across it.
                self.duty.start(ticks_add(now, -u), u)
                self._duty_clear_at = ticks_add(now, self.duty.window_ms)
            self.tamper_latched = bool(store.get(TP)) and self.tamper_blocks
        self.state = LOCKED
        self.held_alarm = False
        self.tamper_alarm = False
        self._deadline = now
        self._since = now  # when the current state began
        self._holding = False
        self.source = None
        # Start from what the switches say right now, without raising an alarm at boot for a
        # door that was already open: a door open at boot is reported as forced only if it was
        # closed first. It is reported as an event so the store still sees it.
        self._door_open = bool(door()) if door else False
        self._door_raw = self._door_open
        self._door_raw_since = now
        if self._door_open:
            self.state = FORCED
            bus.emit("forced", at_boot=True)
        self.tamper_alarm = bool(tamper()) if tamper else False
        if self.tamper_alarm:
            bus.emit("tamper", at_boot=True)
            self._latch_tamper()

    # -- commands -----------------------------------------------------------------------------
    def grant(self, source, now, who=None):
        """Release the lock for a shopper or staff member. Returns True if it released; when it
        did not, self.why says why ("tamper", "duty" or "store")."""
        self.why = None
        if source == "staff":
            self.clear_tamper(who)
        elif self.shoppers_blocked():
            self.why = "tamper"
            self.bus.emit("denied", source=source, reason="tamper")
            return False
        if self.state in (OPEN, FORCED):
            self.bus.emit("granted", source=source, who=who, ms=0, note="door already open")
            return True
        if self.state == RELEASED:
            return True  # already energized: do not extend, the deadline stands
        allowed = self.duty.allowance(now)
        ms = self.unlock_ms if allowed >= self.unlock_ms else allowed
        if ms < _MIN_GRANT_MS:
            self.why = "duty"
            self.bus.emit("duty_limited", source=source, who=who, ms=0)
            return False
        if ms < self.unlock_ms:
            self.bus.emit("duty_limited", source=source, who=who, ms=ms)
        # On flash before the coil moves, in one write: what this grant may add to the window
        # and the grant's own record. A power cut at any instant after it leaves a record at
        # least as pessimistic as what happened.
        store = self.store
        if store is not None:
            if not store.grant(self.duty.used(now) + ms, ms, source, who):
                # Nothing to record it on: across a reset neither the duty budget nor the record
                # of this opening would hold, so it does not happen (fail-secure; reported).
                self.why = "store"
                self.bus.emit("fault", part="safety_state", error=store.error)
                return False
            if self._clock is not None:
                # The write (and a PIN check before it) took time: the model's interval and the
                # hardware's start now, so the real coil never runs past what the budget counted.
                # Only later, so the allowance computed above still holds.
                now = self._clock()
            self._duty_clear_at = ticks_add(now, ms + self.duty.window_ms)
        # Arm the hardware cut-off before energizing so there is no window without it.
        self._timer.arm(ms, self._hw_cutoff)
        self.duty.start(now, ms)
        self.coil.pull_in()
        self._holding = False
        self._deadline = ticks_add(now, ms)
        self._set(RELEASED, now)
        self.source = source
        # Journaled after the coil: a journal append can cost a flash erase, too slow to stand
        # between a shopper and the lock; the record above covers a cut in between, and the
        # journal marks the grant as its own once the record is on flash (SafeState.journaled).
        d = {"source": source, "who": who, "ms": ms}
        if store is not None:
            d["g"] = store.get(G)
        t0 = self.t0
        if t0 is not None and source != "staff":
            self.t0 = None
            d["wait_ms"] = ticks_diff(now, t0)
        self.bus.emit("granted", **d)
        return True

    def shoppers_blocked(self):
        return self.tamper_latched

    def clear_tamper(self, who):
        """Staff (a PIN, a badge) or the cloud reset a latched tamper alarm. The switch itself
        must be closed again: an enclosure still open stays latched."""
        if not self.tamper_latched or self.tamper_alarm:
            return False
        self.tamper_latched = False
        if self.store is not None:
            self.store.set(TP, 0)
        self.bus.emit("tamper_reset", by=who)
        return True

    def _latch_tamper(self):
        if self.tamper_blocks and not self.tamper_latched:
            self.tamper_latched = True
            if self.store is not None:
                self.store.set(TP, 1)

    def relock(self, now, reason="command"):
        if self.state == RELEASED:
            self._drop(now)
            self._set(LOCKED, now)
            self.bus.emit("relocked", reason=reason)

    def _hw_cutoff(self, _timer=None):
        # Runs in timer interrupt context: touch nothing but the output, allocate nothing
        # (a *args signature would build a tuple, which a hard IRQ cannot).
        self.coil.off()

    # -- stepping -----------------------------------------------------------------------------
    def step(self, now):
        self._step_door(now)
        self._step_tamper()
        # Old intervals leave the history as they age, not only when a grant asks: after days
        # without one, their ages would wrap around ticks_ms's period and never expire.
        self.duty._expire(now)
        if self.store is not None and ticks_diff(now, self._duty_clear_at) >= 0 and self.store.get(U):
            # A whole window without energized time: nothing on record counts any more, and a
            # reset now need not cool down (one write per burst of grants, not per grant).
            self.store.set(U, 0)
        st = self.state
        if st == RELEASED:
            if ticks_diff(now, self._deadline) >= 0:
                self._drop(now)
                self._set(LOCKED, now)
                self.bus.emit("relocked", reason="timeout")
            elif not self._holding and ticks_diff(now, self._since) >= self.pull_in_ms:
                self._holding = True
                self.coil.hold()
        elif st in (OPEN, FORCED):
            if not self.held_alarm and ticks_diff(now, self._since) >= self.held_open_ms:
                self.held_alarm = True
                self.bus.emit("held_open", s=ticks_diff(now, self._since) // 1000)

    def _step_door(self, now):
        if self._door is None:
            return
        raw = bool(self._door())
        if raw != self._door_raw:
            self._door_raw = raw
            self._door_raw_since = now
        if raw == self._door_open or ticks_diff(now, self._door_raw_since) < _DOOR_DEBOUNCE_MS:
            return
        self._door_open = raw
        if raw:
            self._on_door_opened(now)
        else:
            self._on_door_closed(now)

    def _on_door_opened(self, now):
        if self.state == RELEASED:
            self._drop(now)  # the bolt is clear: stop heating the coil at once
            self._set(OPEN, now)
            self.bus.emit("opened", source=self.source)
        else:
            self._set(FORCED, now)
            self.bus.emit("forced")

    def _on_door_closed(self, now):
        was = self.state
        self._set(LOCKED, now)
        self.held_alarm = False
        self.bus.emit("closed", after=was)

    def _step_tamper(self):
        if self._tamper is None:
            return
        t = bool(self._tamper())
        if t != self.tamper_alarm:
            self.tamper_alarm = t
            if t:
                self._latch_tamper()  # on flash first: a reset must not clear it
            if t:
                self.bus.emit("tamper")
            else:  # latched: the alarm stays until staff reset it (tamper_reset); say so
                self.bus.emit("tamper_cleared", latched=self.tamper_latched)

    def _drop(self, now):
        self.coil.off()
        self._timer.cancel()
        self.duty.cut(now)

    def _set(self, state, now):
        self.state = state
        self._since = now

    # -- status -------------------------------------------------------------------------------
    def alarms(self):
        out = []
        if self.state == FORCED:
            out.append("forced")
        if self.held_alarm:
            out.append("held_open")
        if self.tamper_alarm or self.tamper_latched:
            out.append("tamper")
        return out

    def alert(self):
        """What the case's display must say about the lock now, most urgent first (None: nothing).
        Constant strings, no list: the keypad flow asks on every tick."""
        if self.state == RELEASED:
            return RELEASED
        if self.state == FORCED:
            return FORCED
        if self.held_alarm:
            return "held_open"
        if self.tamper_alarm or self.tamper_latched:
            return "tamper"
        return None

    def door_open(self):
        return self._door_open
