"""Signing in and out, `/`, the console's start page (the caller's stores)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from casecloud.accounts.access import Principal, optional_principal
from casecloud.api import auth
from casecloud.api.deps import DB, Rt
from casecloud.console.web import AssociatePage, back, render
from casecloud.models import Store

router = APIRouter(include_in_schema=False)

LOGIN_ERRORS = {"refused": "Wrong email or password, or the account cannot sign in now.",
                "limited": "Too many failed sign-ins: wait a few minutes and try again."}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", 303)


@router.get("/console/login", response_class=HTMLResponse)
def login_page(request: Request, p: Annotated[Principal | None, Depends(optional_principal)],
               next: str = "/console", error: str = "") -> Response:  # noqa: A002 - the form's field
    nxt = auth._next_path(next) or "/console"  # noqa: SLF001 - the login's own rule for `next`
    if p is not None and p.via == "session":
        return RedirectResponse(nxt, 303)
    return render(request, "login.html", None, next=nxt, error=LOGIN_ERRORS.get(error))


@router.post("/console/logout")
def logout(request: Request, s: DB, rt: Rt, p: AssociatePage) -> Response:
    """The session ends (auth.logout: row deleted, audited, cookie cleared); back to the login."""
    ended = auth.logout(request, s, rt, p)
    resp = back("/console/login", "signed-out")
    resp.raw_headers.extend((k, v) for k, v in ended.raw_headers if k == b"set-cookie")
    return resp


@router.get("/console", response_class=HTMLResponse)
def home(request: Request, s: DB, p: AssociatePage) -> Response:
    q = select(Store).order_by(Store.id)
    if (mine := p.store_clause(Store.id)) is not None:
        q = q.where(mine)
    stores = list(s.scalars(q))
    if len(stores) == 1 and p.role != "hq":  # the usual associate: straight to their store
        return RedirectResponse(f"/console/stores/{stores[0].id}", 303)
    return render(request, "home.html", p, stores=stores)
