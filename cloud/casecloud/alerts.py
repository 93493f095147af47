"""From what a case reports (its events, its presence) or a policy finding to alert rows.

One alert per case and kind is unresolved at a time (models.Alert, a partial unique index): a
repeat adds to its `count` and moves `last_at`, and is POSTed again at most every
`alert_repeat_s`. Staff acknowledge and resolve alerts through the API; two kinds resolve by
themselves, when the case reports that the cause is gone:

- `held_open`: the door closed (a `closed` event no older than the alert's last `held_open`);
- `tamper`: the latched tamper alarm was reset (`tamper_reset`: a staff PIN or badge at the
  case, or the cloud's `reset_tamper` command); the switch closing alone (`tamper_cleared`) does
  not, as the case keeps refusing shoppers until then;
- `offline`: the case is connected and heard from again.

Forced entry, faults, config errors, overflowed journals, help calls and abuse wait for staff:
each means someone must look. Writes are collected per transaction and applied just before it
commits, sorted by (case, kind), so concurrent workers take the alert rows' locks in one order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from casecloud import db, logs, status
from casecloud.models import Alert, Case, Event, Staff, Store
from casecloud.settings import Settings

log = logging.getLogger("casecloud.alerts")

SEVERITY = {
    "forced": "critical",
    "tamper": "critical",
    "held_open": "high",
    "offline": "high",
    "fault": "high",
    "config_error": "high",
    "journal_overflow": "high",
    "abuse": "high",
    "wrong_codes": "high",
    "help": "normal",
    # A staff credential the case honoured offline (docs/safety.md): one the cloud has revoked
    # means someone opened the case with it; one still valid only wants a look.
    "revoked_used": "critical",
    "staff_offline": "normal",
}
# A case event (firmware/lockcase/events.py) -> the alerts it resolves.
RESOLVES = {"closed": ("held_open",), "tamper_reset": ("tamper",)}
RAISED_BY_EVENTS = frozenset({"forced", "held_open", "tamper", "fault", "config_error", "journal_overflow", "help",
                              "staff_unconfirmed"})
STATES = ("open", "acknowledged", "resolved")

_ALERTS = cast(Table, Alert.__table__)
_EVENTS = cast(Table, Event.__table__)
_C = _ALERTS.c
_OPS = "alerts"
_SEEN = "alert_events"
# Built once: most event batches carry a door event, and building statements costs more than
# running these on an index.
_STORED = select(_EVENTS.c.event_id).where(_EVENTS.c.case_id == bindparam("case"),
                                           _EVENTS.c.event_id.in_(bindparam("ids", expanding=True)))
_UNRESOLVED = select(_C.case_id, _C.kind).where(_C.case_id.in_(bindparam("cases", expanding=True)),
                                                _C.state != "resolved")


class Resolved(ValueError):
    """The alert is resolved already: it cannot be acknowledged any more."""


@dataclass
class _Op:
    store_id: str
    case_id: str | None
    kind: str
    at: int  # when it happened (the case's clock for events)
    detail: str = ""
    late: bool = False
    resolve_by: str | None = None  # set: resolve the open alert instead of raising
    if_absent: bool = False  # only open one: repeats are not counted (a condition, not an occurrence)
    unless_since: int | None = None  # skip when the case's alert of this kind moved at or after this


def _detail(kind: str, d: dict[str, Any]) -> str:
    if kind == "forced":
        return "door opened without a grant" + (" (open at boot)" if d.get("at_boot") else "")
    if kind == "held_open":
        return f"door held open ({d.get('s', '?')} s)"
    if kind == "tamper":
        return "enclosure opened (tamper switch)" + (" at boot" if d.get("at_boot") else "")
    if kind == "fault":
        return f"fault in {d.get('part', '?')}: {d.get('error', '')}"
    if kind == "config_error":
        return f"config error: {d.get('error', '')}"
    if kind == "journal_overflow":
        return (f"journal overflowed while offline: {d.get('lost', '?')} events lost "
                f"(ids {d.get('first', '?')}-{d.get('last', '?')})")
    return "help requested"


def _staff_use(s: Session, case: Case, d: dict[str, Any]) -> tuple[str, str]:
    """A `staff_unconfirmed` event: was the credential still the store's when the event arrived?
    Credentials provisioned on the case itself (ids not from the cloud) cannot be checked here."""
    who = d.get("who")
    who = who[:32] if isinstance(who, str) else "?"
    # "#": the event scrubber blanked a run of 7+ digits in it (privacy.scrub): not checkable.
    if who.startswith("s_") and "#" not in who and s.get(Staff, who) is None:
        return "revoked_used", f"revoked staff credential {who} opened the case while it was offline"
    return "staff_offline", f"staff credential {who} used while the case could not confirm its staff set"


def message(a: Alert) -> dict[str, Any]:
    """What the webhook receives: the alert, never a shopper's data."""
    return {"id": a.id, "store": a.store_id, "case": a.case_id, "kind": a.kind, "severity": a.severity,
            "state": a.state, "detail": a.detail, "count": a.count, "late": a.late, "first_at": a.first_at,
            "last_at": a.last_at, "at": a.created_at}


class Alerts:
    """deliver(store id, alert id): called once a transaction that (re)raised the alert has
    committed. busy(): the stores with a delivery under way in this process (redeliver skips them)."""

    def __init__(self, settings: Settings, clock: Callable[[], float], deliver: Callable[[str, int], None],
                 busy: Callable[[], Collection[str]] = frozenset) -> None:
        self.settings = settings
        self.clock = clock
        self.deliver = deliver
        self.busy = busy

    def now(self) -> int:
        return int(self.clock())

    # --- collecting ---------------------------------------------------------------------------

    def _ops(self, s: Session) -> list[_Op]:
        sc = db.scratch(s)
        ops: list[_Op] | None = sc.get(_OPS)
        if ops is None:
            ops = sc[_OPS] = []
            db.before_commit(s, self._flush)
        return ops

    def raise_(self, s: Session, store_id: str, case_id: str | None, kind: str, detail: str, at: int, *,
               late: bool = False, if_absent: bool = False, unless_since: int | None = None) -> None:
        detail = db.case_text(detail, 300)  # a NUL would fail the batch on PostgreSQL, over and over
        self._ops(s).append(_Op(store_id, case_id, kind, at, detail, late, None, if_absent, unless_since))

    def resolve(self, s: Session, store_id: str, case_id: str, kinds: Sequence[str], at: int, by: str) -> None:
        """Resolve the case's open alerts of `kinds` raised no later than `at` (an older event
        arriving late from the journal does not resolve a newer alarm)."""
        ops = self._ops(s)
        for kind in kinds:
            ops.append(_Op(store_id, case_id, kind, at, resolve_by=by))

    def from_events(self, s: Session, case: Case, rows: Sequence[dict[str, Any]], now: int) -> None:
        """The batch's new event rows of one case (worker._events) -> alerts raised or resolved.
        Events the cloud already stored (a batch sent again) are skipped."""
        for r in rows:
            kind = status.kind_of(r)
            if kind in RESOLVES:  # resolving twice is harmless: no need to look for duplicates
                self.resolve(s, case.store_id, case.id, RESOLVES[kind], r["ts"], f"case: {r['kind']}")
        wanted = [r for r in rows if r["kind"] in RAISED_BY_EVENTS]
        if not wanted:
            return
        seen: set[tuple[str, str]] = db.scratch(s).setdefault(_SEEN, set())
        stored = set(s.scalars(_STORED, {"case": case.id, "ids": [r["event_id"] for r in wanted]}))
        for r in wanted:
            key = (case.id, r["event_id"])
            if r["event_id"] in stored or key in seen:
                continue
            seen.add(key)
            kind, ts, d = r["kind"], r["ts"], r["data"]
            late = now - ts > self.settings.help_late_s
            if kind == "staff_unconfirmed":
                kind, detail = _staff_use(s, case, d)
                self.raise_(s, case.store_id, case.id, kind, detail, ts, late=late)
                continue
            detail = _detail(kind, d) + (f" at case {case.name or case.id}" if kind == "help" else "")
            # A help call made online reached the cloud as a request too (policy.on_help): its
            # journaled event then only confirms it. One made offline arrives only as this event.
            since = ts - self.settings.alert_repeat_s if kind == "help" else None
            self.raise_(s, case.store_id, case.id, kind, detail, ts, late=late, unless_since=since)

    def scan_offline(self, s: Session) -> None:
        """Raise `offline` for cases gone longer than `offline_alert_s`; resolve the alerts of
        cases that are back.

        Gone: not heard from (`last_seen`: every signed message and presence update moves it) for
        `offline_alert_s`, whatever the presence says. A case beats every 60 s (firmware
        cloud/client.py, _BEAT_MS) and the default 300 s is five beats; presence alone is not
        enough, as a broker restarted without persistence loses the retained presence and may
        publish no Last Will, leaving a dead case `online`.

        One absence raises one alert: the alert's `last_at` is the case's `last_seen` when raised,
        so once staff resolve it while the case is still away, no new one opens until the case has
        been heard from again (moving `last_seen` past it) and gone again."""
        now = self.now()
        cutoff = now - self.settings.offline_alert_s
        gone = s.execute(select(Case.id, Case.store_id, Case.last_seen).where(
            Case.last_seen.is_not(None), Case.last_seen <= cutoff))
        for cid, sid, seen in gone:
            assert seen is not None  # selected so
            self.raise_(s, sid, cid, "offline", f"offline since {seen} ({now - seen} s without a connection)",
                        seen, if_absent=True, unless_since=seen)
        back = s.execute(select(Case.id, Case.store_id).join(Alert, Alert.case_id == Case.id).where(
            Alert.kind == "offline", Alert.state != "resolved", Case.online.is_(True), Case.last_seen > cutoff))
        for cid, sid in back:
            self.resolve(s, sid, cid, ("offline",), now, "case: online")

    def redeliver(self, s: Session, limit: int = 100, per_store: int = 10) -> None:
        """Queue again the unresolved alerts whose last delivery failed or never ran (the process
        stopped first) `alert_redeliver_s` ago: a store's webhook down for longer than one
        delivery's retries still gets them once it is back. At most `per_store` (its oldest) per
        store, none of a store with a delivery under way here: a dead webhook gets a few tries
        per round, not the whole backlog (a store's deliveries run one at a time, and the first
        that finds it unreachable drops the rest, policy.py)."""
        now = self.now()
        due = (_C.delivered.is_(False), _C.state != "resolved", _C.notified_at <= now - self.settings.alert_redeliver_s)
        busy = sorted(self.busy())
        ranked = (select(_C.id, func.row_number().over(partition_by=_C.store_id, order_by=_C.id).label("n"))
                  .join(Store, Store.id == _C.store_id)
                  .where(*due, Store.notify_url.is_not(None), *([_C.store_id.not_in(busy)] if busy else []))
                  .subquery())
        # FOR UPDATE is not allowed with a window function: it locks the outer query's rows only
        rows = s.execute(select(_C.id, _C.store_id).where(_C.id.in_(select(ranked.c.id).where(
            ranked.c.n <= per_store)), *due).order_by(_C.id).limit(limit).with_for_update(skip_locked=True)).all()
        if rows:
            s.execute(update(_ALERTS).where(_C.id.in_([r[0] for r in rows])).values(notified_at=now))
            for alert_id, store_id in rows:
                self._deliver_after_commit(s, store_id, alert_id)

    # --- applying, just before the commit ------------------------------------------------------

    def _flush(self, s: Session) -> None:
        """Per (case, kind), in that order: its raises in order, then its newest resolve. A resolve
        only touches an alert no newer than itself, so within a batch this order gives what the
        events' order would."""
        ops: list[_Op] = db.scratch(s).pop(_OPS, [])
        now = self.now()
        raises: dict[tuple[str, str], list[_Op]] = {}
        resolves: dict[tuple[str, str], _Op] = {}
        for op in ops:
            key = (op.case_id or "", op.kind)
            if op.resolve_by is None:
                raises.setdefault(key, []).append(op)
            elif key not in resolves or op.at >= resolves[key].at:
                resolves[key] = op
        unresolved: set[tuple[str, str]] = set()
        if resolves:  # one look for the whole batch instead of an UPDATE per door event
            cases = sorted({k[0] for k in resolves})
            unresolved = {(c, k) for c, k in s.execute(_UNRESOLVED, {"cases": cases})}
        for key in sorted(raises.keys() | resolves.keys()):
            for op in raises.get(key, ()):
                self._raise(s, op, now)
            if key in resolves and (key in raises or key in unresolved):
                self._resolve(s, resolves[key], now)

    def _deliver_after_commit(self, s: Session, store_id: str, alert_id: int) -> None:
        db.after_commit(s, lambda: self.deliver(store_id, alert_id))

    def _raise(self, s: Session, op: _Op, now: int) -> None:
        if op.unless_since is not None:
            newest = s.scalar(select(func.max(_C.last_at)).where(_C.case_id == op.case_id, _C.kind == op.kind))
            if newest is not None and newest >= op.unless_since:
                return
        row = _open_row(s, op)
        if row is None:
            new_id = _insert_open(s, {
                "store_id": op.store_id, "case_id": op.case_id, "kind": op.kind,
                "severity": SEVERITY.get(op.kind, "high"), "state": "open", "detail": op.detail, "count": 1,
                "first_at": op.at, "last_at": op.at, "late": op.late, "notified_at": now, "delivered": False,
                "attempts": 0, "created_at": now})
            if new_id is not None:
                log.warning("alert %s store=%s case=%s: %s", op.kind, op.store_id, op.case_id or "-", op.detail,
                            extra=logs.ids(op.case_id, op.store_id))
                self._deliver_after_commit(s, op.store_id, new_id)
                return
            # another worker opened it meanwhile: count this as a repeat of theirs
            row = _open_row(s, op)
            if row is None:
                return
        if op.if_absent:
            return
        alert_id, n, first_at, last_at, late, notified_at = row
        values: dict[str, Any] = {"count": n + 1, "first_at": min(first_at, op.at), "late": late and op.late}
        if op.at >= last_at:  # the newest occurrence describes the alert
            values |= {"last_at": op.at, "detail": op.detail}
        again = notified_at is None or now - notified_at >= self.settings.alert_repeat_s
        if again:
            values["notified_at"] = now
        s.execute(update(_ALERTS).where(_C.id == alert_id).values(values))
        if again:
            self._deliver_after_commit(s, op.store_id, alert_id)

    def _resolve(self, s: Session, op: _Op, now: int) -> None:
        res = s.execute(update(_ALERTS).where(
            _C.case_id == op.case_id, _C.kind == op.kind, _C.state != "resolved", _C.last_at <= op.at,
        ).values(state="resolved", resolved_at=now, resolved_by=op.resolve_by))
        if getattr(res, "rowcount", 0):
            log.info("alert %s of case %s resolved (%s)", op.kind, op.case_id, op.resolve_by,
                     extra=logs.ids(op.case_id, op.store_id))


def _open_row(s: Session, op: _Op) -> Any:
    """(id, count, first_at, last_at, late, notified_at) of the case's unresolved alert of the kind,
    locked until the commit (PostgreSQL), or None."""
    return s.execute(select(_C.id, _C.count, _C.first_at, _C.last_at, _C.late, _C.notified_at)
                     .where(_C.case_id == op.case_id, _C.kind == op.kind, _C.store_id == op.store_id,
                            _C.state != "resolved")
                     .with_for_update()).first()


def _insert_open(s: Session, row: dict[str, Any]) -> int | None:
    """INSERT the open alert unless one is open already (the partial unique index): its id, or None."""
    insert = db.dialect_insert(s)
    if insert is None:
        raise NotImplementedError("alerts need SQLite or PostgreSQL (ON CONFLICT on a partial unique index)")
    stmt = (insert(_ALERTS).values(row)
            .on_conflict_do_nothing(index_elements=["case_id", "kind"], index_where=_C.state != "resolved")
            .returning(_C.id))
    got = s.execute(stmt).scalar()
    return int(got) if got is not None else None


# --- staff ---------------------------------------------------------------------------------------

def acknowledge(s: Session, alert_id: int, by: str, now: int) -> Alert | None:
    """Staff have seen it. The first to acknowledge stays on record; a resolved alert raises
    Resolved. None: no such alert."""
    a = s.get(Alert, alert_id, with_for_update=True)
    if a is None:
        return None
    if a.state == "resolved":
        raise Resolved(f"alert {alert_id} is resolved")
    if a.state == "open":
        a.state, a.acked_by, a.acked_at = "acknowledged", by, now
    return a


def resolve(s: Session, alert_id: int, by: str, now: int) -> Alert | None:
    """Staff closed the incident (idempotent). A repeat after this opens a new alert."""
    a = s.get(Alert, alert_id, with_for_update=True)
    if a is None:
        return None
    if a.state != "resolved":
        a.state, a.resolved_by, a.resolved_at = "resolved", by, now
    return a
