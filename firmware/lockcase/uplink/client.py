# The case's side of the cloud protocol (docs/protocol.md): shopper requests with correlation ids
# and timeouts, journal events delivered at least once and removed only when the cloud acks them,
# commands from the cloud (app unlock, relock, staff, config), and status. The link below it may
# be down at any time: every path here works, or fails with a message, without it.
from lockcase.compat import const, forget, ticks_add, ticks_diff

_BATCH_BYTES = const(520)  # events JSON per message; the envelope escapes it to under 1024
_EVT_RETRY_MS = const(10000)
_BEAT_MS = const(60000)
# The greeting (hello) is repeated until a time cmd answers it: the cloud's worker may not have
# been listening when we connected (docs/provisioning.md starts the cloud before the broker).
_HELLO_MIN_MS = const(2000)
_HELLO_MAX_MS = const(60000)
# A request made while the link is not ready yet but expected shortly is held this long.
_HOLD_MS = const(3000)
_BOOT_GRACE_MS = const(10000)  # the first link comes up within this after boot
_GREET_GRACE_MS = const(10000)  # a new connection's greeting is normally answered within this

# deny reasons -> the 16-char line the shopper sees
_WHY = {
    "flagged": "Not allowed",
    "unknown": "Card not known",
    "no_guests": "Members only",
    "bad_number": "Check the number",
    "bad_code": "Wrong code",
    "expired": "Code expired",
    "rate_limited": "Too many tries",
    "unavailable": "Service busy",
}


# Lock.why -> what the shopper sees, and the ack's err, when an allowed unlock did not happen.
_REFUSED = {"tamper": "Case alarm", "store": "Lock fault"}
_ACK_ERR = {"tamper": "tamper", "store": "lock_fault"}


class CloudClient:
    def __init__(self, cfg, codec, topics, link, bus, lock, journal, uptime, log=print):
        self.codec = codec
        self.topics = topics
        self.link = link
        self.bus = bus
        self.lock = lock
        self.journal = journal
        self.uptime = uptime  # () -> ms since boot, for the heartbeat
        self.log = log
        self.entry = None  # set by the app: results go to entry.cloud_result()
        self.timeout_ms = cfg.get("request_timeout_s", 8) * 1000
        self.fw = cfg.get("fw", "")
        self.rel = cfg.get("rel", "")  # the running release's id (docs/ota.md), "" if deployed
        self.ota = None  # lockcase.ota.update.Ota while an update is in progress or on trial
        self.app = None  # set by startup: the OTA self-test looks at it
        self.boot = cfg.get("boot", "")
        self._pending = None  # (id, kind, deadline) of the one request in flight
        self._sid = None  # challenge session from the last "challenge" reply
        self._need = None  # what it asked for: "code" or "phone"
        self._sid_until = 0  # ... valid until then (its ttl), so a later shopper never inherits it
        self._src = "phone"
        self._evt_upto = 0  # highest event id in the batch in flight
        self._evt_ids = None
        self._evt_deadline = 0
        self._beat_at = 0
        self.greeted = False  # a time cmd answered one of our hellos on this connection
        self.hellos = 0  # hellos sent (status, tests)
        self._hello_wait = _HELLO_MIN_MS
        self._hello_due = 0
        self._hello_sched = False  # _hello_due is set (a step has seen the connection)
        self._up_ms = 0  # uptime() when the link last came up
        self._held = None  # the one request waiting for the link (its body), or None
        self._held_until = 0
        self.rejected = 0
        self.last_reject = None
        # Staff credentials not confirmed by the cloud within staff_confirm_s are still honoured
        # (staff must open offline) but each use is journaled (docs/safety.md). Unknown after a
        # boot until the cloud confirms; a deadline dropped once passed, so ticks' wrap is harmless.
        self._confirm_ms = cfg.get("staff_confirm_s", 86400) * 1000
        self._fresh_until = None
        self._insync = False  # the cloud last said our state version is the one it wants
        bus.subscribe(self._granted, ("granted",))

    def available(self):
        return self.link.up and self.codec.synced

    def reachable(self, now):
        """True when a request made now can be expected to reach the cloud: the link is up and
        synced, or about to be (the case booted less than 10 s ago, a connect attempt is under
        way, or a new connection is being greeted). A request made while reachable but not
        available is held for up to 3 s (see _request), so a card tapped at boot waits."""
        if self.link.up and self.codec.synced:
            return True
        up = self.uptime()
        if up < _BOOT_GRACE_MS or self.link.connecting:
            return True
        return self.link.up and not self.greeted and up - self._up_ms < _GREET_GRACE_MS

    # -- requests from the keypad / NFC ---------------------------------------------------------
    def _session(self, now):
        if self._sid is not None and ticks_diff(now, self._sid_until) >= 0:
            self._sid = None
        return self._sid

    def phone(self, e164, now):
        body = {"t": "phone", "num": e164}
        sid = self._session(now)
        if sid is not None and self._need == "phone":
            body["sid"] = sid  # answering a "need phone" challenge for a loyalty card
        else:
            # A number typed after a code was texted (a wrong code, another shopper) starts a new
            # session: sent with the old one, the cloud would answer "Code expired".
            self._sid = None
        self._request(body, now)

    def code(self, digits, now):
        self._request({"t": "otp", "sid": self._session(now) or "", "code": digits}, now)

    def token(self, tok, src, now):
        self._sid = None
        self._src = src
        self._request({"t": "token", "tok": tok, "src": src}, now)

    def help(self, now):
        self._request({"t": "help", "why": "keypad"}, now)

    def _request(self, body, now):
        if body["t"] == "phone" and "sid" not in body:
            self._src = "phone"
        self._held = None  # a newer request supersedes one still waiting for the link
        if not self.available():
            if self.reachable(now):
                # Held (one at most: a newer request replaces it) and sent from step() once the
                # link is synced, or answered "offline" at the deadline. Only the body is kept.
                self._held = body
                self._held_until = ticks_add(now, _HOLD_MS)
                return
            self._result("offline", now)
            return
        self._send(body, now)

    def _send(self, body, now):
        try:
            payload = self.codec.sign(self.topics["req"], body)
        except MemoryError:  # the shopper hears "offline" now, not after the request's timeout
            self.link.nomem("request")
            payload = None
        if payload is None:
            self._result("offline", now)
            return
        # In flight before the publish: the answer must find it whenever it is delivered, even
        # inside publish() (umqtt.simple's own publish reads and hands over what arrives while it
        # waits for a PUBACK; the transport's no longer waits, but a link may).
        self._pending = (body["id"], body["t"], ticks_add(now, self.timeout_ms))
        if not self.link.publish(self.topics["req"], payload):
            self._pending = None
            self._result("offline", now)

    def _result(self, kind, now, msg=None, left=None):
        if self.entry is not None:
            self.entry.cloud_result(kind, now, msg, left)

    # -- incoming -------------------------------------------------------------------------------
    def on_message(self, topic, payload, now):
        from lockcase.uplink.codec import Rejected

        try:
            body = self.codec.open(topic, payload)
        except Rejected as exc:
            # Dropped without an answer (an answer would be an oracle); counted and logged.
            self.rejected += 1
            self.last_reject = exc.reason
            self.log("cloud: dropped message: " + exc.reason)
            return
        kind = topic[topic.rfind("/") + 1 :]
        t = body["t"]
        if kind == "rep":
            try:
                self._reply(body, now)
            finally:
                self.codec.flush()  # after the coil: the seq window's write is not on the tap's path
        elif kind == "evtack":
            try:
                self._evtack(body)
            finally:
                self.codec.flush()
        elif kind == "cmd" and t != "time":
            self._command(body, now)
        elif t == "time":
            self.log("cloud: clock synced")
            self.greeted = True
            self._insync = body.get("sv", 0) == self._sv()
            self._beat_at = now  # a beat at once tells the cloud we are synced

    def _reply(self, body, now):
        o = self.ota
        if o is not None and o.reply(body, now):  # a chunk of a release (fwdata, deny)
            return
        p = self._pending
        if p is None or body["re"] != p[0]:
            self.log("cloud: reply to no request in flight")
            return
        self._pending = None
        t = body["t"]
        if t == "allow":
            self._sid = None
            if self.lock.grant(self._src, now, who=body["grant"]):
                self._result("granted", now)
            else:
                self._result("denied", now, _REFUSED.get(self.lock.why, "Lock resting"))
        elif t == "challenge":
            self._sid = body["sid"]
            self._need = body["need"]
            self._sid_until = ticks_add(now, body["ttl"] * 1000)
            self._result("code_sent" if body["need"] == "code" else "need_phone", now)
        elif t == "deny":
            why = body["why"]
            msg = _WHY.get(why, "Not allowed")
            if why == "bad_code":
                # `left`: the tries the cloud still gives this texted code (docs/protocol.md)
                self._result("denied_code", now, msg, body.get("left"))
            else:
                self._sid = None
                self._result("denied", now, msg)
            self.bus.emit("denied", source=self._src, reason=why)
        elif t == "ok":
            self._result("help_ok", now)

    def _command(self, body, now):
        t = body["t"]
        ok, err = True, None
        if t == "unlock":
            ok = self.lock.grant("app", now, who=body["grant"])
            err = None if ok else _ACK_ERR.get(self.lock.why, "duty_limited")
        elif t == "relock":
            self.lock.relock(now, reason="cloud")
        elif t == "reset_tamper":
            # Staff who checked the case clear its tamper latch from the console; refused while
            # the enclosure switch is still open.
            if not self.lock.clear_tamper(body.get("by") or "cloud") and self.lock.tamper_alarm:
                ok, err = False, "tamper_open"
        elif t == "fw":
            ok, err = self._fw(body, now)
        elif t in ("staff", "config", "state"):
            try:
                from lockcase import remote_config

                staff = self.entry.staff if self.entry else None
                if t != "state":
                    remote_config.apply(t, body, staff)
                elif remote_config.state(body, staff):
                    self._insync = True
                    self._beat_at = now  # the cloud learns the applied version at once
                else:
                    self._insync = body["sv"] == self._sv()
            except ValueError as exc:
                ok, err = False, "bad_config: %s" % exc
            if remote_config.idle():  # never while a state's parts are arriving, whatever came
                # Rare (a staff change, a new state version): its code and the config validator's
                # (about 9 KB of a chip's heap) are loaded again when the next one comes.
                forget("lockcase.remote_config")
                forget("lockcase.config")
        ack = {"t": "ack", "re": body["id"], "ok": ok}
        if err:
            ack["err"] = err
        if t == "state":
            ack["sv"] = body["sv"]  # so that the cloud knows which version was refused
        self.link.publish(self.topics["ack"], self.codec.sign(self.topics["ack"], ack))

    def _fw(self, body, now):
        # An over-the-air update (docs/ota.md): its code loads now and goes once it is done.
        try:
            o = self.ota
            if o is None:
                from lockcase.ota.update import Ota

                o = self.ota = Ota(self)
            return o.command(body, now)
        except (OSError, MemoryError) as exc:  # the flash or the heap: the cloud asks again later
            self.log("ota: %r" % (exc,))
            return False, "busy"

    def _evtack(self, body):
        ids = self._evt_ids
        if ids is None:
            return
        got = body["ids"]
        if all(i in got for i in ids):
            self.journal.ack(self._evt_upto)
            self._evt_ids = None

    # -- time -----------------------------------------------------------------------------------
    def _sv(self):
        staff = self.entry.staff if self.entry else None
        return staff.v if staff else 0

    def _granted(self, _kind, d):
        if d.get("source") == "staff" and self._fresh_until is None:
            self.bus.emit("staff_unconfirmed", who=d.get("who"))

    def step(self, now):
        # Out of memory here must not end the app loop (main.py would reset the case): the beat,
        # hello or event batch that could not be sent is sent by a later step.
        try:
            self._step(now)
        except MemoryError:
            self.link.nomem("send")

    def _step(self, now):
        f = self._fresh_until
        if self._insync and self.available():
            self._fresh_until = ticks_add(now, self._confirm_ms)
        elif f is not None and ticks_diff(now, f) >= 0:
            self._fresh_until = None
        self._session(now)  # drops an expired session: kept, ticks_ms's wrap would revive it
        p = self._pending
        if p is not None and ticks_diff(now, p[2]) >= 0:
            self._pending = None
            self._result("timeout", now)
        o = self.ota
        if o is not None and not o.step(now):  # also offline: a release on trial may roll back
            self.ota = None
            o.unload()
        h = self._held
        if h is not None:
            if self.available():
                self._held = None
                self._send(h, now)
            elif ticks_diff(now, self._held_until) >= 0:
                self._held = None
                self.bus.emit("denied", source=self._src, reason="offline")
                self._result("offline", now)
        if not self.link.up:
            return
        if not self.greeted:
            self._greet(now)
        # Heartbeats go out while connected even unsynced (saying so), so the cloud sees the case.
        if self._beat_at is None or ticks_diff(now, self._beat_at) >= 0:
            self._beat_at = ticks_add(now, _BEAT_MS)
            self._beat()
        if self.codec.synced:
            self._send_events(now)

    def _greet(self, now):
        # Repeats the hello until a time cmd answers one: 2 s doubling to 60 s, each wait drawn
        # from its upper half so a store's cases do not greet in step.
        if self._hello_sched and ticks_diff(now, self._hello_due) < 0:
            return
        if self._hello_sched:
            self._hello()
        w = self._hello_wait
        self._hello_wait = w * 2 if w < _HELLO_MAX_MS // 2 else _HELLO_MAX_MS
        import os

        self._hello_due = ticks_add(now, w // 2 + (w // 2) * os.urandom(1)[0] // 255)
        self._hello_sched = True

    def on_down(self):
        # The connection is closed: no answer to its hellos may sync the clock, even one that the
        # next connection delivers as it subscribes (before on_up).
        self.codec.forget_hellos()

    def on_up(self):
        # A new connection: introduce ourselves (the answer syncs the clock) and resend events.
        # step() repeats the hello until one of this connection's is answered (the codec takes
        # the answer to any of its last few, not only the newest: docs/protocol.md "Clock"); an
        # answer to a hello of an earlier connection no longer counts.
        self.codec.forget_hellos()
        self._evt_ids = None
        self.greeted = False
        self._hello_wait = _HELLO_MIN_MS
        self._hello_sched = False
        self._up_ms = self.uptime()
        self._beat_at = None  # a beat at the next step
        self._hello()

    def _hello(self):
        self.hellos += 1
        body = {"t": "hello", "fw": self.fw, "rel": self.rel, "boot": self.boot, "sv": self._sv()}
        self.link.publish(self.topics["status"], self.codec.sign(self.topics["status"], body))

    def _beat(self):
        st = self.lock.state
        # "synced": false tells the cloud this beat's exp is from an unset clock (protocol.md).
        body = {"t": "beat", "up": self.uptime() // 1000, "lock": st, "synced": self.codec.synced, "sv": self._sv(),
                "rel": self.rel, "door": "open" if self.lock.door_open() else "closed"}
        self.link.publish(self.topics["status"], self.codec.sign(self.topics["status"], body))

    def _send_events(self, now):
        j = self.journal
        if j is None:
            return
        if self._evt_ids is not None and ticks_diff(now, self._evt_deadline) < 0:
            return
        import json

        evts = []
        size = 0
        upto = 0
        for rec in j.records(0, 12):
            d = {}
            for k in rec:
                if k not in ("id", "ts", "type"):
                    d[k] = rec[k]
            e = {"i": str(rec["id"]), "k": rec["type"], "ts": rec["ts"]}
            if d:
                e["d"] = d
            n = len(json.dumps(e)) + 1
            if evts and size + n > _BATCH_BYTES:
                break
            evts.append(e)
            size += n
            upto = rec["id"]
        if not evts:
            self._evt_ids = None
            return
        body = {"t": "evts", "evts": evts}
        try:
            payload = self.codec.sign(self.topics["evt"], body)
        except ValueError:
            # One event too big for a message (should not happen): drop it rather than block.
            self.journal.ack(upto)
            return
        if self.link.publish(self.topics["evt"], payload):
            self._evt_ids = [e["i"] for e in evts]
            self._evt_upto = upto
            self._evt_deadline = ticks_add(now, _EVT_RETRY_MS)
