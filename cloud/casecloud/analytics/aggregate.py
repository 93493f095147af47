"""Events into counts: `fold` (the periodic job: what arrived since the last run) and `rebuild`
(everything from the stored events). Both compute an hour's counts with metrics.case_counts over
the same window of events, so they agree; a test checks it on a generated month.

The job's bookmark is the events' id. A transaction can commit an event with a lower id after a
higher one was read, so each run reads again from the bookmark of the run before the last
(`events_prev`): an event committed up to one run late is still folded in, and folding an hour
twice is harmless (its counts are recomputed, not added). Alerts have no id order that follows
their changes (an acknowledgement, an outage resolved), so they are found by their times since the
last run, less `GRACE_S`.

Counts are recomputed per (case, hour) and replaced: `analytics_hours`, then the days those hours
belong to in `analytics_days` (their sum). Counts of hours whose events are gone (past retention)
are never touched by either: `expire_events` (the retention job's) folds every event in before it
deletes those stamped before a UTC midnight, and marks the hours up to an hour after it final
(`final_before`): their figures look back at most REACH_S, into events now gone, so neither the
fold nor a rebuild recomputes them again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, or_, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from casecloud.analytics import hours as store_hours
from casecloud.analytics.metrics import (
    DAY,
    HOUR,
    REACH_S,
    AlertRow,
    Counts,
    Ev,
    alert_counts,
    case_counts,
    hour_of,
)
from casecloud.models import Alert, AnalyticsDay, AnalyticsHour, AnalyticsState, Event, Staff

log = logging.getLogger("casecloud.analytics")

MIN_TS = 1_500_000_000  # 2017: a case whose clock was never set says 2000 or 2021; such events are skipped
FUTURE_S = DAY  # nor events stamped more than a day after they arrived
GRACE_S = 120
_CHUNK = 5000
_UNNEST = text(
    "INSERT INTO analytics_hours (case_id, hour, metric, store_id, n) "
    "SELECT * FROM unnest(CAST(:c AS varchar[]), CAST(:h AS bigint[]), CAST(:m AS varchar[]), "
    "CAST(:s AS varchar[]), CAST(:n AS bigint[]))")


def _insert_hours(s: Session, rows: list[dict[str, object]]) -> None:
    """Counts in bulk, through Core (the ORM's bulk insert cost more than computing the rows): on
    PostgreSQL one statement of five arrays per chunk (psycopg's executemany sends a statement a
    row), on SQLite executemany (in process, already fast)."""
    conn = s.connection()
    for i in range(0, len(rows), _CHUNK):
        part = rows[i:i + _CHUNK]
        if conn.dialect.name == "postgresql":
            conn.execute(_UNNEST, {k: [r[col] for r in part] for k, col in
                                   (("c", "case_id"), ("h", "hour"), ("m", "metric"), ("s", "store_id"), ("n", "n"))})
        else:
            conn.execute(insert(AnalyticsHour), part)


@dataclass
class Folded:
    events: int  # events read
    hours: int  # (case, hour) cells recomputed


def _plausible() -> list[ColumnElement[bool]]:
    return [Event.ts >= MIN_TS, Event.ts <= Event.received_at + FUTURE_S]


def _marks(s: Session) -> dict[str, int]:
    return {k: v for k, v in s.execute(select(AnalyticsState.name, AnalyticsState.value))}


def _set_marks(s: Session, marks: dict[str, int]) -> None:
    for k, v in marks.items():
        row = s.get(AnalyticsState, k)
        if row is None:
            s.add(AnalyticsState(name=k, value=v))
        else:
            row.value = v


def _staff_kinds(s: Session) -> Callable[[str], str | None]:
    kinds = {i: k for i, k in s.execute(select(Staff.id, Staff.kind))}
    return kinds.get


def _hours_around(ts: int) -> Iterable[int]:
    return range(hour_of(ts - REACH_S), hour_of(ts + REACH_S) + 1, HOUR)


FINAL = "final_before"  # the mark: hours before it are final (their events may be gone)


# PostgreSQL advisory lock key: one fold or rebuild at a time across worker processes (two would
# replace the same rows). SQLite serializes writers by itself.
_LOCK_KEY = 0x4C434131  # "LCA1"


def _lock(s: Session, wait: bool) -> bool:
    """Hold the analytics lock for this transaction; False when another process has it (wait=False)."""
    if s.get_bind().dialect.name != "postgresql":
        return True
    if wait:
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        return True
    return bool(s.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY}))


def fold(s: Session, now: int, ttl: int) -> Folded:
    """Fold in the events and alert changes since the last run (the first run folds in all). Another
    worker folding at the same moment: nothing is done (it folds these too)."""
    if not _lock(s, wait=False):
        return Folded(0, 0)
    marks = _marks(s)
    low = marks.get("events_prev", 0)
    top = marks.get("events", 0)
    alerts_since = marks.get("alerts_at", 0) - GRACE_S
    dirty: dict[str, set[int]] = defaultdict(set)
    store_of: dict[str, str] = {}
    n = 0
    q = (select(Event.id, Event.case_id, Event.store_id, Event.ts).where(Event.id > low, *_plausible())
         .order_by(Event.id).execution_options(yield_per=_CHUNK))
    for eid, case_id, store_id, ts in s.execute(q):
        n += 1
        top = max(top, eid)
        store_of[case_id] = store_id
        dirty[case_id].update(_hours_around(ts))
    if not n:  # the bookmark of skipped (implausible) rows moves too
        top = max(top, s.scalar(select(func.max(Event.id))) or 0)
    else:
        top = max(top, s.scalar(select(func.max(Event.id)).where(Event.id > low)) or 0)
    for a in s.execute(select(Alert.case_id, Alert.store_id, Alert.kind, Alert.created_at, Alert.first_at,
                              Alert.acked_at, Alert.resolved_at).where(
            Alert.kind.in_(("help", "offline")), Alert.case_id.is_not(None),
            or_(Alert.created_at >= alerts_since, Alert.acked_at >= alerts_since, Alert.resolved_at >= alerts_since,
                (Alert.kind == "offline") & Alert.resolved_at.is_(None)))):
        case_id, store_id, kind, created, first, acked, resolved = a
        assert case_id is not None
        store_of[case_id] = store_id
        if kind == "help":
            dirty[case_id].add(hour_of(created))
            continue
        start = first if (created >= alerts_since or (resolved or 0) >= alerts_since) else max(first, alerts_since)
        end = resolved if resolved is not None else now
        dirty[case_id].update(range(hour_of(start), hour_of(max(end, start)) + 1, HOUR))
    staff_kind = _staff_kinds(s)
    rules = store_hours.rules(s)
    cells = 0
    final = marks.get(FINAL, 0)
    for case_id, all_hours in dirty.items():
        hours = {h for h in all_hours if h >= final}  # an event arriving long after its peers left
        if not hours:
            continue
        counts = _recount(s, case_id, store_of[case_id], hours, now, ttl, staff_kind, rules)
        _replace(s, case_id, store_of[case_id], hours, counts)
        cells += len(hours)
    _set_marks(s, {"events_prev": marks.get("events", 0), "events": top, "alerts_at": now})
    return Folded(n, cells)


def expire_events(s: Session, now: int, days: int, ttl: int) -> int:
    """Delete the raw events stamped (and received) before the UTC midnight `days` days ago; their
    counts stay. Every event is folded in first, in this transaction, so none leaves uncounted, and
    the hours whose figures could look back into the deleted events (up to an hour after that
    midnight: REACH_S < HOUR) become final. Returns the number of events deleted."""
    if days <= 0:
        return 0
    _lock(s, wait=True)
    fold(s, now, ttl)
    cut = now - days * DAY
    cut -= cut % DAY
    final = max(_marks(s).get(FINAL, 0), cut + HOUR)
    _set_marks(s, {FINAL: final})
    deleted = 0
    for (store_id,) in s.execute(select(Event.store_id).distinct()).all():  # each store by its (store, ts) index
        res = s.execute(delete(Event).where(Event.store_id == store_id, Event.ts < cut, Event.received_at < cut))
        deleted += int(getattr(res, "rowcount", 0) or 0)
    if deleted:
        # the day as a date: the logs blank digit runs of 7 or more (logs.py), an epoch among them
        log.info("retention: deleted %d events stamped before %s UTC (their counts stay)", deleted,
                 time.strftime("%Y-%m-%d", time.gmtime(cut)))
    return deleted


def _recount(s: Session, case_id: str, store_id: str, hours: set[int], now: int, ttl: int,
             staff_kind: Callable[[str], str | None], rules: dict[str, Callable[[int], bool]]) -> Counts:
    lo, hi = min(hours) - REACH_S, max(hours) + HOUR + REACH_S
    evs = [Ev(ts, i, src, kind, data if isinstance(data, dict) else {}) for i, src, kind, ts, data in s.execute(
        select(Event.id, Event.source, Event.kind, Event.ts, Event.data).where(
            Event.case_id == case_id, Event.ts >= lo, Event.ts < hi, *_plausible()).order_by(Event.ts, Event.id))]
    counts = case_counts(evs, ttl, staff_kind, store_hours.rule_for(rules, store_id), hours.__contains__)
    first, last = min(hours), max(hours) + HOUR
    alerts = [AlertRow(*r) for r in s.execute(
        select(Alert.kind, Alert.created_at, Alert.first_at, Alert.acked_at, Alert.resolved_at).where(
            Alert.case_id == case_id,
            or_(and_(Alert.kind == "help", Alert.created_at >= first, Alert.created_at < last),
                and_(Alert.kind == "offline", Alert.first_at < last,
                     or_(Alert.resolved_at.is_(None), Alert.resolved_at >= first)))))]
    counts.update(alert_counts(alerts, now, hours.__contains__))
    return counts


def _replace(s: Session, case_id: str, store_id: str, hours: set[int], counts: Counts) -> None:
    hs = sorted(hours)
    for i in range(0, len(hs), 500):
        s.execute(delete(AnalyticsHour).where(AnalyticsHour.case_id == case_id,
                                              AnalyticsHour.hour.in_(hs[i:i + 500])))
    rows = [{"case_id": case_id, "hour": h, "metric": m, "store_id": store_id, "n": n}
            for (h, m), n in counts.items() if n]
    _insert_hours(s, rows)
    _redo_days(s, case_id, sorted({h - h % DAY for h in hours}))


def _redo_days(s: Session, case_id: str, days: list[int]) -> None:
    """analytics_days of the case's days from analytics_hours: per day a range of the hours' primary
    key (case, hour), not an expression on hour that no index serves."""
    ranges = [and_(AnalyticsHour.hour >= d, AnalyticsHour.hour < d + DAY) for d in days]
    for i in range(0, len(days), 100):
        part = days[i:i + 100]
        s.execute(delete(AnalyticsDay).where(AnalyticsDay.case_id == case_id, AnalyticsDay.day.in_(part)))
        day = (AnalyticsHour.hour - AnalyticsHour.hour % DAY)
        q = (select(AnalyticsHour.case_id, day, AnalyticsHour.metric, AnalyticsHour.store_id,
                    func.sum(AnalyticsHour.n))
             .where(AnalyticsHour.case_id == case_id, or_(*ranges[i:i + 100]))
             .group_by(AnalyticsHour.case_id, day, AnalyticsHour.metric, AnalyticsHour.store_id))
        s.execute(insert(AnalyticsDay).from_select(["case_id", "day", "metric", "store_id", "n"], q))


def rebuild(s: Session, now: int, ttl: int, since: int | None = None) -> Folded:
    """Recompute every count from `since` (default: the hour of the oldest stored event) from the
    stored events and alerts; counts before it are kept (their events may be gone)."""
    _lock(s, wait=True)
    if since is None:
        first = s.scalar(select(func.min(Event.ts)).where(*_plausible()))
        first_alert = s.scalar(select(func.min(Alert.first_at)).where(Alert.kind.in_(("help", "offline"))))
        starts = [t for t in (first, first_alert) if t is not None]
        since = hour_of(min(starts)) if starts else hour_of(now)
    since = max(hour_of(since), _marks(s).get(FINAL, 0))  # hours before the mark keep their counts
    s.execute(delete(AnalyticsHour).where(AnalyticsHour.hour >= since))
    s.execute(delete(AnalyticsDay).where(AnalyticsDay.day >= since - since % DAY))
    top = s.scalar(select(func.max(Event.id))) or 0
    staff_kind = _staff_kinds(s)
    rules = store_hours.rules(s)

    def keep(h: int) -> bool:
        return h >= since

    n = 0
    cells: set[tuple[str, int]] = set()
    rows: list[dict[str, object]] = []

    def flush(case_id: str, store_id: str, evs: list[Ev]) -> None:
        counts = case_counts(evs, ttl, staff_kind, store_hours.rule_for(rules, store_id), keep)
        _collect(case_id, store_id, counts)

    def _collect(case_id: str, store_id: str, counts: Counts) -> None:
        for (h, m), c in counts.items():
            if c:
                rows.append({"case_id": case_id, "hour": h, "metric": m, "store_id": store_id, "n": c})
                cells.add((case_id, h))
        if len(rows) >= _CHUNK:
            _insert_hours(s, rows)
            rows.clear()

    q = (select(Event.case_id, Event.store_id, Event.id, Event.source, Event.kind, Event.ts, Event.data)
         .where(Event.ts >= since - REACH_S, *_plausible())
         .order_by(Event.case_id, Event.ts, Event.id).execution_options(yield_per=_CHUNK))
    cur: str | None = None
    cur_store = ""
    evs: list[Ev] = []
    for case_id, store_id, i, src, kind, ts, data in s.connection().execute(q):
        n += 1
        if case_id != cur:
            if cur is not None:
                flush(cur, cur_store, evs)
            cur, cur_store, evs = case_id, store_id, []
        evs.append(Ev(ts, i, src, kind, data if isinstance(data, dict) else {}))
    if cur is not None:
        flush(cur, cur_store, evs)
    by_case: dict[tuple[str, str], list[AlertRow]] = defaultdict(list)
    for case_id, store_id, kind, created, first, acked, resolved in s.execute(
            select(Alert.case_id, Alert.store_id, Alert.kind, Alert.created_at, Alert.first_at, Alert.acked_at,
                   Alert.resolved_at).where(Alert.kind.in_(("help", "offline")), Alert.case_id.is_not(None))):
        if case_id is not None:
            by_case[(case_id, store_id)].append(AlertRow(kind, created, first, acked, resolved))
    for (case_id, store_id), alerts in by_case.items():
        _collect(case_id, store_id, alert_counts(alerts, now, keep))
    if rows:  # alert metrics are not event metrics: no (case, hour, metric) repeats
        _insert_hours(s, rows)
    day = (AnalyticsHour.hour - AnalyticsHour.hour % DAY)
    first_day = since - since % DAY
    s.execute(insert(AnalyticsDay).from_select(
        ["case_id", "day", "metric", "store_id", "n"],
        select(AnalyticsHour.case_id, day, AnalyticsHour.metric, AnalyticsHour.store_id, func.sum(AnalyticsHour.n))
        .where(AnalyticsHour.hour >= first_day)
        .group_by(AnalyticsHour.case_id, day, AnalyticsHour.metric, AnalyticsHour.store_id)))
    _set_marks(s, {"events_prev": top, "events": top, "alerts_at": now})
    return Folded(n, len(cells))



def recount_store(s: Session, store_id: str, now: int, ttl: int, since: int) -> int:
    """Recompute the hours of a store's door opens from `since` (its hours changed: which opens
    were after hours). Returns the (case, hour) cells recomputed."""
    _lock(s, wait=True)
    dirty: dict[str, set[int]] = defaultdict(set)
    for case_id, ts in s.execute(select(Event.case_id, Event.ts).where(
            Event.store_id == store_id, Event.kind == "opened", Event.ts >= since, *_plausible())):
        dirty[case_id].add(hour_of(ts))
    staff_kind = _staff_kinds(s)
    rules = store_hours.rules(s)
    for case_id, hours in dirty.items():
        _replace(s, case_id, store_id, hours, _recount(s, case_id, store_id, hours, now, ttl, staff_kind, rules))
    return sum(len(h) for h in dirty.values())
