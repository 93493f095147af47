# Keypad flows: the shopper's phone number and the staff PIN, with brute-force lockout.
# Pure logic stepped with an explicit clock; it talks to the rest only through the bus, the lock's
# grant() and the display's show(). The phone number lives only in RAM and is wiped after use.
#
# Lockouts stop attackers, not shoppers: wrong staff PINs lock out staff-PIN entry only; wrong
# texted codes lock out shopper entry only, more gently; the help key is never locked out (it is
# rate-limited instead). Every failure is counted on flash before the shopper sees it, so cutting
# the power after "Wrong PIN" gains an attacker nothing (lockcase.safestate).
#
# One module of ~440 lines on purpose: the keypad is one state machine (its states share the
# lockouts, the display and the timeouts), and on a chip every module costs heap of its own.
import sys

from lockcase.compat import const, forget, ticks_add, ticks_diff
from lockcase.safestate import PF, PL, PS, SF, SL, SS

IDLE = "idle"
PHONE = "phone"
STAFF = "staff"
WAIT = "wait"  # waiting for the cloud
CODE = "code"  # typing the one-time code texted to the shopper
MESSAGE = "message"
LOCKOUT = "lockout"  # showing the staff-PIN lockout countdown; shoppers may type over it
OFFLINE = "offline"  # not provisioned or config error: keys do nothing

_MAX_PIN = const(12)
_MAX_DIGITS = const(15)  # phone.MAX_DIGITS, E.164's cap (phone.py loads only while a number is typed)
_CODE_LEN = const(6)
_MSG_MS = const(3000)
# Token bucket for key presses: a person types at most a few keys a second.
_KEY_BURST = const(15)
_KEY_RATE_MS = const(125)  # one token back per 125 ms = 8 keys/s sustained
# A "#" this soon after a code was auto-submitted, or after its answer, is the shopper's habit of
# confirming, not a call for help.
_HASH_QUIET_MS = const(3000)

# The two failure counters: (count, level, length) slots in the SafeState, then config keys.
_STAFF = (SF, SL, SS, "lockout_after", "lockout_base_s")
_SHOP = (PF, PL, PS, "phone_lockout_after", "phone_lockout_s")

_STAFF_OPEN = const(("Staff: open", "the door"))
_ALERTS = {
    "released": ("Open the door", ""),
    "forced": ("Close the door", "Alarm sent"),
    "held_open": ("Close the door", "Door left open"),
    "tamper": ("Case alarm", "Ask an associate"),
}


class Entry:
    def __init__(self, bus, cfg, staff, lock, display, now, cloud=None, store=None):
        self.bus = bus
        self.cfg = cfg
        self.staff = staff
        self.lock = lock
        self.display = display
        self.cloud = cloud  # object with phone(e164), code(digits), help(), reachable(now); or None
        self.country = cfg["country"]
        self.timeout_ms = cfg["entry_timeout_s"] * 1000
        self.help_key = "A" if cfg.get("keypad") == "4x4" else None
        self.buf = bytearray(_MAX_DIGITS if _MAX_DIGITS > _MAX_PIN else _MAX_PIN)
        self.n = 0
        self._keys = 0  # digits typed into this number or code, deleted ones too: "abandoned"'s n
        # ticks of the shopper flow's first key or tap, or None: the grant's wait_ms (lock.t0)
        self._t0 = None
        self.state = IDLE
        self._last_key = now
        self._msg_until = now
        self._after_msg = IDLE
        self._pending_star = False
        if store is None:  # the app passes its own; alone (tests, tools) the flash's record
            from lockcase import recover

            store = recover.load()
        self.store = store
        # ticks when each lockout ends, or None when not locked out
        self._until = [None] * 8  # by SafeState slot: SS and PS are used
        # Deadlines that are None once passed: ticks_ms wraps (every 12.4 days on a chip, 6.2 of
        # them "in the future"), so a deadline kept after it passed would come back to life.
        self._quiet_until = None
        self._help_at = None  # when the last help call went out, while it still rate-limits
        self._alert = None  # the lock's alert() last rendered
        self._greet = _ALERTS["released"]  # what "released" says: staff PINs get their own
        self._tokens = _KEY_BURST
        self._token_t = now
        self._flooding = False
        for k in (SS, PS):
            secs = self.store.get(k)
            if secs > 0:
                # The remaining time is unknown after a reset: the whole lockout starts again.
                self._until[k] = ticks_add(now, min(secs, cfg["lockout_max_s"]) * 1000)
        if self._until[SS] is not None:
            self.state = LOCKOUT
        if not cfg.get("provisioned"):
            self.state = OFFLINE
        self._render(now)

    # -- input ----------------------------------------------------------------------------------
    def key(self, k, now):
        if not self._take_token(now):
            return
        self._last_key = now
        st = self.state
        if st == OFFLINE or st == WAIT:
            return
        if k == "#" and self._quiet_until is not None and (
                st == IDLE or st == LOCKOUT or (st == MESSAGE and self._after_msg == IDLE)):
            return  # the shopper confirming a code that already went: not a help call
        # (After "Wrong code" the '#' leaves the code screen, so a new number can be typed.)
        if st == LOCKOUT:
            self.state = IDLE  # the countdown gives way: shoppers and the help key still work
        elif st == MESSAGE:
            self.state = self._after_msg
        if self.help_key and k == self.help_key:
            self._help(now)
            return
        if self.state == IDLE:
            self._idle_key(k, now)
        elif self.state == PHONE:
            self._phone_key(k, now)
        elif self.state == STAFF:
            self._staff_key(k, now)
        elif self.state == CODE:
            self._code_key(k, now)
        self._render(now)

    def _idle_key(self, k, now):
        if k == "*":
            if self._pending_star:
                self._pending_star = False
                self._clear()
                self.state = STAFF  # also during a lockout: the PIN typed then is swallowed
            else:
                self._pending_star = True
        elif k == "#":
            self._pending_star = False
            if not self.help_key:
                self._help(now)
        elif "0" <= k <= "9":
            self._pending_star = False
            if self._until[PS] is not None:
                self._message(now, "Too many tries", self._wait_text(self._until[PS], now), IDLE)
                return
            self.state = PHONE
            self._keys = 1
            t0 = self._t0
            if t0 is None or ticks_diff(now, t0) >= self.timeout_ms:
                self._t0 = now  # else a tap just asked for this number: the flow began with it
            self._push(k, _MAX_DIGITS)

    def _phone_key(self, k, now):
        if k == "*":
            self._pop()
            if self.n == 0:
                self._abandon(PHONE)
                self.state = IDLE
        elif k == "#":
            self._submit_phone(now)
        elif "0" <= k <= "9":
            self._keys += 1
            self._push(k, _MAX_DIGITS)

    def _staff_key(self, k, now):
        if k == "*":
            if self.n == 0:
                self.state = IDLE
            self._pop()
        elif k == "#":
            pin = bytes(self.buf[: self.n]).decode()
            self._clear()
            until = self._until[SS]
            if until is not None:
                # Not checked, not counted: a lockout means no PIN is tried until it ends.
                self._message(now, "Staff PIN locked", self._wait_text(until, now), IDLE)
                return
            who = self.staff.check_pin(pin) if 4 <= len(pin) <= _MAX_PIN else None
            if who is not None:
                self._success(_STAFF)
                self.bus.emit("staff_ok", who=who)  # not journaled: the grant, if any, says it
                self.open_for_staff(now, who, _STAFF_OPEN)
            else:
                self.bus.emit("denied", source="staff", reason="bad_pin")
                self._failure(now, "Wrong PIN", _STAFF)
        elif "0" <= k <= "9":
            self._push(k, _MAX_PIN)

    def _code_key(self, k, now):
        if k == "*":
            self._pop()
        elif "0" <= k <= "9":
            self._keys += 1
            self._push(k, _CODE_LEN)
            if self.n == _CODE_LEN:
                code = bytes(self.buf[: self.n]).decode()
                self._clear()
                self._quiet_until = ticks_add(now, _HASH_QUIET_MS)
                cloud = self.cloud
                if self.refused(now, "otp") or cloud is None:
                    return
                self.state = WAIT
                self.lock.t0 = self._t0
                cloud.code(code, now)
        elif k == "#" and self.n == 0:
            self._abandon(CODE)
            self._clear()
            self.state = IDLE

    def _submit_phone(self, now):
        digits = bytes(self.buf[: self.n]).decode()
        phone = _phone()  # kept on this frame: _clear() below unloads the module
        if phone is None:  # no memory to load it now: the digits stay, the shopper tries again
            self._message(now, "Busy, sorry", "Press # again", PHONE)
            return
        try:
            e164 = phone.to_e164(digits, self.country)
        except ValueError as exc:
            self._message(now, str(exc), "Check the number", PHONE)
            return
        self._clear()
        print("entry: phone submitted", phone.mask(e164))
        cloud = self.cloud
        if self.refused(now, "phone", last2=phone.last2(e164)) or cloud is None:
            return
        self.state = WAIT
        self.lock.t0 = self._t0
        cloud.phone(e164, now)

    def refused(self, now, source, last2=None):
        """Before a shopper's request goes to the cloud (keypad or reader): a case whose tamper
        alarm is latched serves no shopper, and without a cloud there is no one to ask. Says
        why on the display and as a denied event; True when refused."""
        if self.lock.shoppers_blocked():
            self._message(now, "Case alarm", "Ask an associate", IDLE)
            self.bus.emit("denied", source=source, reason="tamper")
            return True
        # reachable, not available: at boot or while the link reconnects the client holds the
        # request a few seconds instead of refusing it at once.
        if self.cloud is None or not self.cloud.reachable(now):
            self._message(now, "Service offline", "Ask an associate", IDLE)
            if last2 is None:
                self.bus.emit("denied", source=source, reason="offline")
            else:
                self.bus.emit("denied", source=source, reason="offline", last2=last2)
            return True
        return False

    def open_for_staff(self, now, who, greet=_ALERTS["released"]):
        """A staff PIN or badge checked out: open, or say why the lock would not."""
        if self.lock.grant("staff", now, who=who):
            self.state = IDLE
            self._greet = greet  # shown while the coil is energized
            self._render(now)
        elif self.lock.why == "store":
            self._message(now, "Lock fault", "Call service", IDLE)
        else:
            self._message(now, "Lock resting", "try in a minute", IDLE)

    def _help(self, now):
        gap = self.cfg["help_interval_s"] * 1000
        if self._help_at is not None:  # step() clears it once the gap has passed
            # Rate-limited, never locked out: the shopper is told staff are already called.
            self._message(now, "Staff called", self._wait_text(ticks_add(self._help_at, gap), now), IDLE)
            return
        self._help_at = now
        self.bus.emit("help", source="keypad")
        if self.cloud is not None and self.cloud.reachable(now):
            self.state = WAIT
            self._render(now)
            self.cloud.help(now)
            return
        if self.cloud is None:
            # A case without a cloud has no one to call: journaled, and the shopper asks in person.
            self._message(now, "Service offline", "Ask an associate", IDLE)
            return
        # Without the link the event still reaches the store when the link comes back.
        self._message(now, "Associate called", "Please wait", IDLE)

    # -- results from the cloud link (issue: cloud unlocks) --------------------------------------
    def waiting(self, now):
        # A request went to the cloud from elsewhere (a card tap): show it and hold the keypad.
        self._clear()
        self._t0 = self.lock.t0 = now
        self.state = WAIT
        self._render(now)

    def cloud_result(self, kind, now, msg=None, left=None):
        # kind: code_sent, need_phone, granted, denied, denied_code, timeout, offline, help_ok
        # left (denied_code): the tries the cloud still gives the texted code, if it said
        if self._quiet_until is not None:
            self._quiet_until = ticks_add(now, _HASH_QUIET_MS)  # the answer to an auto-submit
        if kind not in ("code_sent", "need_phone", "denied_code"):
            self._t0 = self.lock.t0 = None  # the flow ended (a grant has taken its wait_ms)
        if kind == "code_sent":
            self._clear()
            self.state = CODE
        elif kind == "need_phone":
            self._clear()
            self._message(now, "Not verified:", "type phone no.", IDLE)
        elif kind == "granted":
            self._success(_SHOP)
            self.state = IDLE
            self._greet = _ALERTS["released"]  # shown while the coil is energized
        elif kind == "timeout":
            self._message(now, "No answer", "Press # for help", IDLE)
        elif kind == "offline":
            self._message(now, "Service offline", "Ask an associate", IDLE)
        elif kind == "help_ok":
            self._message(now, "Staff are coming", "Please wait", IDLE)
        elif kind == "denied_code":
            self._failure(now, msg or "Wrong code", _SHOP, left)
            if self.state == MESSAGE and self._until[PS] is None and left != 0:
                self._after_msg = CODE  # the same challenge takes another try
        else:
            self._message(now, msg or "Not allowed", "Ask an associate", IDLE)
        self._render(now)

    # -- time -----------------------------------------------------------------------------------
    def step(self, now):
        q = self._quiet_until
        if q is not None and ticks_diff(now, q) >= 0:
            self._quiet_until = None
        h = self._help_at
        if h is not None and ticks_diff(now, h) >= self.cfg["help_interval_s"] * 1000:
            self._help_at = None
        for k in (SS, PS):
            until = self._until[k]
            if until is not None and ticks_diff(now, until) >= 0:
                self._until[k] = None
                self.store.set(k, 0)
                if k == SS and self.state == LOCKOUT:
                    self.state = IDLE
                    self._render(now)
        alert = self.lock.alert()
        if alert != self._alert:
            if self._alert == "released":
                self._greet = _ALERTS["released"]  # the staff PIN's own greeting ends with its grant
            self._alert = alert
            if self.state == IDLE:
                self._render(now)
        st = self.state
        if st == MESSAGE:
            if ticks_diff(now, self._msg_until) >= 0:
                self.state = self._after_msg
                self._render(now)
            return
        if st == LOCKOUT or (st == STAFF and self._until[SS] is not None):
            self._render(now)  # the countdown
        if st in (PHONE, STAFF, CODE) or self._pending_star:
            if ticks_diff(now, self._last_key) >= self.timeout_ms:
                self._abandon(st)
                self._clear()
                self._pending_star = False
                self.state = IDLE
                self._render(now)

    # -- brute force ----------------------------------------------------------------------------
    def _failure(self, now, text, which, cap=None):
        # Counted on flash before the shopper sees "Wrong PIN": a power cut right after the
        # screen changes must not give the attempt back. cap: the cloud's own tries left for a
        # texted code, when fewer than the case's (the shopper is told the smaller).
        fk, lk, sk, after_key, base_key = which
        st = self.store
        fails = st.get(fk) + 1
        left = self.cfg[after_key] - fails
        # A count the flash refused would be given back by a reset: that try locks out instead.
        if left > 0 and st.set(fk, fails):
            if type(cap) is int and 0 <= cap < left:
                left = cap
            self._message(now, text, "%d %s left" % (left, "try" if left == 1 else "tries") if left else "No tries left",
                          IDLE)
            return
        level = st.get(lk)
        secs = self.cfg[base_key] << (level if level < 16 else 16)
        if secs > self.cfg["lockout_max_s"]:
            secs = self.cfg["lockout_max_s"]
        st.set(fk, 0, lk, level + 1, sk, secs)
        self._until[sk] = ticks_add(now, secs * 1000)
        self._clear()
        if which is _STAFF:
            self.state = LOCKOUT
            self.bus.emit("lockout", s=secs, level=level + 1)
            self._render(now)
        else:
            self.bus.emit("lockout", s=secs, level=level + 1, entry="shopper")
            self._message(now, "Too many tries", self._wait_text(self._until[sk], now), IDLE)

    def _success(self, which):
        # Only its own counter: nothing a shopper does resets the staff-PIN count.
        self.store.set(which[0], 0, which[1], 0)

    def _wait_text(self, until, now):
        left = ticks_diff(until, now) // 1000 + 1
        return "Wait %d:%02d" % (left // 60, left % 60)

    def _take_token(self, now):
        d = ticks_diff(now, self._token_t)
        gained = d // _KEY_RATE_MS
        if d < 0 or gained >= _KEY_BURST:
            # Idle long enough to refill, or so long that ticks_ms wrapped (d < 0): a full bucket.
            self._tokens = _KEY_BURST
            self._token_t = now
        elif gained > 0:
            self._tokens = min(_KEY_BURST, self._tokens + gained)
            self._token_t = ticks_add(self._token_t, gained * _KEY_RATE_MS)
        if self._tokens == 0:
            if not self._flooding:
                self._flooding = True
                self.bus.emit("key_flood")
                self._clear()
                self.state = IDLE if self.state not in (OFFLINE, LOCKOUT) else self.state
            return False
        self._tokens -= 1
        if self._tokens > _KEY_BURST // 2:
            self._flooding = False
        return True

    def _abandon(self, st):
        # A number or code typed and left (timed out, or deleted back to nothing) before it was
        # sent: counted by the store's analytics, with no digit of it, not even the last two.
        if self._keys and (st == PHONE or st == CODE):
            self.bus.emit("abandoned", step=st, n=self._keys if self._keys < 20 else 20)
        self._keys = 0
        self._t0 = self.lock.t0 = None

    # -- buffer ---------------------------------------------------------------------------------
    def _push(self, k, limit):
        if self.n < limit:
            self.buf[self.n] = ord(k)
            self.n += 1

    def _pop(self):
        if self.n:
            self.n -= 1
            self.buf[self.n] = 0

    def _clear(self):
        for i in range(len(self.buf)):
            self.buf[i] = 0
        self.n = 0
        self._keys = 0
        if "lockcase.phone" in sys.modules:
            forget("lockcase.phone")  # the number is gone: its table and code go too (_phone)

    # -- display --------------------------------------------------------------------------------
    def _message(self, now, l1, l2, after):
        self.state = MESSAGE
        self._after_msg = after
        self._msg_until = ticks_add(now, _MSG_MS)
        self._msg = (l1, l2)
        self._render(now)

    def _render(self, now):
        st = self.state
        d = self.display
        if st == IDLE:
            a = self._alert = self.lock.alert()
            if a == "released":
                d.show(*self._greet)
            elif a is not None:
                d.show(*_ALERTS[a])
            else:
                d.show("Phone no. then #", "# = help" if not self.help_key else "A = help")
        elif st == PHONE:
            digits = bytes(self.buf[: self.n]).decode()
            ph = _phone()
            d.show("Phone:", (ph.group(digits, self.country) if ph else digits)[-d.width :])
        elif st == STAFF:
            until = self._until[SS]
            if until is not None:
                d.show("Staff PIN locked", self._wait_text(until, now))
            else:
                d.show("Staff PIN:", "*" * self.n)
        elif st == CODE:
            d.show("Code from SMS:", bytes(self.buf[: self.n]).decode())
        elif st == WAIT:
            d.show("Please wait...", "")
        elif st == MESSAGE:
            d.show(self._msg[0], self._msg[1])
        elif st == LOCKOUT:
            until = self._until[SS]
            d.show("Staff PIN locked", self._wait_text(until, now) if until is not None else "")
        elif st == OFFLINE:
            d.show(*self.offline_text)

    offline_text = ("Not provisioned", "Lock closed")  # type: tuple[str, str]


def _phone():
    # The numbering table and its code (lockcase.phone: about 5 KB of a chip's heap) are loaded
    # while a shopper types a number and unloaded with the digits (_clear), not held by every
    # case all day: the production case's heap is tightest when its cloud link connects
    # (docs/memory.md).
    # None when there is no memory to load it: the caller shows the digits ungrouped, or asks
    # for another '#', and the case keeps running (a MemoryError here would end its loop).
    try:
        from lockcase import phone

        return phone
    except MemoryError:
        forget("lockcase.phone")  # nothing half-loaded is left to be found next time
        print("entry: out of memory loading the phone table")
        return None
