"""/v1/users, /v1/tokens, /v1/audit: HQ manages the console's users and the API tokens; managers
read their stores' audit entries (docs/accounts.md)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from casecloud.accounts import audit, login, tokens, users
from casecloud.accounts.access import Hq, Manager
from casecloud.api.admin import bad
from casecloud.api.deps import DB, Rt
from casecloud.api.schemas import (
    AuditOut,
    PasswordIn,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
    audit_out,
    token_out,
    user_out,
)
from casecloud.codec import INT_MAX
from casecloud.models import ApiToken, User
from casecloud.registry import Invalid

router = APIRouter(tags=["accounts"])


def _user(s: DB, user_id: str) -> User:
    u = users.get(s, user_id)
    if u is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    return u


# users (hq)
@router.post("/v1/users", status_code=201)
def create_user(body: UserIn, s: DB, rt: Rt, p: Hq) -> UserOut:
    now = rt.now()
    try:
        u = users.create(s, now, email=body.email, password=body.password, role=body.role,
                         display_name=body.display_name, stores=body.stores)
    except ValueError as e:
        raise bad(e) from None
    stores = users.stores_of(s, u)
    audit.record(s, p.actor, "user.create", now, target=("user", u.id),
                 detail={"role": u.role, "stores": sorted(stores) if stores is not None else None})
    return user_out(u, stores)


@router.get("/v1/users")
def list_users(s: DB, _p: Hq) -> list[UserOut]:
    return [user_out(u, users.stores_of(s, u)) for u in s.scalars(select(User).order_by(User.email))]


@router.get("/v1/users/{user_id}")
def read_user(user_id: str, s: DB, _p: Hq) -> UserOut:
    u = _user(s, user_id)
    return user_out(u, users.stores_of(s, u))


@router.patch("/v1/users/{user_id}")
def update_user(user_id: str, body: UserPatch, s: DB, rt: Rt, p: Hq) -> UserOut:
    """Role, stores, name; `disabled: true` ends their sessions and stops their API tokens."""
    u = _user(s, user_id)
    try:
        changed = users.update(s, u, role=body.role, stores=body.stores, display_name=body.display_name,
                               disabled=body.disabled)
    except ValueError as e:
        raise bad(e) from None
    stores = users.stores_of(s, u)
    if changed:
        action = "user.disable" if changed == ["disabled"] and u.disabled else "user.update"
        audit.record(s, p.actor, action, rt.now(), target=("user", u.id),
                     detail={"fields": changed, "role": u.role, "disabled": u.disabled,
                             "stores": sorted(stores) if stores is not None else None})
    return user_out(u, stores)


@router.post("/v1/users/{user_id}/password")
def reset_password(user_id: str, body: PasswordIn, s: DB, rt: Rt, p: Hq) -> UserOut:
    """A new password for the user (give it to them out of band): their sessions end and a
    lockout is lifted."""
    u = _user(s, user_id)
    now = rt.now()
    try:
        login.new_password(s, rt.hasher, u, body.password, now)
    except Invalid as e:
        raise bad(e) from None
    audit.record(s, p.actor, "user.password_reset", now, target=("user", u.id))
    return user_out(u, users.stores_of(s, u))


# API tokens (hq)
@router.post("/v1/tokens", status_code=201)
def create_token(body: TokenIn, s: DB, rt: Rt, p: Hq) -> TokenCreated:
    """A bearer token for the API, shown this once. hq: every store; associate or manager: the one
    `store`. It is created on behalf of the caller (a token's creator when a token calls)."""
    creator = _user(s, p.user_id)
    now = rt.now()
    try:
        t = tokens.issue(s, creator, now, name=body.name, role=body.role, store=body.store)
    except ValueError as e:
        raise bad(e) from None
    audit.record(s, p.actor, "token.create", now, target=("token", t.row.id), store=t.row.store_id,
                 detail={"role": t.row.role})
    return TokenCreated(**token_out(t.row).model_dump(), token=t.raw)


@router.get("/v1/tokens")
def list_tokens(s: DB, _p: Hq) -> list[TokenOut]:
    return [token_out(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id))]


@router.delete("/v1/tokens/{token_id}")
def revoke_token(token_id: str, s: DB, rt: Rt, p: Hq) -> TokenOut:
    """Revoked at once (kept, for the audit log's sake); revoking twice is harmless."""
    now = rt.now()
    t, revoked = tokens.revoke(s, token_id, now)
    if t is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    if revoked:
        audit.record(s, p.actor, "token.revoke", now, target=("token", t.id), store=t.store_id)
    return token_out(t)


# the audit log (hq: all; a manager: their stores' entries)
@router.get("/v1/audit")
def read_audit(
    s: DB,
    p: Manager,
    store: str | None = None,
    action: str | None = Query(None, max_length=40),
    user: str | None = Query(None, max_length=32, description="entries of this user (or their tokens)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=INT_MAX),
) -> list[AuditOut]:
    """Newest first."""
    q = audit.query(p.stores, store=store, action=action, user_id=user).limit(limit).offset(offset)
    return [audit_out(e) for e in s.scalars(q)]
