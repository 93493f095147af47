"""/v1/admin/.../analytics: store analytics (issue 14, docs/analytics.md), scoped as the rest of
the admin API (accounts/access.py): a store's figures (per day, per case and day, per hour of a
day), its CSV and its opening hours for a manager of that store (or hq), another store's (or case's)
answered as one that does not exist; the fleet and a full rebuild for hq. Every count is shown through analytics/suppress.py's rule (publish.py); periods
are whole UTC days before today, `days` 1..90."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import calendar
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from casecloud.accounts import audit
from casecloud.accounts.access import Hq, StoreManager
from casecloud.analytics import aggregate, hours, publish
from casecloud.api.deps import DB, Rt
from casecloud.models import Case, Store, StoreHours

router = APIRouter(tags=["analytics"])

Days = Annotated[int, Query(ge=1, le=publish.MAX_DAYS, description="whole UTC days before today")]
Minute = Annotated[int, Field(ge=0, le=1440)]  # minutes after local midnight (hours.validate checks the rest)


class HoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tz: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Berlin")
    week: list[list[Minute] | None] = Field(
        min_length=7, max_length=7,
        description="Monday first: [open, close] in minutes after local midnight, or null (closed)")


class HoursOut(BaseModel):
    store: str
    tz: str
    week: list[list[int] | None]
    recounted: int = 0


def _store(s: Session, store_id: str) -> Store:
    st = s.get(Store, store_id)
    if st is None:
        raise HTTPException(404, f"no store {store_id}")
    return st


@router.get("/v1/admin/stores/{store_id}/analytics")
def store_analytics(store_id: str, s: DB, rt: Rt, _p: StoreManager, days: Days = publish.DEFAULT_DAYS
                    ) -> dict[str, Any]:
    """A store's figures per day and in total, per hour of day, durations, health, its cases ranked."""
    _store(s, store_id)
    return publish.store_json(publish.store_view(s, store_id, rt.now(), days))


@router.get("/v1/admin/stores/{store_id}/analytics/cases/{case_id}")
def case_analytics(store_id: str, case_id: str, s: DB, rt: Rt, _p: StoreManager,
                   days: Days = publish.DEFAULT_DAYS) -> dict[str, Any]:
    """One case's figures per day: its case-day cells, protected within their store-day."""
    _store(s, store_id)
    c = s.get(Case, case_id)
    if c is None or c.store_id != store_id:
        raise HTTPException(404, f"no case {case_id}")
    return publish.case_json(publish.store_view(s, store_id, rt.now(), days, with_hours=False), case_id)


@router.get("/v1/admin/stores/{store_id}/analytics/hours")
def hourly_analytics(store_id: str, s: DB, rt: Rt, _p: StoreManager,
                     day: Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                                               description="a whole UTC day before today, YYYY-MM-DD")]
                     ) -> dict[str, Any]:
    """One whole UTC day of the store hour by hour (the last 90 days before today)."""
    _store(s, store_id)
    try:
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        raise HTTPException(422, "day: a date YYYY-MM-DD") from None
    first, end = publish.period(rt.now(), publish.MAX_DAYS)
    if not first <= start < end:
        raise HTTPException(422, f"day: a whole UTC day from {publish.day_label(first)} to "
                                 f"{publish.day_label(end - 86_400)} (today is shown once it is over)")
    return publish.hours_json(store_id, start, publish.store_hours(s, store_id, start),
                              publish.hour_durations(s, store_id, start))


@router.get("/v1/admin/stores/{store_id}/analytics.csv")
def store_analytics_csv(store_id: str, s: DB, rt: Rt, _p: StoreManager, days: Days = publish.DEFAULT_DAYS
                        ) -> Response:
    _store(s, store_id)
    v = publish.store_view(s, store_id, rt.now(), days)
    name = f"lockcase-analytics-{store_id}-{publish.day_label(v.start)}-{publish.day_label(v.end - 86_400)}.csv"
    return Response(publish.store_csv(v), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@router.get("/v1/admin/analytics/fleet")
def fleet_analytics(s: DB, rt: Rt, _p: Hq, days: Days = publish.DEFAULT_DAYS) -> dict[str, Any]:
    """Every store's main figures (each the sum of that store's shown cells), and firmware versions."""
    return publish.fleet_json(publish.fleet_view(s, rt.now(), days))


@router.get("/v1/admin/stores/{store_id}/hours")
def read_hours(store_id: str, s: DB, _p: StoreManager) -> HoursOut:
    _store(s, store_id)
    row = s.get(StoreHours, store_id)
    return HoursOut(store=store_id, tz=row.tz if row else "UTC", week=row.week if row else [None] * 7)


@router.put("/v1/admin/stores/{store_id}/hours")
def set_hours(store_id: str, body: HoursIn, s: DB, rt: Rt, p: StoreManager) -> HoursOut:
    """Set the store's opening hours, from today on: today's opens are recounted with them (today
    is never shown), the days already shown keep their counts. Recounting past days would let a
    manager read one hidden hour's opens as the difference of two settings (review M5)."""
    _store(s, store_id)
    try:
        week = hours.validate(body.tz, body.week)
    except hours.BadHours as e:
        raise HTTPException(422, str(e)) from None
    row = s.get(StoreHours, store_id)
    if row is None:
        s.add(StoreHours(store_id=store_id, tz=body.tz, week=week, updated_at=rt.now()))
    else:
        row.tz, row.week, row.updated_at = body.tz, week, rt.now()
    s.flush()
    today = rt.now() - rt.now() % 86_400
    n = aggregate.recount_store(s, store_id, rt.now(), rt.settings.otp_ttl_s, today)
    audit.record(s, p.actor, "store.hours", rt.now(), target=("store", store_id), store=store_id,
                 detail={"tz": body.tz})
    return HoursOut(store=store_id, tz=body.tz, week=week, recounted=n)


@router.post("/v1/admin/analytics/rebuild")
def rebuild_analytics(s: DB, rt: Rt, p: Hq) -> dict[str, int]:
    """Recompute every count from the stored events (counts of days whose events are gone stay)."""
    r = aggregate.rebuild(s, rt.now(), rt.settings.otp_ttl_s)
    audit.record(s, p.actor, "analytics.rebuild", rt.now(), detail={"events": r.events})
    return {"events": r.events, "cells": r.hours}
