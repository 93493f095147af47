"""The associate's pages (and everyone's above them): a store's case grid, a case with its event
timeline and the relock button, the store's alarms and help calls with acknowledge and resolve.

Every change goes through the API's own route functions (admin.py, admin_records.py), so a page
and the API check, change and audit the same way."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casecloud.accounts.access import visible_case
from casecloud.api import admin, admin_records
from casecloud.api.deps import DB, Rt, Svc
from casecloud.api.schemas import AlertAckIn, AlertResolveIn
from casecloud.codec import INT_MAX
from casecloud.console.web import AssociatePage, Form, StorePage, back, render
from casecloud.models import Alert, Case, Event, Store

router = APIRouter(include_in_schema=False)

AlertId = Annotated[int, Path(ge=1, le=INT_MAX)]
UNRESOLVED = ("open", "acknowledged")


def store_or_404(s: Session, store_id: str) -> Store:
    st = s.get(Store, store_id)
    if st is None:
        raise HTTPException(404, f"no store {store_id}")
    return st


def open_alerts(s: Session, *, store: str | None = None, case: str | None = None) -> list[Alert]:
    q = select(Alert).where(Alert.state.in_(UNRESOLVED))
    if store is not None:
        q = q.where(Alert.store_id == store)
    if case is not None:
        q = q.where(Alert.case_id == case)
    return list(s.scalars(q.order_by(Alert.id.desc()).limit(200)))


def case_rows(s: Session, store_id: str) -> list[dict[str, Any]]:
    """The grid: each case's state, its unresolved alarms and its newest event."""
    cases = list(s.scalars(select(Case).where(Case.store_id == store_id).order_by(Case.id)))
    alarms: dict[str, int] = dict(s.execute(  # type: ignore[arg-type]
        select(Alert.case_id, func.count()).where(Alert.store_id == store_id, Alert.state.in_(UNRESOLVED))
        .group_by(Alert.case_id)).all())
    newest = select(Event.case_id, func.max(Event.ts).label("ts")).where(Event.store_id == store_id).group_by(
        Event.case_id).subquery()
    last: dict[str, Event] = {}
    for e in s.scalars(select(Event).join(newest, (Event.case_id == newest.c.case_id) & (Event.ts == newest.c.ts))
                       .order_by(Event.id)):
        last[e.case_id] = e
    return [{"case": c, "st": c.last_status or {}, "alarms": alarms.get(c.id, 0), "last": last.get(c.id)}
            for c in cases]


@router.get("/console/stores/{store_id}", response_class=HTMLResponse)
def store_page(store_id: str, request: Request, s: DB, p: StorePage) -> HTMLResponse:
    st = store_or_404(s, store_id)
    return render(request, "store.html", p, store=st, rows=case_rows(s, store_id),
                  alerts=open_alerts(s, store=store_id))


@router.get("/console/stores/{store_id}/alarms", response_class=HTMLResponse)
def alarms_page(store_id: str, request: Request, s: DB, p: StorePage) -> HTMLResponse:
    st = store_or_404(s, store_id)
    recent = list(s.scalars(select(Alert).where(Alert.store_id == store_id, Alert.state == "resolved")
                            .order_by(Alert.id.desc()).limit(20)))
    return render(request, "alarms.html", p, store=st, alerts=open_alerts(s, store=store_id), recent=recent)


@router.get("/console/cases/{case_id}", response_class=HTMLResponse)
def case_page(case_id: str, request: Request, s: DB, p: AssociatePage) -> HTMLResponse:
    c = visible_case(s, p, case_id)
    events = list(s.scalars(select(Event).where(Event.case_id == case_id)
                            .order_by(Event.ts.desc(), Event.id.desc()).limit(50)))
    return render(request, "case.html", p, case=c, st=c.last_status or {}, events=events,
                  alerts=open_alerts(s, case=case_id), store=s.get(Store, c.store_id))


@router.post("/console/cases/{case_id}/relock")
async def relock(case_id: str, svc: Svc, p: AssociatePage) -> RedirectResponse:
    # admin.relock: 404 for another store's case, audited with the case's answer
    res = await admin.relock(case_id, svc, p)
    return back(f"/console/cases/{case_id}", "relock-ok" if res.ok else "relock-refused")


def _return_to(nxt: str, fallback: str) -> str:
    return nxt if nxt.startswith("/console/") and not nxt.startswith("/console//") else fallback


@router.post("/console/alerts/{alert_id}/ack")
def ack(alert_id: AlertId, s: DB, rt: Rt, p: AssociatePage, f: Form) -> RedirectResponse:
    a = admin_records.ack_alert(alert_id, AlertAckIn(by=p.label[:100]), s, rt, p)
    return back(_return_to(f("next"), f"/console/stores/{a.store}/alarms"), "acked")


@router.post("/console/alerts/{alert_id}/resolve")
def resolve(alert_id: AlertId, s: DB, rt: Rt, p: AssociatePage, f: Form) -> RedirectResponse:
    a = admin_records.resolve_alert(alert_id, AlertResolveIn(by=p.label[:100]), s, rt, p)
    return back(_return_to(f("next"), f"/console/stores/{a.store}/alarms"), "resolved")
