"""Console users: create, find, change role and stores, disable, set a password.

Emails are the login and are stored lower-case (one account per address, whatever its case).
Errors are registry.Invalid (a 422) and registry.Conflict (a 409), like the rest of the admin API.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from casecloud.accounts import passwords
from casecloud.accounts.roles import Role, parse
from casecloud.models import LoginSession, Store, User, UserStore
from casecloud.registry import Conflict, Invalid

# Deliberately loose: one @, something on both sides, a dot in the domain, no spaces. Whether a
# mailbox exists is not ours to check; the address is a login name.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_email(email: str) -> str:
    e = normalize_email(email)
    if len(e) > 254 or not _EMAIL.match(e) or "\x00" in e:
        raise Invalid("email: an address like name@example.com")
    return e


def by_email(s: Session, email: str) -> User | None:
    return s.scalars(select(User).where(User.email == normalize_email(email))).first()


def stores_of(s: Session, user: User) -> frozenset[str] | None:
    """The stores the user acts for; None for hq (every store)."""
    if user.role == "hq":
        return None
    return frozenset(s.scalars(select(UserStore.store_id).where(UserStore.user_id == user.id)))


def _set_stores(s: Session, user: User, stores: Iterable[str]) -> None:
    wanted = sorted(set(stores))
    known = set(s.scalars(select(Store.id).where(Store.id.in_(wanted)))) if wanted else set()
    missing = [x for x in wanted if x not in known]
    if missing:
        raise Invalid(f"stores: no store {', '.join(missing)}")
    s.execute(delete(UserStore).where(UserStore.user_id == user.id))
    s.add_all(UserStore(user_id=user.id, store_id=x) for x in wanted)


def create(s: Session, now: int, *, email: str, password: str, role: str, display_name: str = "",
           stores: Iterable[str] = ()) -> User:
    """A new user; the password is checked against the rules and hashed (argon2id)."""
    e = check_email(email)
    r: Role = _role(role)
    if by_email(s, e) is not None:
        raise Conflict(f"a user with email {e} exists")
    try:
        passwords.check_rules(password, email=e, display_name=display_name)
    except passwords.Rejected as err:
        raise Invalid(str(err)) from None
    u = User(id="u_" + secrets.token_hex(6), email=e, display_name=display_name, role=r,
             password_hash=passwords.hash_password(password), password_changed_at=now, created_at=now)
    s.add(u)
    s.flush()
    _set_stores(s, u, () if r == "hq" else stores)
    return u


def update(s: Session, user: User, *, role: str | None = None, stores: Iterable[str] | None = None,
           display_name: str | None = None, disabled: bool | None = None) -> list[str]:
    """Change what is given; returns the names of the fields changed. Disabling ends the user's
    sessions; their API tokens stop working while they are disabled (tokens.py)."""
    changed: list[str] = []
    if display_name is not None and display_name != user.display_name:
        user.display_name = display_name
        changed.append("display_name")
    if role is not None and role != user.role:
        new_role = _role(role)
        if user.role == "hq":
            _keep_an_hq(s, user)
        user.role = new_role
        changed.append("role")
    if stores is not None:
        before = stores_of(s, user) or frozenset()
        _set_stores(s, user, () if user.role == "hq" else stores)
        if frozenset(stores) != before:
            changed.append("stores")
    if disabled is not None and disabled != user.disabled:
        if disabled and user.role == "hq":
            _keep_an_hq(s, user)
        user.disabled = disabled
        changed.append("disabled")
        if disabled:
            end_sessions(s, user.id)
    return changed


def set_password(s: Session, user: User, password: str, now: int) -> None:
    """A new password (rules checked); every session of the user ends, and a lockout is lifted."""
    try:
        passwords.check_rules(password, email=user.email, display_name=user.display_name)
    except passwords.Rejected as err:
        raise Invalid(str(err)) from None
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = now
    user.failed_logins, user.locked_until = 0, None
    end_sessions(s, user.id)


def end_sessions(s: Session, user_id: str) -> None:
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))


def hq_ids() -> Select[str]:
    return select(User.id).where(User.role == "hq")


def hq_exists(s: Session) -> bool:
    """Any HQ user, enabled or not: the bootstrap token is for a cloud that has none."""
    return bool(s.scalar(select(func.count()).select_from(User).where(User.role == "hq")))


def _keep_an_hq(s: Session, user: User) -> None:
    """Refuse to demote or disable the last enabled HQ user: nobody could manage the fleet then,
    and the bootstrap token stays refused while any HQ user exists."""
    others = s.scalar(select(func.count()).select_from(User)
                      .where(User.role == "hq", User.disabled.is_(False), User.id != user.id))
    if not others:
        raise Conflict("the last enabled HQ user cannot be demoted or disabled")


def _role(role: str) -> Role:
    try:
        return parse(role)
    except ValueError as e:
        raise Invalid(str(e)) from None


def get(s: Session, user_id: str) -> User | None:
    return s.get(User, user_id)
