"""Who is asking, and may they: FastAPI dependencies for the API routes and the console's pages.

    from casecloud.accounts.access import Principal, require, current_principal

    @router.get("/v1/admin/stores/{store_id}/pending")
    def pending(store_id: str, p: Annotated[Principal, Depends(require("manager", store_param="store_id"))]): ...

- `current_principal`: the caller, from `Authorization: Bearer <API token>` or else the session
  cookie; 401 without either. A state-changing request (not GET, HEAD, OPTIONS) authenticated by
  the cookie must carry the session's CSRF token (form field `csrf_token` or header
  `X-CSRF-Token`) and must not come from another site (Origin, Sec-Fetch-Site): 403 otherwise.
  A bearer token needs no CSRF token: browsers never attach one by themselves.
- `optional_principal`: the same, None instead of a 401 (a page that shows a login form).
- `require(role, store_param=...)`: at least that role (403 otherwise, before any lookup), and,
  with `store_param`, the store named by that path parameter among the caller's stores.
- A store the caller may not see answers exactly as a store that does not exist (404 "no store
  X"), and so do its cases, alerts and staff credentials (`visible_case`, `Principal.check_store`):
  store and case ids cannot be probed. Lists are filtered to the caller's stores
  (`Principal.store_clause`).
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from casecloud.accounts import audit, sessions, tokens, users
from casecloud.accounts.roles import Role, at_least, parse
from casecloud.models import Case, LoginSession
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.accounts")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class Principal:
    """The caller: a user through their console session, or an API token (acting with the token's
    role and store, for the user who created it)."""

    via: Literal["session", "token"]
    user_id: str
    email: str
    display_name: str
    role: Role  # the session's user's role, or the token's
    stores: frozenset[str] | None  # the stores it acts for; None: every store (hq)
    ip: str  # truncated (audit.truncate_ip)
    token_id: str | None = None
    session: LoginSession | None = None  # the session's row (detached), for its CSRF token

    def at_least(self, role: Role) -> bool:
        return at_least(self.role, role)

    def sees(self, store_id: str | None) -> bool:
        return self.stores is None or (store_id is not None and store_id in self.stores)

    def check_store(self, store_id: str) -> None:
        """404 for a store outside the caller's, worded as for a store that does not exist."""
        if not self.sees(store_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no store {store_id}")

    def store_clause(self, column: Any) -> Any:
        """A WHERE clause keeping rows of the caller's stores, or None for hq (no filter)."""
        return None if self.stores is None else column.in_(sorted(self.stores))

    @property
    def actor(self) -> audit.Actor:
        who = f"token:{self.token_id}" if self.token_id else f"user:{self.user_id}"
        return audit.Actor(who, self.user_id, self.ip)

    @property
    def label(self) -> str:
        """How the console names the caller (an alert's `acked_by`, say)."""
        return self.display_name or self.email

    @property
    def csrf_token(self) -> str | None:
        """The token a page renders into its forms; None for a bearer token (it needs none)."""
        return sessions.csrf_token(self.session) if self.session is not None else None


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


def client_address(request: Request) -> str:
    # The ASGI peer; behind a proxy, uvicorn's --forwarded-allow-ips makes it the client's.
    return (request.client.host if request.client else "")[:64]


_bearer = HTTPBearer(auto_error=False, description="an API token (POST /v1/tokens)")


def _cookie_scheme(request: Request) -> str | None:
    return request.cookies.get(sessions.cookie_name(runtime(request).settings))


def _authenticate(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                  ) -> Principal | None:
    rt = runtime(request)
    now, ip = rt.now(), audit.truncate_ip(client_address(request))
    with rt.sessions() as s:
        p = _caller(s, rt, request, cred.credentials if cred is not None else None, now, ip)
        _save_bookkeeping(s)
    if p is None and cred is not None:
        admin = rt.settings.admin_bearer()
        hint = ("the admin token only creates the first HQ account (POST /v1/bootstrap/hq-user); "
                "use an API token" if hmac.compare_digest(cred.credentials.encode(), admin.encode())
                else "unknown or revoked API token")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, hint, headers={"WWW-Authenticate": "Bearer"})
    return p


def reauthenticate(request: Request) -> Principal | None:
    """The caller as the request's credentials say now, for a response that lasts (the console's
    live alarms): None once the session has ended or expired, the token was revoked, or the user
    was disabled; their current role and stores otherwise. Read only: an open stream is not
    activity, so the session's idle clock is not moved (the transaction is never committed)."""
    rt = runtime(request)
    now, ip = rt.now(), audit.truncate_ip(client_address(request))
    auth = request.headers.get("authorization", "")
    with rt.sessions() as s:
        return _caller(s, rt, request, auth[7:].strip() if auth[:7].lower() == "bearer " else None, now, ip)


def _caller(s: Session, rt: Runtime, request: Request, bearer: str | None, now: int, ip: str) -> Principal | None:
    if bearer is not None:  # a bearer header decides alone, even beside a cookie
        return _from_token(s, bearer, now, ip)
    raw = _cookie_scheme(request)
    return _from_session(s, rt, raw, now, ip) if raw else None


def _from_token(s: Session, raw: str, now: int, ip: str) -> Principal | None:
    found = tokens.find(s, raw, now)
    if found is None:
        return None
    tok, user = found
    role = parse(tok.role)
    stores = None if role == "hq" else frozenset({tok.store_id} if tok.store_id else ())
    return Principal("token", user.id, user.email, user.display_name, role, stores, ip, token_id=tok.id)


def _from_session(s: Session, rt: Runtime, raw: str, now: int, ip: str) -> Principal | None:
    row = sessions.find(s, raw, now, rt.settings)
    if row is None:
        return None
    user = users.get(s, row.user_id)
    if user is None or user.disabled:
        return None
    return Principal("session", user.id, user.email, user.display_name, parse(user.role), users.stores_of(s, user), ip,
                     session=row)


def _save_bookkeeping(s: Session) -> None:
    """Last-used times and expired sessions: written when due, and never the reason a request
    fails (the request's own transaction reports a database that is down). Committed whatever
    `s.dirty` says: the lookups after a change have autoflushed it already."""
    try:
        s.commit()
    except Exception as e:  # noqa: BLE001 - bookkeeping only; logged
        s.rollback()
        log.warning("session or token bookkeeping not saved: %s", e)


def same_site(request: Request) -> bool:
    """False for a request a browser says came from another site (CSRF defence in depth)."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return origin != "null"


async def check_csrf(request: Request, p: Principal) -> None:
    """403 unless the request carries the session's CSRF token and comes from this site."""
    if p.session is None or request.method in SAFE_METHODS:
        return
    token = request.headers.get(sessions.CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").lower().startswith(_FORMS):
        form = await request.form()
        field = form.get(sessions.CSRF_FIELD)
        token = field if isinstance(field, str) else None
    if not same_site(request) or not sessions.csrf_ok(p.session, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")


async def optional_principal(request: Request,
                             p: Annotated[Principal | None, Depends(_authenticate)]) -> Principal | None:
    if p is not None:
        await check_csrf(request, p)
    return p


async def current_principal(p: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if p is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in, or send an API token",
                            headers={"WWW-Authenticate": "Bearer"})
    return p


def require(role: Role = "associate", *, store_param: str | None = None
            ) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, with at least `role` (403 otherwise); with `store_param`, the store
    id in that path parameter must be one of the caller's (404 `no store X` otherwise)."""

    async def dependency(request: Request, p: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return permit(request, p, role, store_param)

    dependency.__name__ = f"require_{role}"
    return dependency


def permit(request: Request, p: Principal, role: Role, store_param: str | None) -> Principal:
    """`require`'s checks, for a dependency that finds its caller another way (the console's pages):
    the role first (403, before any lookup), then the path's store (404 when not the caller's)."""
    if not p.at_least(role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role or above")
    if store_param is not None:
        p.check_store(str(request.path_params.get(store_param, "")))
    return p


def visible_case(s: Session, p: Principal, case_id: str) -> Case:
    """The case, or 404 `no case X` when it does not exist or is in a store the caller may not see."""
    c = s.get(Case, case_id)
    if c is None or not p.sees(c.store_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
    return c


# Ready-made for the routes: `p: Associate` and so on.
Associate = Annotated[Principal, Depends(require("associate"))]
Manager = Annotated[Principal, Depends(require("manager"))]
Hq = Annotated[Principal, Depends(require("hq"))]
# a manager (or hq) of the store named by the path's {store_id}
StoreManager = Annotated[Principal, Depends(require("manager", store_param="store_id"))]
