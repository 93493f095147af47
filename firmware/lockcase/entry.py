# Keypad flows: the shopper's phone number and the staff PIN, with brute-force lockout.
# Pure logic stepped with an explicit clock; it talks to the rest only through the bus, the lock's
# grant() and the display's show(). The phone number lives only in RAM and is wiped after use.
import json

from lockcase import phone
from lockcase.compat import const, json_whole, ticks_add, ticks_diff

IDLE = "idle"
PHONE = "phone"
STAFF = "staff"
WAIT = "wait"  # waiting for the cloud
CODE = "code"  # typing the one-time code texted to the shopper
MESSAGE = "message"
LOCKOUT = "lockout"
OFFLINE = "offline"  # not provisioned or config error: keys do nothing

_MAX_PIN = const(12)
_CODE_LEN = const(6)
_MSG_MS = const(3000)
# Token bucket for key presses: a person types at most a few keys a second.
_KEY_BURST = const(15)
_KEY_RATE_MS = const(125)  # one token back per 125 ms = 8 keys/s sustained
LOCKOUT_FILE = "lockout.json"


class Entry:
    def __init__(self, bus, cfg, staff, lock, display, now, cloud=None):
        self.bus = bus
        self.cfg = cfg
        self.staff = staff
        self.lock = lock
        self.display = display
        self.cloud = cloud  # object with phone(e164), code(digits), available(); None = no cloud
        self.country = cfg["country"]
        self.timeout_ms = cfg["entry_timeout_s"] * 1000
        self.help_key = "A" if cfg.get("keypad") == "4x4" else None
        self.buf = bytearray(phone.MAX_DIGITS if phone.MAX_DIGITS > _MAX_PIN else _MAX_PIN)
        self.n = 0
        self.state = IDLE
        self._last_key = now
        self._msg_until = now
        self._after_msg = IDLE
        self._pending_star = False
        self.failures = 0
        self.lockouts = 0
        self._lock_until = now
        self._tokens = _KEY_BURST
        self._token_t = now
        self._flooding = False
        self._restore_lockout(now)
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
        if st == LOCKOUT:
            self._render(now)
            return
        if st == MESSAGE:
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
                self.state = STAFF
            else:
                self._pending_star = True
        elif k == "#":
            self._pending_star = False
            if not self.help_key:
                self._help(now)
        elif "0" <= k <= "9":
            self._pending_star = False
            self.state = PHONE
            self._push(k, phone.MAX_DIGITS)

    def _phone_key(self, k, now):
        if k == "*":
            self._pop()
            if self.n == 0:
                self.state = IDLE
        elif k == "#":
            self._submit_phone(now)
        elif "0" <= k <= "9":
            self._push(k, phone.MAX_DIGITS)

    def _staff_key(self, k, now):
        if k == "*":
            if self.n == 0:
                self.state = IDLE
            self._pop()
        elif k == "#":
            pin = bytes(self.buf[: self.n]).decode()
            self._clear()
            who = self.staff.check_pin(pin) if 4 <= len(pin) <= _MAX_PIN else None
            if who is not None:
                self._success(now)
                if self.lock.grant("staff", now, who=who):
                    self._message(now, "Staff: open", "the door", IDLE)
                else:
                    self._message(now, "Lock resting", "try in a minute", IDLE)
            else:
                self.bus.emit("denied", source="staff", reason="bad_pin")
                self._failure(now, "Wrong PIN")
        elif "0" <= k <= "9":
            self._push(k, _MAX_PIN)

    def _code_key(self, k, now):
        if k == "*":
            self._pop()
        elif "0" <= k <= "9":
            self._push(k, _CODE_LEN)
            if self.n == _CODE_LEN:
                code = bytes(self.buf[: self.n]).decode()
                self._clear()
                if self.cloud is None or not self.cloud.available():
                    self._message(now, "Service offline", "Ask an associate", IDLE)
                    return
                self.state = WAIT
                self.cloud.code(code, now)
        elif k == "#" and self.n == 0:
            self._clear()
            self.state = IDLE

    def _submit_phone(self, now):
        digits = bytes(self.buf[: self.n]).decode()
        try:
            e164 = phone.to_e164(digits, self.country)
        except ValueError as exc:
            self._message(now, str(exc), "Check the number", PHONE)
            return
        self._clear()
        print("entry: phone submitted", phone.mask(e164))
        if self.cloud is None or not self.cloud.available():
            self._message(now, "Service offline", "Ask an associate", IDLE)
            self.bus.emit("denied", source="phone", reason="offline", last2=phone.last2(e164))
            return
        self.state = WAIT
        self.cloud.phone(e164, now)

    def _help(self, now):
        self.bus.emit("help", source="keypad")
        if self.cloud is not None and self.cloud.available():
            self.state = WAIT
            self._render(now)
            self.cloud.help(now)
            return
        # Without the cloud the event still reaches the store when the link comes back.
        self._message(now, "Associate called", "Please wait", IDLE)

    # -- results from the cloud link (issue: cloud unlocks) --------------------------------------
    def waiting(self, now):
        # A request went to the cloud from elsewhere (a card tap): show it and hold the keypad.
        self._clear()
        self.state = WAIT
        self._render(now)

    def cloud_result(self, kind, now, msg=None):
        # kind: code_sent, need_phone, granted, denied, denied_code, timeout, offline, help_ok
        if kind == "code_sent":
            self._clear()
            self.state = CODE
        elif kind == "need_phone":
            self._clear()
            self._message(now, "Not verified:", "type phone no.", IDLE)
        elif kind == "granted":
            self._success(now)
            self._message(now, "Open the door", "", IDLE)
        elif kind == "timeout":
            self._message(now, "No answer", "Press # for help", IDLE)
        elif kind == "offline":
            self._message(now, "Service offline", "Ask an associate", IDLE)
        elif kind == "help_ok":
            self._message(now, "Staff are coming", "Please wait", IDLE)
        elif kind == "denied_code":
            self._failure(now, msg or "Wrong code")
            if self.state == MESSAGE:
                self._after_msg = CODE  # the same challenge takes another try
        else:
            self._message(now, msg or "Not allowed", "Ask an associate", IDLE)
        self._render(now)

    # -- time -----------------------------------------------------------------------------------
    def step(self, now):
        st = self.state
        if st == MESSAGE and ticks_diff(now, self._msg_until) >= 0:
            self.state = self._after_msg
            self._render(now)
        elif st == LOCKOUT:
            if ticks_diff(now, self._lock_until) >= 0:
                self.state = IDLE
                self._save_lockout(0)
            self._render(now)
        elif st in (PHONE, STAFF, CODE) or self._pending_star:
            if ticks_diff(now, self._last_key) >= self.timeout_ms:
                self._clear()
                self._pending_star = False
                self.state = IDLE
                self._render(now)

    # -- brute force ----------------------------------------------------------------------------
    def _failure(self, now, text):
        self.failures += 1
        left = self.cfg["lockout_after"] - self.failures
        if left > 0:
            self._message(now, text, "%d tries left" % left, IDLE)
            return
        secs = self.cfg["lockout_base_s"] << self.lockouts
        if secs > self.cfg["lockout_max_s"]:
            secs = self.cfg["lockout_max_s"]
        self.lockouts += 1
        self.failures = 0
        self._lock_until = ticks_add(now, secs * 1000)
        self.state = LOCKOUT
        self._clear()
        self.bus.emit("lockout", s=secs, level=self.lockouts)
        self._save_lockout(secs)

    def _success(self, now):
        self.failures = 0
        self.lockouts = 0

    def _save_lockout(self, secs):
        # Survives a reset so pulling the power does not reset the backoff.
        try:
            with open(LOCKOUT_FILE, "w") as f:
                f.write(json.dumps({"s": secs, "level": self.lockouts}))
        except OSError:
            pass

    def _restore_lockout(self, now):
        try:
            with open(LOCKOUT_FILE) as f:
                d = json_whole(f.read(64))  # a few dozen bytes; longer is corrupt anyway
            secs = int(d.get("s", 0))
            self.lockouts = int(d.get("level", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return
        if secs > 0:
            self._lock_until = ticks_add(now, min(secs, self.cfg["lockout_max_s"]) * 1000)
            self.state = LOCKOUT

    def _take_token(self, now):
        gained = ticks_diff(now, self._token_t) // _KEY_RATE_MS
        if gained > 0:
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
            d.show("Phone no. then #", "# = help" if not self.help_key else "A = help")
        elif st == PHONE:
            digits = bytes(self.buf[: self.n]).decode()
            d.show("Phone:", phone.group(digits, self.country)[-d.width :])
        elif st == STAFF:
            d.show("Staff PIN:", "*" * self.n)
        elif st == CODE:
            d.show("Code from SMS:", bytes(self.buf[: self.n]).decode())
        elif st == WAIT:
            d.show("Please wait...", "")
        elif st == MESSAGE:
            d.show(self._msg[0], self._msg[1])
        elif st == LOCKOUT:
            left = ticks_diff(self._lock_until, now) // 1000 + 1
            d.show("Keypad locked", "Wait %d:%02d" % (left // 60, left % 60))
        elif st == OFFLINE:
            d.show(*self.offline_text)

    offline_text = ("Not provisioned", "Lock closed")  # type: tuple[str, str]
