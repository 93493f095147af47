"""The audit log: who did what, to which target, from where, with what result.

Written in the transaction of the change it records (a change that rolls back leaves no entry).
Targets are ids only: a store, case, user, token, alert, staff credential or member id. Never a
phone number, a typed email of an unknown account, a password or a token: `detail` takes only the
small, named facts the callers below choose (a role, the fields changed).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from casecloud.models import AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who acts: `user:<id>`, `token:<id>`, `bootstrap` (the settings' admin token) or `anonymous`
    (a failed login); `user_id` the person behind it (a token's creator), `ip` truncated."""

    actor: str
    user_id: str | None = None
    ip: str = ""


def truncate_ip(address: str | None) -> str:
    """A client address cut to its network: IPv4 to the /24, IPv6 to the /48. Enough to tell
    the shop's network from an unknown one, not enough to name a device."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:16]  # a test client's name, a unix socket
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def record(s: Session, who: Actor, action: str, now: int, *, target: tuple[str, str] | None = None,
           store: str | None = None, result: str = "ok", detail: dict[str, Any] | None = None) -> AuditEntry:
    """One entry, added to `s` (committed with it). target: (type, id)."""
    e = AuditEntry(at=now, actor=who.actor[:40], user_id=who.user_id, action=action,
                   target_type=target[0] if target else None, target_id=target[1][:64] if target else None,
                   store_id=store, ip=who.ip[:48], result=result, detail=detail or {})
    s.add(e)
    return e


def write(sessions: sessionmaker[Session], who: Actor, action: str, now: int, **kw: Any) -> None:
    """One entry in a transaction of its own: for what happens outside the database (a command a
    case acknowledged or not), recorded with its outcome once known."""
    with sessions.begin() as s:
        record(s, who, action, now, **kw)


def query(stores: frozenset[str] | None, *, store: str | None = None, action: str | None = None,
          user_id: str | None = None) -> Select[AuditEntry]:
    """Entries newest first. stores: those the reader may see (None: all, for hq); a manager sees
    the entries about their stores only, not the fleet-wide ones (users, tokens)."""
    q = select(AuditEntry)
    if stores is not None:
        q = q.where(AuditEntry.store_id.in_(sorted(stores)))
    if store is not None:
        q = q.where(AuditEntry.store_id == store)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    if user_id is not None:
        q = q.where(AuditEntry.user_id == user_id)
    return q.order_by(AuditEntry.id.desc())
