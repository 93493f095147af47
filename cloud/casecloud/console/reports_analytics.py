"""The console's analytics pages (issue 14): a store's week at a glance
(`/console/stores/{id}/analytics`, a manager of the store or hq) and the fleet (`/console/analytics`,
hq). Figures come from analytics/publish.py, every count under its small-count rule; charts are our
own server-rendered SVG (no chart library). The CSV is the API's
(`/v1/admin/stores/{id}/analytics.csv`, which the session cookie opens too)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from casecloud.accounts.access import Principal
from casecloud.analytics import publish
from casecloud.analytics.hours import WEEKDAYS
from casecloud.analytics.metrics import SHOPPER
from casecloud.analytics.suppress import HIDDEN, Figure, K, total
from casecloud.api.analytics import HoursIn, set_hours
from casecloud.api.deps import DB, Rt
from casecloud.console.associates import store_or_404
from casecloud.console.web import Form, HqPage, StoreManagerPage, back, render
from casecloud.models import StoreHours
from casecloud.runtime import Runtime

router = APIRouter(include_in_schema=False)

_DAYS_RE = re.compile(r"[0-9]{1,3}")  # before int(): no 5,000-digit strings, no other scripts' digits
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")

METHOD_NAMES = {"phone": "Phone (texted code)", "card": "Card", "nfc": "NFC phone", "app": "App"}
# Series colours: told apart by pattern-free fills that keep AA contrast on white, and named in
# the legend and each segment's title, so colour is never the only cue.
COLOURS = {"phone": "#1f5fa8", "card": "#8a4b00", "nfc": "#2f7d32", "app": "#6b3fa0"}
THEFT = ("forced", "held_open", "tamper", "code_burst", "lockout", "key_flood", "after_hours")
ROWS = ("req.phone", "req.card", "req.nfc", "req.app", "grant.phone", "grant.card", "grant.nfc", "grant.app",
        "allow", "trusted", "abandon_code", "abandon_phone", "abandon_typed.phone", "abandon_typed.code",
        "help", "help_acked", "opened", *THEFT)


def table_rows(v: publish.StoreView) -> list[str]:
    """The per-day table's rows: the main figures in ROWS' order, then every other count the API
    shows (staff grants, other methods and steps), the denials by reason left out: what the JSON and
    the CSV carry, the page shows too (the template adds the denials after them)."""
    rest = [m for m in v.daily if m not in ROWS and not m.startswith("deny.")]
    return [m for m in ROWS if m in v.daily] + rest


def parse_days(raw: str | None) -> int:
    """The `days` query parameter of the reports and analytics pages: 1..90 whole days, else a 422
    that says so."""
    if raw is None or raw == "":
        return publish.DEFAULT_DAYS
    if not _DAYS_RE.fullmatch(raw) or not 1 <= int(raw) <= publish.MAX_DAYS:
        raise HTTPException(422, f"days: a whole number from 1 to {publish.MAX_DAYS}")
    return int(raw)


def stacked_chart(v: publish.StoreView) -> dict[str, Any]:
    """Grants per day stacked by method: each shown cell a segment; a hidden one is not drawn,
    and the day's label says the stack is a lower bound."""
    w, h = 640, 180
    days = len(v.days)
    zero = Figure(0, "0")
    per_day = [[v.daily.get(f"grant.{m}", [zero] * days)[i] for m in SHOPPER] for i in range(days)]
    tops = [sum(f.value or 0 for f in day) for day in per_day]
    top = max(tops, default=0) or 1
    bw = w / max(days, 1)
    bars = []
    for i, day in enumerate(per_day):
        y = float(h)
        segs = []
        for m, f in zip(SHOPPER, day, strict=True):
            if not f.value:
                continue
            sh = (h - 16) * f.value / top  # 16 px above the highest bar for its figure
            y -= sh
            segs.append({"y": round(y, 2), "h": round(sh, 2), "fill": COLOURS[m],
                         "title": f"{v.labels[i]}: {f.text} by {METHOD_NAMES[m]}"})
        t = total(day)
        bars.append({"x": round(i * bw + 1, 2), "w": round(max(bw - 2, 1), 2), "segs": segs, "partial": t.partial,
                     "title": f"{v.labels[i]}: {t.text} shoppers served", "text": t.text,
                     "mid": round(i * bw + bw / 2, 2),
                     # every day's date under its bar while they fit (two weeks), else the first and last
                     "label": v.labels[i][5:] if days <= 14 else ""})
    return {"w": w, "h": h, "bars": bars, "top": int(top), "labelled": days <= 14,
            "legend": [(COLOURS[m], METHOD_NAMES[m]) for m in SHOPPER]}


def hour_chart(v: publish.StoreView) -> dict[str, Any]:
    """Door opens per hour of day (UTC) over the period."""
    w, h = 640, 120
    top = max((f.value or 0 for f in v.by_hour), default=0) or 1
    bw = w / 24
    bars = []
    for hr, f in enumerate(v.by_hour):
        bh = h * (f.value or 0) / top
        bars.append({"x": round(hr * bw + 1, 2), "w": round(bw - 2, 2), "y": round(h - bh, 2), "h": round(bh, 2),
                     "partial": f.partial, "title": f"{hr:02d}:00-{hr:02d}:59 UTC: {f.text} door opens"})
    return {"w": w, "h": h, "bars": bars, "top": int(top)}


def tiles(v: publish.StoreView) -> list[tuple[str, Figure]]:
    t = v.totals
    zero = Figure(0, "0")
    served = total([t.get(f"grant.{m}", zero) for m in SHOPPER])
    asked = total([t[m] for m in t if m.startswith("req.")])
    abandons = total([t.get("abandon_code", zero), t.get("abandon_phone", zero)])
    p50, p90 = v.durations["h_open"]
    return [("Shoppers served", served), ("Unlock requests", asked), ("Trusted fast path", v.trusted_share),
            ("Abandoned flows", abandons), ("Forced entries", t.get("forced", zero)),
            ("Help calls", t.get("help", zero)),
            ("Time to door open, p50 / p90 (s)", Figure(p50.value, f"{p50.text} / {p90.text}")),
            ("Minutes offline", v.health["offline_min"])]


def _page(request: Request, s: Session, rt: Runtime, p: Principal, store_id: str, n: int, *,
          error: str | None = None, saved: bool = False, status_code: int = 200) -> HTMLResponse:
    st = store_or_404(s, store_id)
    v = publish.store_view(s, store_id, rt.now(), n)
    hours = s.get(StoreHours, store_id)
    rows = table_rows(v)
    return render(request, "analytics_store.html", p, store=st, v=v, days=n, max_days=publish.MAX_DAYS, k=K,
                  hidden=HIDDEN, tiles=tiles(v), chart=stacked_chart(v), hours_chart=hour_chart(v), rows=rows,
                  label=publish.label, durations=publish.DURATIONS, hours=hours, week=_week_fields(hours),
                  weekdays=WEEKDAYS, error=error, saved=saved, status_code=status_code,
                  health=[(m, f) for m, f in v.health.items() if m != "offline_min"])


@router.get("/console/stores/{store_id}/analytics", response_class=HTMLResponse)
def store_analytics_page(store_id: str, request: Request, s: DB, rt: Rt, p: StoreManagerPage,
                         days: str | None = None, hours: str | None = None) -> HTMLResponse:
    n = parse_days(days)  # after the page's guard: a caller of another store learns nothing here
    return _page(request, s, rt, p, store_id, n, saved=hours == "saved")


def _hhmm(v: str) -> int | None:
    m = _HHMM.fullmatch(v.strip())
    return None if m is None else int(m[1]) * 60 + int(m[2])


def _week_fields(row: StoreHours | None) -> list[tuple[str, str, bool]]:
    """(open, close, closed) per weekday for the form; a close at midnight is written 00:00."""
    week = row.week if row is not None and len(row.week) == 7 else [None] * 7
    out = []
    for day in week:
        if day is None:
            out.append(("", "", True))
        else:
            o, c = day[0], day[1] % 1440
            out.append((f"{o // 60:02d}:{o % 60:02d}", f"{c // 60:02d}:{c % 60:02d}", False))
    return out


@router.post("/console/stores/{store_id}/hours", response_class=HTMLResponse, response_model=None)
def store_hours_form(store_id: str, request: Request, s: DB, rt: Rt, p: StoreManagerPage, f: Form
                     ) -> HTMLResponse | RedirectResponse:
    """The store's hours from the analytics page's form, through the API's own route (checked,
    audited, after-hours opens recounted). A close of 00:00 is midnight at the day's end."""
    store_or_404(s, store_id)
    week: list[list[int] | None] = []
    error = None
    for i, name in enumerate(WEEKDAYS):
        if f(f"closed{i}"):
            week.append(None)
            continue
        o, c = _hhmm(f(f"open{i}", max_length=5)), _hhmm(f(f"close{i}", max_length=5))
        if o is None or c is None:
            error = f"{name}: opening and closing times as HH:MM, or closed"
            break
        week.append([o, c or 1440])
    if error is None:
        try:
            body = HoursIn(tz=f("tz", max_length=64).strip(), week=week)
            set_hours(store_id, body, s, rt, p)
        except HTTPException as e:
            error = str(e.detail)
        except ValidationError:
            error = "tz: an IANA time zone name such as Europe/Berlin"
    if error is not None:  # refused before anything was written
        return _page(request, s, rt, p, store_id, publish.DEFAULT_DAYS, error=error, status_code=422)
    return back(f"/console/stores/{store_id}/analytics?hours=saved")


@router.get("/console/analytics", response_class=HTMLResponse)
def fleet_page(request: Request, s: DB, rt: Rt, p: HqPage, days: str | None = None) -> HTMLResponse:
    n = parse_days(days)
    fv = publish.fleet_view(s, rt.now(), n)
    top = max((f["grants"].value or 0 for _, _, f in fv.stores), default=0) or 1
    bars = [{"y": i * 26, "w": round(400 * (f["grants"].value or 0) / top, 2), "label": name or sid,
             "text": f["grants"].text,
             "title": f"{name or sid}: {f['grants'].text} shoppers served"} for i, (sid, name, f) in enumerate(fv.stores)]
    return render(request, "analytics_fleet.html", p, fv=fv, days=n, max_days=publish.MAX_DAYS, k=K,
                  start=publish.day_label(fv.start), end=publish.day_label(fv.end - 86_400),
                  chart={"bars": bars, "h": max(len(bars) * 26, 26), "top": int(top)})
