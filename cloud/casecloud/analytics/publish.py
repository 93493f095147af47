"""The counts as they may be shown: a store's period (per day, per hour of day, totals, durations),
its cases ranked, the fleet; and their CSV. Every count passes suppress.py's rule here, for the
API, the console and the CSV alike; nothing else reads the analytics tables for showing.

Periods are whole UTC days ending with yesterday (`days` 1..90): today is never shown.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casecloud.analytics import audit
from casecloud.analytics.metrics import (
    ALARMS,
    DAY,
    EDGES,
    HOUR,
    METHODS,
    REASONS,
    SHOPPER,
    percentile,
)
from casecloud.analytics.suppress import Figure, K, cell, plain, protect, total
from casecloud.models import AnalyticsDay, AnalyticsHour, Case, Store

MAX_DAYS = 90
DEFAULT_DAYS = 7

# A denial's reason (metrics.REASONS) in words, for the pages (the JSON and CSV keep the keys)
REASON_WORDS = {"unknown": "unknown card or app", "bad_number": "wrong or invalid number",
                "bad_code": "wrong code", "expired": "code expired", "flagged": "flagged member",
                "no_guests": "members only", "rate_limited": "too many tries", "unavailable": "service unavailable",
                "bad_pin": "wrong staff PIN", "offline": "case offline", "tamper": "case alarm (tamper)"}

LABELS: dict[str, str] = {
    **{f"req.{m}": f"Requests: {m}" for m in SHOPPER},
    "req.other": "Requests: other",
    **{f"grant.{m}": f"Grants: {m}" for m in METHODS},
    **{f"deny.{r}": f"Denials: {REASON_WORDS.get(r, r)}" for r in REASONS},
    "abandon_code": "Abandoned: code texted, never entered",
    "abandon_phone": "Abandoned: number asked for, never submitted",
    # typed on the keypad and left (the case's own event); overlaps the two above, so not in their sum
    "abandon_typed.phone": "Abandoned: number started, never submitted",
    "abandon_typed.code": "Abandoned: code started, never submitted",
    "abandon_typed.other": "Abandoned: entry started, never submitted",
    "help": "Help calls", "help_acked": "Help calls acknowledged",
    "opened": "Door opens", "after_hours": "After-hours opens",
    **{a: a.replace("_", " ").capitalize() for a in ALARMS},
    "code_burst": "Wrong-code bursts",
    "allow": "Grants decided by the cloud", "trusted": "Trusted fast-path grants",
}
# Counted as they are (machine states, not people): docs/analytics.md
HEALTH_PREFIXES = ("offline_s", "boot", "fw:", "fault")
DURATIONS = {"h_first": "Time to unlock from the first key or tap (s)",
             "h_first_open": "Time to door open from the first key or tap (s)",
             "h_grant": "Time to unlock (s)", "h_open": "Time to door open (s)",
             "h_dwell": "Door-open dwell (s)", "h_ack": "Help call to acknowledgment (s)"}


def is_health(metric: str) -> bool:
    return metric.startswith(HEALTH_PREFIXES)


def is_duration(metric: str) -> bool:
    return metric.split(":", 1)[0] in EDGES


def period(now: int, days: int) -> tuple[int, int]:
    """[start, end) of the last `days` whole UTC days before today."""
    today = now - now % DAY
    return today - days * DAY, today


def day_label(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day))


@dataclass
class StoreView:
    store_id: str
    start: int
    end: int
    days: list[int]
    daily: dict[str, list[Figure]] = field(default_factory=dict)  # metric -> a figure per day
    totals: dict[str, Figure] = field(default_factory=dict)
    health: dict[str, Figure] = field(default_factory=dict)
    durations: dict[str, tuple[Figure, Figure]] = field(default_factory=dict)  # p50, p90
    durations_daily: dict[str, list[tuple[Figure, Figure]]] = field(default_factory=dict)  # p50, p90 a day
    case_durations: dict[str, dict[str, tuple[Figure, Figure]]] = field(default_factory=dict)  # over the period
    by_hour: list[Figure] = field(default_factory=list)  # door opens per hour of day (UTC), 24
    cases: list[tuple[str, dict[str, Figure]]] = field(default_factory=list)  # ranked
    # case -> metric -> a figure per day: the case-day cells, protected within their store-day
    case_daily: dict[str, dict[str, list[Figure]]] = field(default_factory=dict)
    trusted_share: Figure = field(default_factory=lambda: Figure(None, "–"))

    @property
    def labels(self) -> list[str]:
        return [day_label(d) for d in self.days]


def day_rows(s: Session, store_ids: Sequence[str], start: int, end: int) -> list[tuple[str, str, int, str, int]]:
    return [tuple(r) for r in s.execute(  # type: ignore[misc]
        select(AnalyticsDay.store_id, AnalyticsDay.case_id, AnalyticsDay.day, AnalyticsDay.metric, AnalyticsDay.n)
        .where(AnalyticsDay.store_id.in_(list(store_ids)), AnalyticsDay.day >= start, AnalyticsDay.day < end))]


def store_view(s: Session, store_id: str, now: int, days: int, *, with_hours: bool = True) -> StoreView:
    start, end = period(now, days)
    v = StoreView(store_id, start, end, [start + i * DAY for i in range(days)])
    case_day: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)  # (day, metric) -> case -> n
    hist: dict[str, Counter[int]] = defaultdict(Counter)
    hist_day: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)  # (duration, day)
    hist_case: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)  # (duration, case)
    health: Counter[str] = Counter()
    cases: set[str] = set(s.scalars(select(Case.id).where(Case.store_id == store_id)))
    for _sid, case_id, day, metric, n in day_rows(s, [store_id], start, end):
        cases.add(case_id)
        if is_duration(metric):
            name, b = metric.split(":", 1)
            hist[name][int(b)] += n
            hist_day[(name, day)][int(b)] += n
            hist_case[(name, case_id)][int(b)] += n
        elif is_health(metric):
            health[metric] += n
        else:
            case_day[(day, metric)][case_id] = n
    metrics = sorted({m for _, m in case_day}, key=_order)
    hour_cells = _hour_cells(s, store_id, start, end)
    by_hour: list[list[Figure]] = [[] for _ in range(24)]
    for d in v.days:  # each store-day with its case-days and store-hours (protect_day)
        whole = {m: sum(case_day.get((d, m), {}).values()) for m in metrics}
        per_case = {c: {m: case_day.get((d, m), {}).get(c, 0) for m in metrics} for c in cases}
        top, hide, hide_h = protect_day(whole, per_case, hour_cells.get(d, {}))
        for h, cells in hour_cells.get(d, {}).items():  # door opens by hour of day: shown store-hours
            by_hour[h].append(cell(cells.get("opened", 0), "opened" in hide_h[h]))
        for m in metrics:
            v.daily.setdefault(m, []).append(cell(whole[m], m in top))
            for c in cases:
                v.case_daily.setdefault(c, {}).setdefault(m, []).append(cell(per_case[c][m], m in hide[c]))
    for m in metrics:
        v.totals[m] = total(v.daily[m])
    v.trusted_share = share(v.totals.get("trusted"), v.totals.get("allow"))
    for name in DURATIONS:
        v.durations[name] = quantiles(hist.get(name, Counter()), name)
        v.durations_daily[name] = [quantiles(hist_day.get((name, d), Counter()), name) for d in v.days]
        for c in cases:
            v.case_durations.setdefault(c, {})[name] = quantiles(hist_case.get((name, c), Counter()), name)
    v.health = {"offline_min": plain(health.pop("offline_s", 0) // 60)}
    v.health.update({m: plain(n) for m, n in sorted(health.items())})
    for c in sorted(cases):
        figs_of = v.case_daily.get(c, {})
        row = {m: total(figs_of.get(m, [])) for m in RANKED}
        row["abandons"] = total([row["abandon_code"], row["abandon_phone"]])
        v.cases.append((c, row))
    v.cases.sort(key=lambda cr: (-(cr[1]["abandons"].value or 0), -(cr[1]["forced"].value or 0), cr[0]))
    if with_hours:
        v.by_hour = [total(f) for f in by_hour]  # summed shown store-hours, as the hourly view shows them
    return v


def quantiles(h: Counter[int], name: str) -> tuple[Figure, Figure]:
    """p50 and p90 of a duration histogram, only over K or more samples (suppress rule 5)."""
    if sum(h.values()) < K:
        return Figure(None, "–"), Figure(None, "–")
    return plain(percentile(h, name, 0.5) or 0), plain(percentile(h, name, 0.9) or 0)


def _hour_cells(s: Session, store_id: str, start: int, end: int) -> dict[int, dict[int, dict[str, int]]]:
    """day -> hour of day (UTC) -> metric -> the store-hour's count, health and durations left out."""
    out: dict[int, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for hour, metric, n in s.execute(
            select(AnalyticsHour.hour, AnalyticsHour.metric, func.sum(AnalyticsHour.n)).where(
                AnalyticsHour.store_id == store_id, AnalyticsHour.hour >= start, AnalyticsHour.hour < end)
            .group_by(AnalyticsHour.hour, AnalyticsHour.metric)):
        if not is_health(metric) and not is_duration(metric):
            out[hour - hour % DAY][(hour % DAY) // HOUR][metric] = int(n)
    return out


def protect_day(whole: dict[str, int], per_case: dict[str, dict[str, int]], per_hour: dict[int, dict[str, int]]
                ) -> tuple[set[str], dict[str, set[str]], dict[int, set[str]]]:
    """A store-day's metrics to hide, and those of its case-days and of its store-hours: each part
    protected within the store-day and across linked metrics (suppress.protect). The store-day's
    own hidden metrics are those of both, so the day's view, a case's and the hourly view agree."""
    metrics = set(whole) | {m for cells in per_hour.values() for m in cells}
    whole = {m: whole.get(m, 0) for m in metrics}
    top: set[str] = set()
    while True:
        top_c, hide_c = protect(whole, per_case, top)
        top_h, hide_h = protect(whole, per_hour, top_c)
        if top_h == top:
            break
        top = top_h
    # the linked metrics' rows and columns taken together (audit.py): more hidden where they pin one
    cells: dict[audit.Pos, dict[str, int]] = {("S", None): whole}
    hidden: dict[audit.Pos, set[str]] = {("S", None): set(top)}
    for c, cc in per_case.items():
        cells[("c", c)], hidden[("c", c)] = cc, set(hide_c[c])
    for h, hc in per_hour.items():
        cells[("h", h)], hidden[("h", h)] = hc, set(hide_h[h])
    if audit.settle(cells, hidden):
        top = hidden[("S", None)]
        hide_c = {c: hidden[("c", c)] for c in per_case}
        hide_h = {h: hidden[("h", h)] for h in per_hour}
    return top, hide_c, hide_h


def _day_cases(s: Session, store_id: str, day: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for _sid, case_id, _day, metric, n in day_rows(s, [store_id], day, day + DAY):
        if not is_health(metric) and not is_duration(metric):
            out[case_id][metric] = n
    return out


def _protect_hours(s: Session, store_id: str, day: int, hours: dict[int, dict[str, int]]
                   ) -> tuple[list[str], dict[int, set[str]]]:
    """A day's store-hours, protected within their store-day, linked metrics together."""
    per_case = _day_cases(s, store_id, day)
    metrics = sorted({m for cells in hours.values() for m in cells}, key=_order)
    whole = {m: sum(cells.get(m, 0) for cells in per_case.values()) for m in
             {m for cells in per_case.values() for m in cells}}
    _top, _hc, hide = protect_day(whole, per_case, hours)
    return metrics, hide


def store_hours(s: Session, store_id: str, day: int) -> dict[str, list[Figure]]:
    """One whole UTC day of a store hour by hour: per metric 24 store-hour cells, protected within
    their store-day (suppress rule 3) and across linked metrics. Health and duration metrics are
    left out (the day's view has them)."""
    hours = _hour_cells(s, store_id, day, day + DAY).get(day, {})
    metrics, hide = _protect_hours(s, store_id, day, hours)
    return {m: [cell(hours[h].get(m, 0), m in hide[h]) if h in hours else cell(0) for h in range(24)]
            for m in metrics}


def hour_durations(s: Session, store_id: str, day: int) -> dict[str, list[tuple[Figure, Figure]]]:
    """One whole UTC day of a store hour by hour: p50/p90 of each duration per store-hour, over K
    samples or more (suppress rule 5)."""
    hist: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    for hour, metric, n in s.execute(
            select(AnalyticsHour.hour, AnalyticsHour.metric, func.sum(AnalyticsHour.n)).where(
                AnalyticsHour.store_id == store_id, AnalyticsHour.hour >= day, AnalyticsHour.hour < day + DAY)
            .group_by(AnalyticsHour.hour, AnalyticsHour.metric)):
        if is_duration(metric):
            name, b = metric.split(":", 1)
            hist[(name, (hour % DAY) // HOUR)][int(b)] += int(n)
    return {name: [quantiles(hist.get((name, h), Counter()), name) for h in range(24)] for name in DURATIONS}


RANKED = ("abandon_code", "abandon_phone", "forced", "held_open", "tamper", "code_burst", "after_hours")


def share(part: Figure | None, whole: Figure | None) -> Figure:
    """part / whole of two sums of shown cells, as a percentage; only over K or more."""
    if part is None or whole is None or part.value is None or not whole.value or whole.value < K:
        return Figure(None, "–")
    pct = round(100 * part.value / whole.value)
    return Figure(pct, f"{pct} %", part.partial or whole.partial)


def _order(metric: str) -> tuple[int, str]:
    keys = list(LABELS)
    return (keys.index(metric) if metric in keys else len(keys), metric)


def label(metric: str) -> str:
    if metric in LABELS:
        return LABELS[metric]
    if metric.startswith("fw:"):
        return f"Boots on firmware {metric[3:]}"
    if metric.startswith("fault:"):
        return f"Faults: {metric[6:]}"
    return {"boot": "Boots", "fault": "Faults"}.get(metric, metric)


# --- the fleet -----------------------------------------------------------------------------------

FLEET = ("grants", "requests", "abandons", "forced", "help", "after_hours")


@dataclass
class FleetView:
    start: int
    end: int
    stores: list[tuple[str, str, dict[str, Figure]]] = field(default_factory=list)  # id, name, figures
    totals: dict[str, Figure] = field(default_factory=dict)
    firmware: list[tuple[str, int]] = field(default_factory=list)  # current versions, cases on each


def fleet_view(s: Session, now: int, days: int, store_ids: Iterable[str] | None = None) -> FleetView:
    """Per store the sums of its shown store-day cells (so nothing below a store's rule shows)."""
    q = select(Store.id, Store.name).order_by(Store.id)
    if store_ids is not None:
        q = q.where(Store.id.in_(list(store_ids)))
    stores = list(s.execute(q))
    start, end = period(now, days)
    fv = FleetView(start, end)
    for sid, name in stores:
        v = store_view(s, sid, now, days, with_hours=False)
        t = v.totals
        pick = {
            "grants": total([t[f"grant.{m}"] for m in SHOPPER if f"grant.{m}" in t]),
            "requests": total([t[m] for m in t if m.startswith("req.")]),
            "abandons": total([t[m] for m in ("abandon_code", "abandon_phone") if m in t]),
            "forced": t.get("forced", cell(0)), "help": t.get("help", cell(0)),
            "after_hours": t.get("after_hours", cell(0)),
            "trusted_share": v.trusted_share, "offline_min": v.health["offline_min"],
        }
        fv.stores.append((sid, name, pick))
    for k in FLEET:
        fv.totals[k] = total([f[k] for _, _, f in fv.stores])
    fw: Counter[str] = Counter()
    cq = select(Case.fw)
    if store_ids is not None:
        cq = cq.where(Case.store_id.in_([sid for sid, _ in stores]))
    for v_ in s.scalars(cq):
        fw[v_ or "unknown"] += 1
    fv.firmware = sorted(fw.items(), key=lambda kv: (-kv[1], kv[0]))
    return fv


# --- JSON and CSV ---------------------------------------------------------------------------------

def fig_json(f: Figure) -> dict[str, Any]:
    return {"value": f.value, "text": f.text, "partial": f.partial}


def store_json(v: StoreView) -> dict[str, Any]:
    return {
        "store": v.store_id, "from": day_label(v.start), "to": day_label(v.end - DAY), "k": K,
        "days": v.labels,
        "daily": {m: [fig_json(f) for f in figs] for m, figs in v.daily.items()},
        "totals": {m: fig_json(f) for m, f in v.totals.items()},
        "durations": {m: {"p50": fig_json(a), "p90": fig_json(b)} for m, (a, b) in v.durations.items()},
        "durations_daily": {m: [{"p50": fig_json(a), "p90": fig_json(b)} for a, b in per_day]
                            for m, per_day in v.durations_daily.items()},
        "trusted_share_pct": fig_json(v.trusted_share),
        "health": {m: fig_json(f) for m, f in v.health.items()},
        "opens_by_hour_utc": [fig_json(f) for f in v.by_hour],
        "cases": [{"case": c, **{m: fig_json(f) for m, f in row.items()}} for c, row in v.cases],
    }


def case_json(v: StoreView, case_id: str) -> dict[str, Any]:
    daily = v.case_daily.get(case_id, {})
    return {"store": v.store_id, "case": case_id, "from": day_label(v.start), "to": day_label(v.end - DAY), "k": K,
            "days": v.labels, "daily": {m: [fig_json(f) for f in figs] for m, figs in daily.items()},
            "totals": {m: fig_json(total(figs)) for m, figs in daily.items()},
            "durations": {m: {"p50": fig_json(a), "p90": fig_json(b)}
                          for m, (a, b) in v.case_durations.get(case_id, {}).items()}}


def hours_json(store_id: str, day: int, hours: dict[str, list[Figure]],
               durations: dict[str, list[tuple[Figure, Figure]]] | None = None) -> dict[str, Any]:
    return {"store": store_id, "day": day_label(day), "k": K, "hours_utc": [f"{h:02d}" for h in range(24)],
            "hourly": {m: [fig_json(f) for f in figs] for m, figs in hours.items()},
            "totals": {m: fig_json(total(figs)) for m, figs in hours.items()},
            "durations_hourly": {m: [{"p50": fig_json(a), "p90": fig_json(b)} for a, b in per_hour]
                                 for m, per_hour in (durations or {}).items()}}


def fleet_json(fv: FleetView) -> dict[str, Any]:
    return {"from": day_label(fv.start), "to": day_label(fv.end - DAY), "k": K,
            "stores": [{"store": sid, "name": name, **{k: fig_json(f) for k, f in figs.items()}}
                       for sid, name, figs in fv.stores],
            "totals": {k: fig_json(f) for k, f in fv.totals.items()},
            "firmware": [{"version": v, "cases": n} for v, n in fv.firmware]}


def _csv_safe(v: str) -> str:
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v


def store_csv(v: StoreView) -> str:
    """One line per figure as shown: section, row, column, value (text as shown), partial."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["store", "from", "to", "section", "row", "column", "value", "partial"])
    head = [v.store_id, day_label(v.start), day_label(v.end - DAY)]

    def line(section: str, row: str, col: str, f: Figure) -> None:
        w.writerow([*map(_csv_safe, head), section, _csv_safe(row), _csv_safe(col), f.text,
                    "yes" if f.partial else "no"])

    for m, figs in v.daily.items():
        for lab, f in zip(v.labels, figs, strict=True):
            line("daily", lab, m, f)
        line("daily", "total", m, v.totals[m])
    for m, (a, b) in v.durations.items():
        line("durations", m, "p50", a)
        line("durations", m, "p90", b)
    for m, per_day in v.durations_daily.items():
        for lab, (a, b) in zip(v.labels, per_day, strict=True):
            line("durations_daily", lab, f"{m}:p50", a)
            line("durations_daily", lab, f"{m}:p90", b)
    line("shares", "trusted_share_pct", "value", v.trusted_share)
    for m, f in v.health.items():
        line("health", m, "value", f)
    for h, f in enumerate(v.by_hour):
        line("opens_by_hour_utc", f"{h:02d}", "opened", f)
    for c, row in v.cases:
        for m, f in row.items():
            line("cases", c, m, f)
    for c in sorted(v.case_durations):
        for m, (a, b) in v.case_durations[c].items():
            if a.value is not None:  # a case's times over the period, where it has 5 samples or more
                line("case_durations", c, f"{m}:p50", a)
                line("case_durations", c, f"{m}:p90", b)
    for c in sorted(v.case_daily):
        for m, figs in v.case_daily[c].items():
            for lab, f in zip(v.labels, figs, strict=True):
                if f.value != 0:  # a zero cell adds a line for nothing
                    line("case_daily", f"{c} {lab}", m, f)
    return out.getvalue()
