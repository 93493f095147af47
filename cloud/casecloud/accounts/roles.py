"""The three roles, in order: associate < manager < hq (docs/accounts.md has what each may do)."""

from __future__ import annotations

from typing import Literal, cast

Role = Literal["associate", "manager", "hq"]
ROLES: tuple[Role, ...] = ("associate", "manager", "hq")
_RANK = {r: i for i, r in enumerate(ROLES)}


def at_least(role: str, minimum: Role) -> bool:
    """True when `role` may do what `minimum` may (an unknown role may do nothing)."""
    return role in _RANK and _RANK[role] >= _RANK[minimum]


def parse(role: str) -> Role:
    if role not in _RANK:
        raise ValueError(f"role: one of {', '.join(ROLES)}")
    return cast(Role, role)
