"""A store's reports (manager of the store, hq for any): for the last `days` whole UTC days (7 by
default, 1 to 90), per day and in total, the unlocks by method, the denials by reason, forced
entries, held-open and tamper alarms, help calls with the median time until staff acknowledged
them, and per case its forced entries, denials and minutes offline. As a page
(`/console/stores/{id}/reports`: tables and an SVG chart of unlocks per day) and as CSV
(`.../reports.csv`), built from the same `Report`.

Aggregates only: no member, phone digits, card, token or staff id leaves this module; the staff id
of a `granted` event is only looked up to tell a PIN from a badge.

Small counts (issue 14 will do the full privacy-preserving analytics; this is its simple rule):
a count of 1 to 4 is shown as "< 5" (a zero names no one and is shown). A total is shown only
when every count it adds up, in every table of the report that breaks it down (the days, the
methods or reasons, the cases), is shown; otherwise it is "withheld". So each figure shown is
a sum of figures shown, and no hidden count can be worked out from the others. Minutes offline
(a case's, not a person's) and medians (only over 5 or more acknowledged calls) are not counts.

Where the numbers come from (the events table, the alerts table):

- unlocks: the cases' `granted` events by `d.source` (phone, card, app, nfc; staff split into
  PIN and badge by the staff credential's kind), not the cloud's `allow`: an allowed unlock the
  case did not carry out (door already open, lock resting) opened nothing. `ms: 0` grants
  ("door already open") are left out, and a grant the case journaled again after a power cut
  (`recovered`, the same `g`) counts once;
- denials: the cloud's `deny` events by `why`, and the case's own `denied` events for the
  reasons only the case decides (wrong staff PIN, no cloud, tamper alarm latched); the case's
  `denied` echoing a cloud `deny` is not counted twice;
- forced entries, held-open and tamper alarms: the cases' `forced`, `held_open`, `tamper` events;
- help calls: `help` alerts raised in the period (repeated presses while one is open count once);
  time to acknowledge: `acked_at - created_at` (the cloud's clock both), or until it was
  resolved when nobody acknowledged it first;
- minutes offline: from `offline` alerts, from the case's last message (`first_at`) until it was
  resolved (or now): outages shorter than `offline_alert_s` leave no alert, and an alert staff
  resolved while the case was still away ends there, so it is a lower bound.
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import csv
import io
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from casecloud.api.deps import DB, Rt
from casecloud.console.associates import store_or_404
from casecloud.console.web import StoreManagerPage, render
from casecloud.models import Alert, Case, Event, Staff, Store

router = APIRouter(include_in_schema=False)

DAY = 86_400
DEFAULT_DAYS = 7
MAX_DAYS = 90
SMALL = 5  # counts below this (and above 0) are not shown
WITHHELD = "withheld"
_DAYS_RE = re.compile(r"[0-9]{1,3}")  # before int(): no 5,000-digit strings, no other scripts' digits

# A grant's source (firmware lock.grant) -> column; staff is split by the credential's kind.
METHODS: tuple[tuple[str, str], ...] = (
    ("phone", "Phone (texted code)"), ("card", "Card"), ("app", "App"), ("nfc", "NFC phone"),
    ("pin", "Staff PIN"), ("badge", "Staff badge"),
    # shown only when they occur: a credential removed since, a source this cloud does not know
    ("staff", "Staff (credential since removed)"), ("other", "Other"),
)
_OPTIONAL_METHODS = frozenset({"staff", "other"})
# Why an unlock was refused: the cloud's `why` (policy.py) and the reasons only a case decides.
REASONS: tuple[tuple[str, str], ...] = (
    ("unknown", "Card or token not known"), ("bad_number", "Wrong phone number"),
    ("bad_code", "Wrong code"), ("expired", "Code expired"), ("flagged", "Member flagged"),
    ("no_guests", "Members only"), ("rate_limited", "Too many tries"),
    ("unavailable", "Service unavailable"), ("bad_pin", "Wrong staff PIN"),
    ("offline", "Case offline"), ("tamper", "Tamper alarm latched"), ("other", "Other"),
)
CASE_REASONS = frozenset({"bad_pin", "offline", "tamper"})
ALARMS: tuple[tuple[str, str], ...] = (
    ("forced", "Forced entries"), ("held_open", "Held open"), ("tamper", "Tamper alarms"),
    ("help", "Help calls"),
)
_KINDS = ("granted", "denied", "deny", "forced", "held_open", "tamper")


# --- figures and small counts ---------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """One cell as shown: `value` None when it is not shown (then `text` says why)."""

    value: float | None
    text: str

    @property
    def hidden(self) -> bool:
        return self.value is None


def _shown(n: int) -> bool:
    return n == 0 or n >= SMALL


def count(n: int) -> Figure:
    return Figure(n, str(n)) if _shown(n) else Figure(None, f"< {SMALL}")


def total(n: int, *breakdowns: Iterable[int]) -> Figure:
    """A sum, shown only when every count of every breakdown of it is shown."""
    if all(_shown(x) for parts in breakdowns for x in parts):
        return Figure(n, str(n))
    return Figure(None, WITHHELD)


def median_minutes(waits: Sequence[int]) -> Figure:
    if len(waits) < SMALL:
        return Figure(None, "–")
    m = statistics.median(waits) / 60
    return Figure(round(m, 1), f"{m:.1f}")


# --- the report -----------------------------------------------------------------------------------

@dataclass
class Table:
    """Rows of figures under `columns`; the last row may be the totals (`foot`)."""

    key: str  # the CSV's section
    caption: str
    row_head: str
    columns: list[str]
    rows: list[tuple[str, list[Figure]]]
    foot: tuple[str, list[Figure]] | None = None


@dataclass
class Report:
    days: int
    start: int  # epoch s, 00:00 UTC of the first day
    end: int  # 00:00 UTC after the last day (today)
    day_labels: list[str]
    tables: list[Table] = field(default_factory=list)
    unlocks_per_day: list[Figure] = field(default_factory=list)


def parse_days(raw: str | None) -> int:
    """The `days` query parameter: 1..90 whole days, else a 422 that says so."""
    if raw is None or raw == "":
        return DEFAULT_DAYS
    if not _DAYS_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_DAYS:
        raise HTTPException(422, f"days: a whole number from 1 to {MAX_DAYS}")
    return int(raw)


def _day_of(ts: int, start: int) -> int:
    return (ts - start) // DAY


def _grid(key: str, caption: str, cols: Sequence[tuple[str, str]], labels: list[str],
          counts: dict[tuple[int, str], int], *, grand_also: Sequence[int] = ()) -> Table:
    """Days x categories with a Total column (each day's sum) and a Total row (each category's
    sum and the grand total). `grand_also`: the grand total broken down elsewhere in the report
    (per case), whose hidden counts it must not reveal either."""
    keys = [k for k, _ in cols]
    rows: list[tuple[str, list[Figure]]] = []
    for d, label in enumerate(labels):
        parts = [counts.get((d, k), 0) for k in keys]
        rows.append((label, [count(n) for n in parts] + [total(sum(parts), parts)]))
    foot: list[Figure] = []
    for k in keys:
        per_day = [counts.get((d, k), 0) for d in range(len(labels))]
        foot.append(total(sum(per_day), per_day))
    every = [counts.get((d, k), 0) for d in range(len(labels)) for k in keys]
    foot.append(total(sum(every), every, grand_also))
    return Table(key, caption, "Day", [c for _, c in cols] + ["Total"], rows, ("Total", foot))


def build(s: Session, store_id: str, days: int, now: int) -> Report:
    today = now - now % DAY
    start, end = today - (days - 1) * DAY, today + DAY
    labels = [time.strftime("%Y-%m-%d", time.gmtime(start + d * DAY)) for d in range(days)]
    rep = Report(days, start, end, labels)

    staff_kind = {i: k for i, k in s.execute(select(Staff.id, Staff.kind).where(Staff.store_id == store_id))}
    cases = set(s.scalars(select(Case.id).where(Case.store_id == store_id)))
    unlocks: Counter[tuple[int, str]] = Counter()
    denials: Counter[tuple[int, str]] = Counter()
    alarms: Counter[tuple[int, str]] = Counter()
    forced_by_case: Counter[str] = Counter()
    denials_by_case: Counter[str] = Counter()
    grants_seen: set[tuple[str, Any]] = set()
    known_reasons = {k for k, _ in REASONS}
    rows = s.execute(select(Event.case_id, Event.kind, Event.ts, Event.data).where(
        Event.store_id == store_id, Event.ts >= start, Event.ts < end, Event.kind.in_(_KINDS)).order_by(Event.id))
    for case_id, kind, ts, data in rows:
        d = _day_of(ts, start)
        cases.add(case_id)
        data = data if isinstance(data, dict) else {}
        if kind == "granted":
            ms, g = data.get("ms"), data.get("g")
            if isinstance(ms, int) and ms <= 0:
                continue  # the door was already open: nothing unlocked
            if isinstance(g, int | str):
                if (case_id, g) in grants_seen:
                    continue  # journaled again after a power cut
                grants_seen.add((case_id, g))
            src = data.get("source")
            if src == "staff":
                who = data.get("who")
                method = staff_kind.get(who, "staff") if isinstance(who, str) else "staff"
                method = method if method in ("pin", "badge") else "staff"
            else:
                method = src if src in ("phone", "card", "app", "nfc") else "other"
            unlocks[(d, method)] += 1
        elif kind in ("deny", "denied"):
            why = data.get("why" if kind == "deny" else "reason")
            if kind == "denied" and not (isinstance(why, str) and why in CASE_REASONS):
                continue  # the case repeating the cloud's deny, counted from the cloud's event
            denials[(d, why if isinstance(why, str) and why in known_reasons else "other")] += 1
            denials_by_case[case_id] += 1
        else:
            alarms[(d, kind)] += 1
            if kind == "forced":
                forced_by_case[case_id] += 1

    waits: dict[int, list[int]] = defaultdict(list)
    for created, acked, resolved in s.execute(select(Alert.created_at, Alert.acked_at, Alert.resolved_at).where(
            Alert.store_id == store_id, Alert.kind == "help", Alert.created_at >= start, Alert.created_at < end)):
        d = _day_of(created, start)
        alarms[(d, "help")] += 1
        answered = acked if acked is not None else resolved
        if answered is not None:
            waits[d].append(max(answered - created, 0))

    offline: Counter[str] = Counter()
    stop = min(end, now)
    for case_id, first, resolved in s.execute(select(Alert.case_id, Alert.first_at, Alert.resolved_at).where(
            Alert.store_id == store_id, Alert.kind == "offline", Alert.first_at < stop,
            or_(Alert.resolved_at.is_(None), Alert.resolved_at > start))):
        if case_id is not None:
            cases.add(case_id)
            offline[case_id] += max(min(resolved if resolved is not None else now, stop) - max(first, start), 0)

    case_ids = sorted(cases)
    methods = [(k, v) for k, v in METHODS if k not in _OPTIONAL_METHODS or any(m == k for _, m in unlocks)]
    t = _grid("unlocks", "Unlocks granted per day, by method", methods, labels, unlocks)
    rep.tables.append(t)
    rep.unlocks_per_day = [cells[-1] for _, cells in t.rows]
    reasons = [(k, v) for k, v in REASONS if any(r == k for _, r in denials)]
    rep.tables.append(_grid("denials", "Denials per day, by reason", reasons, labels, denials,
                            grand_also=[denials_by_case[c] for c in case_ids]))
    rep.tables.append(_alarm_table(labels, alarms, waits, [forced_by_case[c] for c in case_ids]))
    rep.tables.append(_case_table(case_ids, forced_by_case, denials_by_case, offline, labels, alarms, denials))
    return rep


def _alarm_table(labels: list[str], alarms: Counter[tuple[int, str]], waits: dict[int, list[int]],
                 forced_per_case: list[int]) -> Table:
    """Alarms and help calls per day: no Total column (a forced door and a help call do not add
    up), a Total row per kind; and the median minutes until a help call was acknowledged."""
    rows = [(label, [count(alarms[(d, k)]) for k, _ in ALARMS] + [median_minutes(waits.get(d, []))])
            for d, label in enumerate(labels)]
    foot: list[Figure] = []
    for k, _ in ALARMS:
        per_day = [alarms[(d, k)] for d in range(len(labels))]
        foot.append(total(sum(per_day), per_day, forced_per_case if k == "forced" else []))
    foot.append(median_minutes([w for ws in waits.values() for w in ws]))
    return Table("alarms", "Alarms and help calls per day", "Day",
                 [c for _, c in ALARMS] + ["Median minutes to acknowledge a help call"], rows, ("Total", foot))


def _case_table(case_ids: list[str], forced: Counter[str], denials: Counter[str], offline: Counter[str],
                labels: list[str], alarms: Counter[tuple[int, str]], per_day_denials: Counter[tuple[int, str]]
                ) -> Table:
    """The cases, most forced entries first, then most denials. Ranked by the figures as shown
    (every hidden count ranks as one), so the order tells no more than the cells."""
    def rank(c: str) -> tuple[int, int, str]:
        f, n = forced[c], denials[c]
        return (-(f if _shown(f) else 1), -(n if _shown(n) else 1), c)

    rows = [(c, [count(forced[c]), count(denials[c]), Figure(offline[c] // 60, str(offline[c] // 60))])
            for c in sorted(case_ids, key=rank)]
    forced_days = [alarms[(d, "forced")] for d in range(len(labels))]
    denial_cells = list(per_day_denials.values())
    foot = [total(sum(forced.values()), forced.values(), forced_days),
            total(sum(denials.values()), denials.values(), denial_cells),
            Figure(sum(offline.values()) // 60, str(sum(offline.values()) // 60))]
    return Table("cases", "Cases ranked by forced entries, then denials", "Case",
                 ["Forced entries", "Denials", "Minutes offline (at least)"], rows, ("All cases", foot))


# --- the page and the CSV -------------------------------------------------------------------------

def chart(report: Report) -> dict[str, Any]:
    """Bars of unlocks per day for the template's SVG (no chart library), scaled to the highest
    day shown; a withheld day is drawn by the template as a short dashed outline, titled so."""
    w, h, gap = 640, 160, 2
    shown = [f.value for f in report.unlocks_per_day if f.value is not None]
    top = max(shown, default=0) or 1
    bw = w / max(len(report.unlocks_per_day), 1)
    bars = []
    for i, (label, f) in enumerate(zip(report.day_labels, report.unlocks_per_day, strict=True)):
        height = 0.0 if f.value is None else h * f.value / top
        bars.append({"x": round(i * bw + gap / 2, 2), "w": round(max(bw - gap, 1), 2), "y": round(h - height, 2),
                     "h": round(height, 2), "hidden": f.hidden, "title": f"{label}: {f.text} unlocks"})
    return {"w": w, "h": h, "bars": bars, "top": int(top), "any": bool(shown)}


def _csv_safe(v: str) -> str:
    # a spreadsheet runs a cell starting with one of these as a formula
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v


def to_csv(report: Report, store_id: str) -> str:
    """The page's tables, one line per cell: section, row (a day, a case or Total), column, value
    (as shown: "< 5", "withheld" and "–" included)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["store", "from", "to", "section", "row", "column", "value"])
    first, last = report.day_labels[0], report.day_labels[-1]
    for t in report.tables:
        for label, cells in t.rows + ([t.foot] if t.foot else []):
            for col, f in zip(t.columns, cells, strict=True):
                w.writerow([store_id, first, last, t.key, _csv_safe(label), col, f.text])
    return out.getvalue()


def _report(s: Session, rt: Rt, store_id: str, days: str | None) -> tuple[Store, Report]:
    n = parse_days(days)  # after the page's guard: a caller of another store learns nothing here
    st = store_or_404(s, store_id)
    return st, build(s, store_id, n, rt.now())


@router.get("/console/stores/{store_id}/reports", response_class=HTMLResponse)
def reports_page(store_id: str, request: Request, s: DB, rt: Rt, p: StoreManagerPage,
                 days: str | None = None) -> HTMLResponse:
    st, report = _report(s, rt, store_id, days)
    return render(request, "reports.html", p, store=st, report=report,
                  chart=chart(report), max_days=MAX_DAYS, small=SMALL)


@router.get("/console/stores/{store_id}/reports.csv")
def reports_csv(store_id: str, s: DB, rt: Rt, p: StoreManagerPage, days: str | None = None) -> Response:
    _, report = _report(s, rt, store_id, days)
    name = f"lockcase-{store_id}-{report.day_labels[0]}-{report.day_labels[-1]}.csv"
    return Response(to_csv(report, store_id), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
