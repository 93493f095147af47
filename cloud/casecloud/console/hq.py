"""HQ's pages: stores, cases (register, rotate, retire), users and roles, API tokens, the audit
log (managers read their stores' entries there too). A case's secrets and a new token are shown once, on the POST's answer (never in a URL)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from casecloud.accounts import audit, users
from casecloud.api import accounts, admin
from casecloud.api.deps import DB, Rt, Svc
from casecloud.api.schemas import CaseIn, StoreIn, TokenIn, UserIn, UserPatch, user_out
from casecloud.codec import INT_MAX, INT_MIN
from casecloud.console.web import Form, HqPage, ManagerPage, back, render
from casecloud.models import ApiToken, AuditEntry, Case, Store, User

router = APIRouter(include_in_schema=False)


def _why(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
    if isinstance(e, HTTPException):
        return str(e.detail)
    return str(e)


def _code(e: Exception) -> int:
    return e.status_code if isinstance(e, HTTPException) else 422


def _stores(s: DB) -> list[Store]:
    return list(s.scalars(select(Store).order_by(Store.id)))


@router.get("/console/hq/stores", response_class=HTMLResponse)
def stores_page(request: Request, s: DB, p: HqPage, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    return render(request, "hq_stores.html", p, stores=_stores(s), error=error, status_code=status_code)


@router.post("/console/hq/stores", response_class=HTMLResponse, response_model=None)
def create_store(request: Request, s: DB, rt: Rt, p: HqPage, f: Form) -> HTMLResponse | RedirectResponse:
    try:
        body = StoreIn.model_validate({"id": f("id"), "name": f("name"), "country": f("country", "US").upper()})
        admin.create_store(body, s, rt, p)
    except (ValidationError, HTTPException) as e:
        return stores_page(request, s, p, error=_why(e), status_code=_code(e))
    return back("/console/hq/stores", "store-created")


def _cases_page(request: Request, s: DB, p: HqPage, *, error: str | None = None, secrets: Any = None,
                status_code: int = 200) -> HTMLResponse:
    cases = list(s.scalars(select(Case).order_by(Case.store_id, Case.id)))
    return render(request, "hq_cases.html", p, cases=cases, stores=_stores(s), error=error, secrets=secrets,
                  status_code=status_code)


@router.get("/console/hq/cases", response_class=HTMLResponse)
def cases_page(request: Request, s: DB, p: HqPage) -> HTMLResponse:
    return _cases_page(request, s, p)


@router.post("/console/hq/cases", response_class=HTMLResponse)
def register_case(request: Request, svc: Svc, p: HqPage, f: Form) -> HTMLResponse:
    try:
        sec = admin.register_case(CaseIn.model_validate({"id": f("id"), "store": f("store"), "name": f("name")}), svc, p)
    except (ValidationError, HTTPException) as e:
        with svc.rt.sessions() as s:
            return _cases_page(request, s, p, error=_why(e), status_code=_code(e))
    with svc.rt.sessions() as s:
        return _cases_page(request, s, p, secrets=sec)


@router.post("/console/hq/cases/{case_id}/rotate", response_class=HTMLResponse)
def rotate_case(case_id: str, request: Request, svc: Svc, p: HqPage) -> HTMLResponse:
    sec = admin.rotate_case(case_id, svc, p)
    with svc.rt.sessions() as s:
        return _cases_page(request, s, p, secrets=sec)


@router.get("/console/hq/cases/{case_id}/retire", response_class=HTMLResponse)
def confirm_retire(case_id: str, request: Request, s: DB, p: HqPage) -> HTMLResponse:
    return render(request, "hq_retire.html", p, case=admin.get_case(s, case_id))


@router.post("/console/hq/cases/{case_id}/retire")
def retire_case(case_id: str, svc: Svc, p: HqPage) -> RedirectResponse:
    admin.delete_case(case_id, svc, p)
    return back("/console/hq/cases", "case-retired")


def _users_page(request: Request, s: DB, p: HqPage, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    rows = [user_out(u, users.stores_of(s, u)) for u in s.scalars(select(User).order_by(User.email))]
    return render(request, "hq_users.html", p, users=rows, stores=_stores(s), error=error, status_code=status_code)


@router.get("/console/hq/users", response_class=HTMLResponse)
def users_page(request: Request, s: DB, p: HqPage) -> HTMLResponse:
    return _users_page(request, s, p)


@router.post("/console/hq/users", response_class=HTMLResponse, response_model=None)
def create_user(request: Request, s: DB, rt: Rt, p: HqPage, f: Form) -> HTMLResponse | RedirectResponse:
    try:
        body = UserIn.model_validate({"email": f("email"), "password": f("password", max_length=2000),
                                      "role": f("role"), "display_name": f("display_name"), "stores": f.all("stores")})
        accounts.create_user(body, s, rt, p)
    except (ValidationError, HTTPException) as e:
        return _users_page(request, s, p, error=_why(e), status_code=_code(e))
    return back("/console/hq/users", "user-created")


@router.post("/console/hq/users/{user_id}", response_class=HTMLResponse, response_model=None)
def update_user(user_id: str, request: Request, s: DB, rt: Rt, p: HqPage, f: Form) -> HTMLResponse | RedirectResponse:
    try:
        body = UserPatch.model_validate({"role": f("role"), "stores": f.all("stores"), "disabled": f("disabled") == "on"})
        accounts.update_user(user_id, body, s, rt, p)
    except (ValidationError, HTTPException) as e:
        return _users_page(request, s, p, error=_why(e), status_code=_code(e))
    return back("/console/hq/users", "user-updated")


def _tokens_page(request: Request, s: DB, p: HqPage, *, error: str | None = None, created: Any = None,
                 status_code: int = 200) -> HTMLResponse:
    rows = list(s.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id)))
    return render(request, "hq_tokens.html", p, tokens=rows, stores=_stores(s), error=error, created=created,
                  status_code=status_code)


@router.get("/console/hq/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, s: DB, p: HqPage) -> HTMLResponse:
    return _tokens_page(request, s, p)


@router.post("/console/hq/tokens", response_class=HTMLResponse)
def create_token(request: Request, s: DB, rt: Rt, p: HqPage, f: Form) -> HTMLResponse:
    try:
        body = TokenIn.model_validate({"name": f("name"), "role": f("role"), "store": f("store") or None})
        created = accounts.create_token(body, s, rt, p)
    except (ValidationError, HTTPException) as e:
        return _tokens_page(request, s, p, error=_why(e), status_code=_code(e))
    s.flush()
    return _tokens_page(request, s, p, created=created)


@router.post("/console/hq/tokens/{token_id}/revoke")
def revoke_token(token_id: str, s: DB, rt: Rt, p: HqPage) -> RedirectResponse:
    accounts.revoke_token(token_id, s, rt, p)
    return back("/console/hq/tokens", "token-revoked")


@router.get("/console/audit", response_class=HTMLResponse)
def audit_page(request: Request, s: DB, p: ManagerPage, action: str | None = None,
               before: int | None = Query(None, ge=INT_MIN, le=INT_MAX)) -> HTMLResponse:
    q = audit.query(p.stores, action=action or None)
    if before is not None:
        q = q.where(AuditEntry.id < before)
    rows = list(s.scalars(q.limit(100)))
    return render(request, "audit.html", p, rows=rows, action=action or "",
                  older=rows[-1].id if len(rows) == 100 else None)
