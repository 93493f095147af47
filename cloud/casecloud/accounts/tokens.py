"""REST API tokens, scoped by role and store.

A token is `lct_` and 43 random URL-safe characters (256 bits), shown once when it is created;
the table keeps its SHA-256 (enough for a random value: there is nothing to guess) and its first
8 characters, to tell tokens apart in a list. An hq token acts for every store; an associate or
manager token for exactly one. A token acts with its own role and store, and only while the user
who created it is enabled and still holds at least that role (and, below hq, that store): a
token never outlives its creator's rights.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.accounts import users
from casecloud.accounts.roles import Role, at_least, parse
from casecloud.models import ApiToken, Store, User
from casecloud.registry import Invalid

PREFIX = "lct_"
TOUCH_EVERY_S = 60  # last_used_at is written at most this often per token


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    raw: str  # shown once, in the answer that creates it; never stored or logged
    row: ApiToken


def issue(s: Session, creator: User, now: int, *, name: str, role: str, store: str | None) -> Issued:
    """A new token. role hq: no store (every store); associate or manager: exactly one store. The
    creator must hold the role (and, below hq, the store) themselves."""
    r: Role
    try:
        r = parse(role)
    except ValueError as e:
        raise Invalid(str(e)) from None
    if r == "hq" and store is not None:
        raise Invalid("store: an hq token acts for every store; leave store out")
    if r != "hq" and store is None:
        raise Invalid("store: an associate or manager token acts for one store")
    if store is not None and s.get(Store, store) is None:
        raise Invalid(f"store: no store {store}")
    if not _within(s, creator, r, store):
        raise Invalid("role: a token cannot have more rights than its creator")
    raw = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(id="t_" + secrets.token_hex(6), token_hash=digest(raw), hint=raw[:8], name=name,
                   created_by=creator.id, role=r, store_id=store, created_at=now)
    s.add(row)
    s.flush()
    return Issued(raw, row)


def find(s: Session, raw: str, now: int) -> tuple[ApiToken, User] | None:
    """The live token of this bearer value and its creator; None when unknown, revoked, or its
    creator no longer holds its rights."""
    if not raw or len(raw) > 200:
        return None
    row = s.scalars(select(ApiToken).where(ApiToken.token_hash == digest(raw))).first()
    if row is None or row.revoked_at is not None:
        return None
    creator = s.get(User, row.created_by)
    if creator is None or not _within(s, creator, row.role, row.store_id):
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY_S:
        row.last_used_at = now
    return row, creator


def revoke(s: Session, token_id: str, now: int) -> tuple[ApiToken | None, bool]:
    """The token, and whether this call revoked it (False: it was revoked already)."""
    row = s.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return row, False
    row.revoked_at = now
    return row, True


def _within(s: Session, user: User, role: str, store: str | None) -> bool:
    try:
        r = parse(role)
    except ValueError:
        return False
    if user.disabled or not at_least(user.role, r):
        return False
    mine = users.stores_of(s, user)
    return mine is None or (store is not None and store in mine)
