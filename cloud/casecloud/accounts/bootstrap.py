"""The first HQ account, made with the settings' admin token while the cloud has none.

After that the admin token opens nothing: HQ users create the other users and the API tokens.
Two bootstrap requests at once make one account: on PostgreSQL a transaction-scoped advisory lock
serializes them; on SQLite the INSERT takes the database's write lock, and the count after it
sees any account committed before.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from casecloud.accounts import users
from casecloud.models import User

_LOCK_KEY = 0x4C43_4851  # "LCHQ": any constant of our own, the same in every process


class Done(Exception):
    """An HQ user exists: the bootstrap token is refused from now on."""


def create_first_hq(s: Session, now: int, *, email: str, password: str, display_name: str = "") -> User:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    if users.hq_exists(s):
        raise Done("an HQ user exists: the admin token no longer creates accounts")
    u = users.create(s, now, email=email, password=password, role="hq", display_name=display_name)
    s.flush()
    if sum(1 for _ in s.scalars(users.hq_ids())) > 1:  # another bootstrap won meanwhile
        raise Done("an HQ user exists: the admin token no longer creates accounts")
    return u
