"""A store's reports (manager of the store, hq for any): for the last `days` whole UTC days before
today (7 by default, 1 to 90), per day and in total, the unlocks by method, the denials by reason,
forced entries, held-open and tamper alarms, help calls with the median time until staff
acknowledged them, and per case its forced entries, denials and minutes offline. As a page
(`/console/stores/{id}/reports`: tables and an SVG chart of unlocks per day) and as CSV
(`.../reports.csv`), built from the same `Report`.

Built from the store analytics' daily counts (casecloud.analytics: the events and alerts folded
into counts per case, day and metric, which hold no member, phone digits, card, token or staff
id), and shown under their small-count rule (analytics/suppress.py, docs/analytics.md):

- a cell is a store's count of one thing on one whole UTC day (or a case's share of it); from 1 to
  4 it is shown as "< 5"; today, a day not over, is never shown (reloading it would show a count
  move past 5);
- a store-day's cases (forced entries, denials) and its denials' reasons are two breakdowns of one
  count: where what each hides adds up to less than 5, more of its smallest cells are hidden;
- every total (a day's, a column's, a case's over the period, all cases') adds up the cells shown
  and says "≥" when it left hidden ones out. So any figure is a sum of shown cells, and subtracting
  two of them (this report's, or another period's: days=2 minus days=1) gives nothing hidden.

Minutes offline (a case's, not a person's) are not counts; medians need 5 or more acknowledged
calls, and are read from the analytics' duration bins (an upper bound, to the bin).

What is counted (analytics/metrics.py): unlocks are the cases' `granted` events by `source` (staff
split into PIN and badge by the credential's kind; a door already open and a grant journaled again
after a power cut left out); denials the cloud's `deny` by `why` and the case's own `denied` for
the reasons only it decides; alarms the cases' `forced`, `held_open`, `tamper`; help calls the
`help` alerts raised, acknowledged when acked (or resolved); minutes offline the `offline` alerts.
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import csv
import io
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.analytics import publish
from casecloud.analytics.metrics import percentile
from casecloud.analytics.suppress import Figure, K, cell, hidden_parts, total
from casecloud.api.deps import DB, Rt
from casecloud.console.associates import store_or_404
from casecloud.console.reports_analytics import parse_days
from casecloud.console.reports_analytics import router as analytics_router
from casecloud.console.web import StoreManagerPage, render
from casecloud.models import Case, Store

router = APIRouter(include_in_schema=False)
router.include_router(analytics_router)  # the analytics pages, installed with the reports

DAY = 86_400
MAX_DAYS = publish.MAX_DAYS
SMALL = K  # counts below this (and above 0) are not shown

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
ALARMS: tuple[tuple[str, str], ...] = (
    ("forced", "Forced entries"), ("held_open", "Held open"), ("tamper", "Tamper alarms"),
    ("help", "Help calls"),
)
NO_MEDIAN = Figure(None, "–")


def median_minutes(hist: Counter[int]) -> Figure:
    """The median time to acknowledge, in minutes, over 5 or more acknowledged calls."""
    if sum(hist.values()) < SMALL:
        return NO_MEDIAN
    m = (percentile(dict(hist), "h_ack", 0.5) or 0) / 60
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
    end: int  # 00:00 UTC after the last day (today's start)
    day_labels: list[str]
    tables: list[Table] = field(default_factory=list)
    unlocks_per_day: list[Figure] = field(default_factory=list)


Cells = dict[tuple[int, str], Figure]  # (day index, column key) -> the cell as shown


def _grid(key: str, caption: str, cols: Sequence[tuple[str, str]], labels: list[str], cells: Cells) -> Table:
    """Days x categories with a Total column (each day's shown cells summed) and a Total row (each
    category's, and all of them)."""
    keys = [k for k, _ in cols]
    zero = cell(0)
    rows: list[tuple[str, list[Figure]]] = []
    for d, label in enumerate(labels):
        parts = [cells.get((d, k), zero) for k in keys]
        rows.append((label, [*parts, total(parts)]))
    foot = [total([cells.get((d, k), zero) for d in range(len(labels))]) for k in keys]
    foot.append(total([cells.get((d, k), zero) for d in range(len(labels)) for k in keys]))
    return Table(key, caption, "Day", [c for _, c in cols] + ["Total"], rows, ("Total", foot))


def build(s: Session, store_id: str, days: int, now: int) -> Report:
    start, end = publish.period(now, days)
    labels = [time.strftime("%Y-%m-%d", time.gmtime(start + d * DAY)) for d in range(days)]
    rep = Report(days, start, end, labels)

    cases = set(s.scalars(select(Case.id).where(Case.store_id == store_id)))
    # (day, metric) -> case -> n: the store's cells and their cases' shares
    per: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    acks: dict[int, Counter[int]] = defaultdict(Counter)
    offline: Counter[str] = Counter()
    for _store, case_id, day, metric, n in publish.day_rows(s, [store_id], start, end):
        d = (day - start) // DAY
        cases.add(case_id)
        if metric.startswith("h_ack:"):
            acks[d][int(metric.split(":", 1)[1])] += n
        elif metric == "offline_s":
            offline[case_id] += n
        elif metric.startswith(("grant.", "deny.")) or metric in ("forced", "held_open", "tamper", "help"):
            per[(d, metric)][case_id] = n

    unlocks: Cells = {}
    for (d, metric), shares in per.items():
        if metric.startswith("grant."):
            unlocks[(d, metric[6:])] = cell(sum(shares.values()))

    # denials: one store-day count, broken down by reason and by case (each protected against it)
    denials: Cells = {}
    denials_by_case: dict[str, list[Figure]] = defaultdict(list)
    for d in range(days):
        reasons = {m[5:]: sum(c.values()) for (dd, m), c in per.items() if dd == d and m.startswith("deny.")}
        whole = sum(reasons.values())
        hide = hidden_parts(whole, reasons)
        for r, n in reasons.items():
            denials[(d, r)] = cell(n, r in hide)
        by_case: Counter[str] = Counter()
        for (dd, m), c in per.items():
            if dd == d and m.startswith("deny."):
                by_case.update(c)
        hide_c = hidden_parts(whole, dict(by_case))
        for c, n in by_case.items():
            denials_by_case[c].append(cell(n, c in hide_c))

    alarms: Cells = {}
    forced_by_case: dict[str, list[Figure]] = defaultdict(list)
    for (d, metric), by_case_ in per.items():
        if metric in ("forced", "held_open", "tamper", "help"):
            whole = sum(by_case_.values())
            alarms[(d, metric)] = cell(whole)
            if metric == "forced":
                hide_f = hidden_parts(whole, by_case_)
                for c, n in by_case_.items():
                    forced_by_case[c].append(cell(n, c in hide_f))

    case_ids = sorted(cases)
    methods = [(k, v) for k, v in METHODS if k not in _OPTIONAL_METHODS or any(m == k for _, m in unlocks)]
    t = _grid("unlocks", "Unlocks granted per day, by method", methods, labels, unlocks)
    rep.tables.append(t)
    rep.unlocks_per_day = [cells[-1] for _, cells in t.rows]
    reasons_seen = [(k, v) for k, v in REASONS if any(r == k for _, r in denials)]
    rep.tables.append(_grid("denials", "Denials per day, by reason", reasons_seen, labels, denials))
    rep.tables.append(_alarm_table(labels, alarms, acks))
    rep.tables.append(_case_table(case_ids, forced_by_case, denials_by_case, offline))
    return rep


def _alarm_table(labels: list[str], alarms: Cells, acks: dict[int, Counter[int]]) -> Table:
    """Alarms and help calls per day: no Total column (a forced door and a help call do not add
    up), a Total row per kind; and the median minutes until a help call was acknowledged."""
    zero = cell(0)
    rows = [(label, [alarms.get((d, k), zero) for k, _ in ALARMS] + [median_minutes(acks.get(d, Counter()))])
            for d, label in enumerate(labels)]
    foot = [total([alarms.get((d, k), zero) for d in range(len(labels))]) for k, _ in ALARMS]
    every: Counter[int] = Counter()
    for h in acks.values():
        every.update(h)
    foot.append(median_minutes(every))
    return Table("alarms", "Alarms and help calls per day", "Day",
                 [c for _, c in ALARMS] + ["Median minutes to acknowledge a help call"], rows, ("Total", foot))


def _case_table(case_ids: list[str], forced: dict[str, list[Figure]], denials: dict[str, list[Figure]],
                offline: Counter[str]) -> Table:
    """The cases, most forced entries first, then most denials: each a sum of the case's shown
    day cells, so the order tells no more than the cells."""
    f_tot = {c: total(forced.get(c, [])) for c in case_ids}
    d_tot = {c: total(denials.get(c, [])) for c in case_ids}

    def rank(c: str) -> tuple[float, float, str]:
        return (-(f_tot[c].value or 0), -(d_tot[c].value or 0), c)

    def minutes(sec: int) -> Figure:
        return Figure(sec // 60, str(sec // 60))

    rows = [(c, [f_tot[c], d_tot[c], minutes(offline[c])]) for c in sorted(case_ids, key=rank)]
    foot = [total(list(f_tot.values())), total(list(d_tot.values())), minutes(sum(offline.values()))]
    return Table("cases", "Cases ranked by forced entries, then denials", "Case",
                 ["Forced entries", "Denials", "Minutes offline (at least)"], rows, ("All cases", foot))


# --- the page and the CSV -------------------------------------------------------------------------

def chart(report: Report) -> dict[str, Any]:
    """Bars of unlocks per day for the template's SVG (no chart library), scaled to the highest
    day; a day whose total left hidden cells out (a lower bound) is drawn with a dashed outline
    and titled "≥"."""
    w, h, gap = 640, 160, 2
    shown = [f.value for f in report.unlocks_per_day if f.value is not None]
    top = max(shown, default=0) or 1
    bw = w / max(len(report.unlocks_per_day), 1)
    bars = []
    for i, (label, f) in enumerate(zip(report.day_labels, report.unlocks_per_day, strict=True)):
        height = 0.0 if f.value is None else h * f.value / top
        bars.append({"x": round(i * bw + gap / 2, 2), "w": round(max(bw - gap, 1), 2), "y": round(h - height, 2),
                     "h": round(height, 2), "hidden": f.hidden, "partial": f.partial,
                     "title": f"{label}: {f.text} unlocks"})
    return {"w": w, "h": h, "bars": bars, "top": int(top), "any": bool(shown)}


def _csv_safe(v: str) -> str:
    # a spreadsheet runs a cell starting with one of these as a formula
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v


def to_csv(report: Report, store_id: str) -> str:
    """The page's tables, one line per cell: section, row (a day, a case or Total), column, value
    (as shown: "< 5", "≥ n" and "–" included)."""
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
