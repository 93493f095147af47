"""/v1/auth, /v1/me, /v1/bootstrap: signing in and out of the console, who am I, and the first HQ
account (docs/accounts.md)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import asyncio
import json
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError

from casecloud.accounts import audit, bootstrap, login, passwords, sessions, tokens, users
from casecloud.accounts.access import Principal, client_address, current_principal, same_site
from casecloud.api.admin import bad
from casecloud.api.deps import DB, Rt, bootstrap_token
from casecloud.api.schemas import (
    BootstrapIn,
    BootstrapOut,
    LoginIn,
    LoginOut,
    MeOut,
    MyPasswordIn,
    TokenCreated,
    token_out,
    user_out,
)
from casecloud.models import User
from casecloud.registry import Invalid

router = APIRouter(tags=["accounts"])

_FORM = "application/x-www-form-urlencoded"
_LOGIN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": LoginIn.model_json_schema()},
    _FORM: {"schema": LoginIn.model_json_schema()}}}}


@router.post("/v1/bootstrap/hq-user", status_code=201, dependencies=[Depends(bootstrap_token)],
             responses={401: {}, 403: {"description": "an HQ user exists: the bootstrap is over"}})
def bootstrap_hq(body: BootstrapIn, s: DB, rt: Rt, request: Request) -> BootstrapOut:
    """With the settings' admin token, while the cloud has no HQ user: create the first one (and,
    with `token_name`, an hq API token for scripts and casectl, shown once). Refused after."""
    now = rt.now()
    who = audit.Actor("bootstrap", None, audit.truncate_ip(client_address(request)))
    try:
        u = bootstrap.create_first_hq(s, now, email=body.email, password=body.password,
                                      display_name=body.display_name)
    except bootstrap.Done as e:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(e)) from None
    except ValueError as e:
        raise bad(e) from None
    audit.record(s, who, "user.create", now, target=("user", u.id), detail={"role": "hq", "bootstrap": True})
    token = None
    if body.token_name:
        t = tokens.issue(s, u, now, name=body.token_name, role="hq", store=None)
        audit.record(s, who, "token.create", now, target=("token", t.row.id), detail={"role": "hq"})
        token = TokenCreated(**token_out(t.row).model_dump(), token=t.raw)
    return BootstrapOut(user=user_out(u, None), token=token)


async def _login_body(request: Request) -> tuple[LoginIn, bool]:
    """The login's fields from JSON or a form; and whether it was a form."""
    is_form = request.headers.get("content-type", "").lower().startswith(_FORM)
    try:
        if is_form:
            form = await request.form()
            return LoginIn.model_validate({k: v for k, v in form.items() if isinstance(v, str)}), True
        return LoginIn.model_validate(json.loads(await request.body() or b"null")), False
    except (ValidationError, ValueError) as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "email and password are required") from e


def _next_path(nxt: str | None) -> str | None:
    """Only a path on this site: never another host (`//evil`, `/\\evil`, a URL)."""
    if nxt and nxt.startswith("/") and not nxt.startswith(("//", "/\\")) and "\x00" not in nxt:
        return nxt
    return None


@router.post("/v1/auth/login", openapi_extra=_LOGIN_BODY,
             responses={200: {"model": LoginOut}, 303: {"description": "a form login with `next`"},
                        401: {"description": "wrong email or password, or the account cannot sign in now"},
                        403: {"description": "from another site"}, 429: {"description": "too many failed logins"}})
async def login_route(request: Request, rt: Rt) -> Response:
    """Sign in with email and password (JSON, or a form with `email`, `password` and optionally
    `next`): sets the session cookie and answers the CSRF token. Whether an account exists is
    not told, by the answer or by its time."""
    body, is_form = await _login_body(request)
    if not same_site(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "login from another site")
    st = rt.settings
    old = request.cookies.get(sessions.cookie_name(st))
    client = client_address(request)
    attempt = login.Attempt(body.email, body.password, client, rt.now())
    agent = request.headers.get("user-agent", "")

    def run() -> tuple[User, frozenset[str] | None, sessions.Started] | Exception:
        try:  # counted first, committed alone: parallel attempts see each other (login.reserve)
            with rt.sessions.begin() as s:
                login.reserve(s, attempt, st, rt.hasher)
        except login.RateLimited as e:
            return e
        with rt.sessions.begin() as s:  # committed on refusal too: the lockout and the audit
            try:
                user = login.authenticate(s, attempt, st, rt.hasher)
            except login.Refused as e:
                return e
            started = sessions.start(s, user, attempt.now, st, user_agent=agent,
                                     ip=audit.truncate_ip(client), replacing=old)
            audit.record(s, audit.Actor(f"user:{user.id}", user.id, audit.truncate_ip(client)), "auth.login",
                         attempt.now, target=("user", user.id))
            return user, users.stores_of(s, user), started

    got = await asyncio.to_thread(run)
    nxt = _next_path(body.next) if is_form else None
    if isinstance(got, Exception) and nxt:  # the console's login form: its page says why
        why = "limited" if isinstance(got, login.RateLimited) else "refused"
        return RedirectResponse(f"/console/login?error={why}&next={quote(nxt, safe='/')}",
                                status_code=status.HTTP_303_SEE_OTHER)
    if isinstance(got, login.RateLimited):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(got))
    if isinstance(got, Exception):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(got))
    user, stores, started = got
    response: Response
    if nxt:
        response = RedirectResponse(nxt, status_code=status.HTTP_303_SEE_OTHER)
    else:
        out = LoginOut(user=user_out(user, stores), csrf_token=sessions.csrf_token(started.row),
                       expires_at=started.row.expires_at)
        response = JSONResponse(out.model_dump())
    sessions.set_cookie(response, started.raw_id, started.row, attempt.now, st)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/v1/auth/logout", status_code=204)
def logout(request: Request, s: DB, rt: Rt, p: Annotated[Principal, Depends(current_principal)]) -> Response:
    """End this session (its row is deleted) and clear the cookie. With an API token: nothing to end."""
    response = Response(status_code=204)
    raw = request.cookies.get(sessions.cookie_name(rt.settings))
    if p.via == "session" and raw:
        sessions.end(s, raw)
        audit.record(s, p.actor, "auth.logout", rt.now(), target=("user", p.user_id))
        sessions.clear_cookie(response, rt.settings)
    return response


def _me(s: DB, p: Principal) -> MeOut:
    u = users.get(s, p.user_id)
    assert u is not None  # the principal was made from it in this request
    return MeOut(user=user_out(u, users.stores_of(s, u)), via=p.via, role=p.role,
                 stores=None if p.stores is None else sorted(p.stores), token_id=p.token_id,
                 csrf_token=p.csrf_token)


@router.get("/v1/me")
def me(s: DB, p: Annotated[Principal, Depends(current_principal)]) -> MeOut:
    """Who this request acts as: the user, the role and stores it acts with, the CSRF token."""
    return _me(s, p)


@router.post("/v1/me/password", responses={401: {}, 403: {"description": "an API token, or not the current password"}})
def change_my_password(body: MyPasswordIn, request: Request, s: DB, rt: Rt,
                       p: Annotated[Principal, Depends(current_principal)]) -> Response:
    """A signed-in user's new password (the current one first). Every session of theirs ends; this
    browser gets a new one (a new cookie and CSRF token)."""
    if p.via != "session":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in to the console to change your password")
    u = users.get(s, p.user_id)
    assert u is not None
    if not passwords.verify(u.password_hash, body.current):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
    now = rt.now()
    try:
        login.new_password(s, rt.hasher, u, body.new, now)
    except Invalid as e:
        raise bad(e) from None
    started = sessions.start(s, u, now, rt.settings, user_agent=request.headers.get("user-agent", ""), ip=p.ip)
    audit.record(s, p.actor, "user.password", now, target=("user", u.id))
    out = LoginOut(user=user_out(u, users.stores_of(s, u)), csrf_token=sessions.csrf_token(started.row),
                   expires_at=started.row.expires_at)
    response = JSONResponse(out.model_dump())
    sessions.set_cookie(response, started.raw_id, started.row, now, rt.settings)
    return response
