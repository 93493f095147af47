"""Who may open a case: one-time codes, rate limits with escalation, loyalty decisions.

Pure decisions over the database and the adapters; the clock is injected so tests can fake it.
Every decision is also journaled as a cloud event (member id and last two digits only).

- A typed phone number proves nothing by itself (anyone can type one): it is always challenged
  with a 6-digit code texted to it, valid `otp_ttl_s`, `otp_tries` tries, stored hashed.
- A loyalty token (card, NFC, app) identifies a member: trusted members are allowed at once,
  other members must type their number and then the texted code, flagged members are refused.
- Rate limits per number, member, case and store; a key refused `abuse_after` times in a window
  raises one alert to the store's staff.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from casecloud import db, metrics
from casecloud.adapters.loyalty import Holder, Loyalty, LoyaltyError
from casecloud.adapters.notify import Notifier
from casecloud.adapters.sms import SmsError, SmsSender
from casecloud.alertdelivery import AlertDelivery
from casecloud.alerts import Alerts
from casecloud.models import Case, Challenge, Event, Member, Store
from casecloud.phones import to_e164
from casecloud.privacy import Hasher, last2, mask
from casecloud.ratelimit import RateLimits
from casecloud.settings import Settings

log = logging.getLogger("casecloud.policy")


@dataclass
class Reply:
    t: str  # allow | challenge | deny | ok: the rep type sent to the case
    fields: dict[str, Any] = field(default_factory=dict)
    member_id: str | None = None
    # (E.164, text) to send once the decision is committed; memory only, never stored
    text: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def why(self) -> str | None:
        return self.fields.get("why")


def deny(why: str, **extra: Any) -> Reply:
    return Reply("deny", {"why": why, **extra})


_EVENTS = cast(Table, Event.__table__)
_JOURNAL = _EVENTS.insert()  # built once: building it cost half of what running it does


def _write_journal(s: Session) -> None:
    rows = db.scratch(s).pop("journal", [])
    if rows:
        s.connection().execute(_JOURNAL, rows)


class Policy:
    def __init__(
        self,
        settings: Settings,
        hasher: Hasher,
        sms: SmsSender,
        loyalty: Loyalty,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.hasher = hasher
        self.sms = sms
        self.loyalty = loyalty
        self.notifier = notifier
        self.clock = clock
        self.rates = RateLimits(settings, self.now)
        self.delivery = AlertDelivery(notifier)
        self.alerts = Alerts(settings, clock, self.delivery.queue, self.delivery.busy)

    def now(self) -> int:
        return int(self.clock())

    # --- rate limits (ratelimit.py counts; the decisions on them are here) -----------------

    def _count(self, s: Session, scope: str, key: str) -> int:
        return self.rates.count(s, scope, key)

    def _record(self, s: Session, scope: str, key: str) -> None:
        self.rates.record(s, scope, key)

    def _limits(self, s: Session, store: Store, case: Case, checks: list[tuple[str, str, int]]) -> Reply | None:
        for scope, key, limit in checks:
            if not self.rates.hit(s, scope, key, limit):
                self._abuse(s, store, case, scope, key)
                return deny("rate_limited")
        return None

    def _abuse(self, s: Session, store: Store, case: Case, scope: str, key: str) -> None:
        self._record(s, "abuse:" + scope, key)
        if self._count(s, "abuse:" + scope, key) < self.settings.abuse_after:
            return
        if self._count(s, "alerted:" + scope, key) > 0:
            return  # one alert per key per window
        self._record(s, "alerted:" + scope, key)
        who = {"phone": "one phone number", "member": "one member", "case": "this case", "store": "this store"}
        self._alert(s, store, case, "abuse", f"repeated requests refused for {who.get(scope, scope)}")

    # Junk at the public app unlock (an unknown or malformed token, or an unknown case) proves
    # nothing and names no shopper, so it is charged to its client address and to a fleet-wide
    # budget, never to a case's or a store's: junk cannot lock shoppers out. Past the fleet budget
    # only addresses that sent junk in the window are refused, so a spread flood does not lock
    # out members either.

    def _junk_blocked(self, s: Session, client: str) -> bool:
        st = self.settings
        mine = self._count(s, "junk_ip", client)
        return mine >= st.rate_junk_client or (mine > 0 and self._count(s, "junk", "*") >= st.rate_junk)

    def _junk(self, s: Session, client: str, why: str = "refused") -> Reply:
        self._record(s, "junk_ip", client)
        self._record(s, "junk", "*")
        if self._count(s, "junk_ip", client) == self.settings.rate_junk_client + 1:
            log.warning("app unlock: client %s is over its junk budget", client)
        return deny(why)

    # Wrong one-time codes, per number, case, store and fleet: an attacker rotating numbers and
    # cases still meets the store's and the fleet's. Past a limit a code is refused unchecked, so
    # a guess stops being a chance.

    def _wrong_code_keys(self, store: Store, case: Case, phone_hash: str | None) -> list[tuple[str, str, int]]:
        st = self.settings
        return [("bad_p", phone_hash or "-", st.rate_bad_phone), ("bad_c", case.id, st.rate_bad_case),
                ("bad_s", store.id, st.rate_bad_store), ("bad_f", "*", st.rate_bad_fleet)]

    def _guesses_closed(self, s: Session, store: Store, case: Case, phone_hash: str | None) -> bool:
        """Also asked before texting a code: one that could not be checked is not worth a text."""
        return any(self._count(s, scope, key) >= limit
                   for scope, key, limit in self._wrong_code_keys(store, case, phone_hash))

    def _wrong_code(self, s: Session, store: Store, case: Case, ch: Challenge) -> None:
        for scope, key, _ in self._wrong_code_keys(store, case, ch.phone_hash):
            self._record(s, scope, key)
        n = self._count(s, "bad_s", store.id)
        if n >= self.settings.wrong_code_alert and not self._count(s, "alerted:bad_s", store.id):
            self._record(s, "alerted:bad_s", store.id)
            self._alert(s, store, case, "wrong_codes",
                        f"{n} wrong codes in this store within {self.settings.rate_window_s // 60} minutes")
        if self._count(s, "bad_f", "*") >= self.settings.rate_bad_fleet and not self._count(s, "alerted:bad_f", "*"):
            self._record(s, "alerted:bad_f", "*")
            self._alert(s, store, case, "wrong_codes", "wrong codes reached the fleet-wide limit: codes are "
                        "refused unchecked everywhere until the window passes")

    def _alert(self, s: Session, store: Store, case: Case | None, kind: str, detail: str) -> None:
        # written when the transaction commits and queued for delivery after it (alerts.py): a
        # rolled back batch raises nothing
        self.alerts.raise_(s, store.id, case.id if case else None, kind, detail, self.now())

    @property
    def alerts_pending(self) -> bool:
        return self.delivery.pending

    def after_commit(self, sessions: sessionmaker[Session], r: Reply) -> Reply:
        """Side effects of a committed decision, outside any transaction (no HTTP call holds a
        database lock): texts the code, delivers alerts. A text that cannot be sent turns the
        challenge into a refusal."""
        if r.text is not None:
            (e164, text), r.text = r.text, None
            try:
                self.sms.send(e164, text)
                metrics.SMS.labels("sent").inc()
            except SmsError as e:
                metrics.SMS.labels("failed").inc()
                log.warning("code to %s not sent: %s", mask(e164), e)
                with sessions.begin() as s:
                    ch = s.get(Challenge, r.fields["sid"])
                    if ch is not None:
                        ch.done = True
                        case = s.get(Case, ch.case_id)
                        if case is not None:
                            self.journal(s, case, "deny", member_id=ch.member_id, why="unavailable", via="sms")
                r = deny("unavailable")
        # A help call is answered once its alert is committed and handed to delivery: a webhook
        # being retried must not leave the shopper at "No answer".
        self.flush_alerts(sessions, wait=False)
        return r

    def flush_alerts(self, sessions: sessionmaker[Session], *, wait: bool = True) -> None:
        """Deliver the alerts raised by committed transactions (alertdelivery.py); wait: until
        they are delivered or given up."""
        self.delivery.flush(sessions, wait=wait)

    def wait_alerts(self, timeout: float | None = None) -> None:
        """Until every delivery handed over so far is done (tests, tools, shutdown)."""
        self.delivery.wait(timeout)

    # --- journal ---------------------------------------------------------------------------

    def journal(self, s: Session, case: Case, kind: str, *, member_id: str | None = None,
                phone_last2: str | None = None, **data: Any) -> None:
        """Record a decision. Written with one multi-row insert when the transaction commits."""
        now = self.now()
        sc = db.scratch(s)
        rows: list[dict[str, Any]] | None = sc.get("journal")
        if rows is None:
            rows = sc["journal"] = []
            db.before_commit(s, _write_journal)
        rows.append({"store_id": case.store_id, "case_id": case.id, "event_id": "c-" + secrets.token_hex(8),
                     "source": "cloud", "kind": kind, "ts": now, "received_at": now, "member_id": member_id,
                     "phone_last2": phone_last2, "data": data})

    def late(self, s: Session, case: Case, t: str, late_ms: int) -> None:
        """A request whose deadline passed before it could be decided (backpressure.py): its case
        has shown "No answer", so it is journaled as such, neither decided nor rate-counted."""
        self.journal(s, case, "late", t=t, late_ms=late_ms)

    def _refuse(self, s: Session, case: Case, r: Reply, **data: Any) -> Reply:
        self.journal(s, case, "deny", member_id=r.member_id, why=r.why, **data)
        return r

    # --- decisions -------------------------------------------------------------------------

    def _common_limits(self, s: Session, store: Store, case: Case) -> Reply | None:
        st = self.settings
        return self._limits(s, store, case, [("case", case.id, st.rate_case), ("store", store.id, st.rate_store)])

    def on_phone(self, s: Session, store: Store, case: Case, num: str, sid: str | None = None) -> Reply:
        e164 = to_e164(num, store.country)
        if e164 is None:
            return self._refuse(s, case, deny("bad_number"), via="phone")
        limited = self._common_limits(s, store, case)
        if limited:
            return self._refuse(s, case, limited, via="phone")
        phone_hash = self.hasher.phone(e164)
        member: Member | None
        if sid is not None:
            ch = s.get(Challenge, sid)
            if ch is None or ch.case_id != case.id or ch.need != "phone" or ch.done or self.now() > ch.expires_at:
                return self._refuse(s, case, deny("expired"), via="phone")
            member = s.get(Member, ch.member_id) if ch.member_id else None
            if member is None or member.phone_hash != phone_hash:
                ch.tries_left -= 1
                ch.done = ch.tries_left <= 0
                r = deny("bad_number", left=max(ch.tries_left, 0))
                r.member_id = ch.member_id
                return self._refuse(s, case, r, via="token")
            ch.done = True
        else:
            try:
                member = self.loyalty.by_phone(s, e164)
            except LoyaltyError as e:
                log.warning("loyalty lookup failed: %s", e)
                metrics.LOYALTY_FAILURES.inc()
                return self._refuse(s, case, deny("unavailable"), via="phone")
            if member is not None and member.status == "flagged":
                r = deny("flagged")
                r.member_id = member.id
                return self._refuse(s, case, r, via="phone")
            if member is None and not store.guests_allowed:
                return self._refuse(s, case, deny("no_guests"), via="phone")
        checks = [("phone", phone_hash, self.settings.rate_phone)]
        if member is not None:
            checks.insert(0, ("member", member.id, self.settings.rate_member))
        # the windows asked next, read in one statement
        self.rates.want(s, [(sc, k) for sc, k, _ in checks + self._wrong_code_keys(store, case, phone_hash)])
        limited = self._limits(s, store, case, checks)
        if limited is None and self._guesses_closed(s, store, case, phone_hash):
            limited = deny("rate_limited")
        if limited:
            limited.member_id = member.id if member else None
            return self._refuse(s, case, limited, via="phone")
        return self._text_code(s, case, e164, phone_hash, member)

    def _text_code(self, s: Session, case: Case, e164: str, phone_hash: str, member: Member | None) -> Reply:
        st = self.settings
        sid = secrets.token_hex(8)
        code = f"{secrets.randbelow(10**6):06d}"
        ch = Challenge(sid=sid, case_id=case.id, member_id=member.id if member else None, need="code",
                       phone_hash=phone_hash, phone_last2=last2(e164), code_hash=self.hasher.code(sid, code),
                       tries_left=st.otp_tries, expires_at=self.now() + st.otp_ttl_s, created_at=self.now())
        s.add(ch)
        self.journal(s, case, "challenge", member_id=ch.member_id, phone_last2=ch.phone_last2, need="code")
        text = f"Your LockCase code: {code}. It expires in {max(st.otp_ttl_s // 60, 1)} minutes."
        return Reply("challenge", {"sid": sid, "need": "code", "ttl": st.otp_ttl_s, "last2": last2(e164)},
                     member_id=ch.member_id, text=(e164, text))

    def on_otp(self, s: Session, store: Store, case: Case, sid: str, code: str) -> Reply:
        limited = self._common_limits(s, store, case)
        if limited:
            return self._refuse(s, case, limited, via="otp")
        ch = s.get(Challenge, sid)
        if ch is None or ch.case_id != case.id or ch.need != "code" or ch.done or self.now() > ch.expires_at:
            return self._refuse(s, case, deny("expired"), via="otp")
        if self._guesses_closed(s, store, case, ch.phone_hash):
            r = deny("rate_limited")
            r.member_id = ch.member_id
            self.journal(s, case, "deny", member_id=ch.member_id, phone_last2=ch.phone_last2, why="rate_limited",
                         via="otp")
            return r
        if not hmac.compare_digest(self.hasher.code(sid, code), ch.code_hash or ""):
            ch.tries_left -= 1
            ch.done = ch.tries_left <= 0
            r = deny("bad_code", left=max(ch.tries_left, 0))
            r.member_id = ch.member_id
            self.journal(s, case, "deny", member_id=ch.member_id, phone_last2=ch.phone_last2, why="bad_code",
                         via="otp")
            self._wrong_code(s, store, case, ch)
            return r
        ch.done = True
        member = s.get(Member, ch.member_id) if ch.member_id else None
        if member is not None and member.status == "flagged":  # flagged while the code was on its way
            r = deny("flagged")
            r.member_id = member.id
            return self._refuse(s, case, r, via="otp")
        return self._allow(s, case, ch.member_id, ch.phone_last2, via="otp")

    def _allow(self, s: Session, case: Case, member_id: str | None, phone_last2: str | None, via: str) -> Reply:
        grant = "g_" + secrets.token_hex(6)
        self.journal(s, case, "allow", member_id=member_id, phone_last2=phone_last2, grant=grant, via=via)
        return Reply("allow", {"grant": grant}, member_id=member_id)

    def on_token(self, s: Session, store: Store, case: Case, tok: str, src: str) -> Reply:
        limited = self._common_limits(s, store, case)
        if limited:
            return self._refuse(s, case, limited, via=src)
        try:
            member = self.loyalty.by_token(s, tok, src)
        except LoyaltyError as e:
            log.warning("loyalty lookup failed: %s", e)
            metrics.LOYALTY_FAILURES.inc()
            return self._refuse(s, case, deny("unavailable"), via=src)
        if member is None:
            return self._refuse(s, case, deny("unknown"), via=src)
        decided = self._member_gate(s, store, case, member, src)
        if decided is not None:
            return decided
        if member.status == "trusted":
            return self._allow(s, case, member.id, member.phone_last2, via=src)
        st = self.settings
        sid = secrets.token_hex(8)
        s.add(Challenge(sid=sid, case_id=case.id, member_id=member.id, need="phone", tries_left=st.otp_tries,
                        expires_at=self.now() + st.otp_ttl_s, created_at=self.now()))
        self.journal(s, case, "challenge", member_id=member.id, need="phone", via=src)
        return Reply("challenge", {"sid": sid, "need": "phone", "ttl": st.otp_ttl_s}, member_id=member.id)

    def _member_gate(self, s: Session, store: Store, case: Case, member: Holder, via: str) -> Reply | None:
        if member.status == "flagged":
            r = deny("flagged")
        else:
            limited = self._limits(s, store, case, [("member", member.id, self.settings.rate_member)])
            if limited is None:
                return None
            r = limited
        r.member_id = member.id
        return self._refuse(s, case, r, via=via)

    def on_help(self, s: Session, store: Store, case: Case, why: str | None) -> Reply:
        self.journal(s, case, "help_call", why=(why or "")[:40])
        # Every press counts on the case's one open help alert; staff are told again at most
        # every alert_repeat_s however often the button is pressed.
        self._alert(s, store, case, "help", f"help requested at case {case.name or case.id}")
        return Reply("ok")

    def app_unlock(self, s: Session, store: Store | None, case: Case | None, token: str, client: str = "-") -> Reply:
        """The app's unlock button: the member is already signed in to the app, so any member that
        is not flagged may open (no code), subject to the same rate limits. An unknown token or
        case is junk (above), answered `refused` alike so that case ids cannot be told apart."""
        if self._junk_blocked(s, client):
            return self._junk(s, client, "rate_limited")
        try:
            member = self.loyalty.by_token(s, token, "app")
        except LoyaltyError as e:
            log.warning("loyalty lookup failed: %s", e)
            metrics.LOYALTY_FAILURES.inc()
            return deny("unavailable")
        if member is None or case is None or store is None:
            return self._junk(s, client)
        limited = self._common_limits(s, store, case)
        if limited:
            limited.member_id = member.id
            return self._refuse(s, case, limited, via="app")
        decided = self._member_gate(s, store, case, member, "app")
        if decided is not None:
            return decided
        return self._allow(s, case, member.id, member.phone_last2, via="app")
