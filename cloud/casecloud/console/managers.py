"""The manager's pages: a store's staff credentials (add, revoke; each case's sync of them), loyalty
members (search by phone, flag, trust, erase, each confirmed first) and a store's event log.

The phone typed into the search is POSTed, hashed by the API's lookup (admin_records.find_member)
and never shown, put in a URL or logged: the results page is the POST's answer."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import re
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from casecloud import desired
from casecloud.api import admin, admin_records
from casecloud.api.deps import DB, Rt, Svc
from casecloud.api.schemas import PhoneQuery, StaffIn
from casecloud.codec import INT_MAX, INT_MIN
from casecloud.console.associates import store_or_404
from casecloud.console.web import Form, ManagerPage, StoreManagerPage, back, render
from casecloud.models import Case, Event, Member, Staff

router = APIRouter(include_in_schema=False)

MemberAction = Literal["flag", "trust", "erase"]


def _staff_page(request: Request, s: DB, p: ManagerPage, store_id: str, error: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    st = store_or_404(s, store_id)
    staff = list(s.scalars(select(Staff).where(Staff.store_id == store_id).order_by(Staff.id)))
    cases = [(c, desired.pending(c)) for c in s.scalars(select(Case).where(Case.store_id == store_id)
                                                         .order_by(Case.id))]
    return render(request, "staff.html", p, store=st, staff=staff, cases=cases, error=error,
                  status_code=status_code)


@router.get("/console/stores/{store_id}/staff", response_class=HTMLResponse)
def staff_page(store_id: str, request: Request, s: DB, p: StoreManagerPage) -> HTMLResponse:
    return _staff_page(request, s, p, store_id)


@router.post("/console/stores/{store_id}/staff", response_class=HTMLResponse, response_model=None)
async def add_staff(store_id: str, request: Request, svc: Svc, p: StoreManagerPage, f: Form
                    ) -> HTMLResponse | RedirectResponse:
    try:
        body = StaffIn.model_validate({"kind": f("kind"), "hash": f("hash").strip().lower(), "label": f("label")})
        await admin.add_staff(store_id, body, svc, p)
    except (ValidationError, HTTPException) as e:
        why = "the hash must be 64 hex digits (casectl computes it with the case's salt)" \
            if isinstance(e, ValidationError) else str(e.detail)
        with svc.rt.sessions() as s:
            return _staff_page(request, s, p, store_id, error=why,
                               status_code=e.status_code if isinstance(e, HTTPException) else 422)
    return back(f"/console/stores/{store_id}/staff", "staff-added")


@router.post("/console/staff/{staff_id}/revoke")
async def revoke_staff(staff_id: str, svc: Svc, p: ManagerPage) -> RedirectResponse:
    out = await admin.delete_staff(staff_id, svc, p)  # 404 for another store's, as a missing one
    return back(f"/console/stores/{out.store}/staff", "staff-revoked")


@router.get("/console/members", response_class=HTMLResponse)
def members_page(request: Request, p: ManagerPage) -> HTMLResponse:
    return render(request, "members.html", p, found=None, error=None)


@router.post("/console/members/search", response_class=HTMLResponse)
def search_members(request: Request, s: DB, rt: Rt, p: ManagerPage, f: Form) -> HTMLResponse:
    try:
        # as typed on a phone's keypad or in print: the digits (and a leading +) are the number
        phone = re.sub(r"[^\d+]", "", f("phone", max_length=40))
        q = PhoneQuery.model_validate({"phone": phone, "country": f("country", "US").upper()})
        found = admin_records.find_member(q, s, rt, p)
    except ValidationError:
        return render(request, "members.html", p, found=None, error="country: two letters", status_code=422)
    except HTTPException as e:
        return render(request, "members.html", p, found=None, error=str(e.detail), status_code=422)
    return render(request, "members.html", p, found=found, error=None)


@router.get("/console/members/{member_id}/{action}", response_class=HTMLResponse)
def confirm_member(member_id: str, action: MemberAction, request: Request, s: DB, p: ManagerPage) -> HTMLResponse:
    """The confirmation step: nothing changes until its form is posted."""
    m = s.get(Member, member_id)
    if m is None:
        raise HTTPException(404, f"no member {member_id}")
    return render(request, "member_confirm.html", p, member=m, action=action)


@router.post("/console/members/{member_id}/{action}")
def change_member(member_id: str, action: MemberAction, s: DB, rt: Rt, p: ManagerPage) -> RedirectResponse:
    if action == "erase":
        admin_records.erase(member_id, s, rt, p)
        return back("/console/members", "member-erased")
    admin_records.set_status(s, rt, p, member_id, "flagged" if action == "flag" else "trusted")
    return back("/console/members", "member-flagged" if action == "flag" else "member-trusted")


@router.get("/console/stores/{store_id}/events", response_class=HTMLResponse)
def events_page(store_id: str, request: Request, s: DB, p: StoreManagerPage, case: str | None = None,
                before: int | None = Query(None, ge=INT_MIN, le=INT_MAX)) -> HTMLResponse:
    st = store_or_404(s, store_id)
    q = select(Event).where(Event.store_id == store_id)
    if case:
        q = q.where(Event.case_id == case)
    if before is not None:
        q = q.where(Event.id < before)
    events = list(s.scalars(q.order_by(Event.id.desc()).limit(100)))
    return render(request, "events.html", p, store=st, events=events, case=case or "",
                  older=events[-1].id if len(events) == 100 else None)
