"""Server-side console sessions, their cookie, and their CSRF token.

The cookie holds a random id (256 bits); the table keeps its SHA-256 only. A session ends when it
has been unused for `session_idle_s`, `session_absolute_s` after login whatever the activity, at
logout (the row is deleted), and when the user's password changes or they are disabled. Each
login makes a new id (the old session, if the browser had one, is deleted): an id planted before
login is worth nothing after it.

CSRF: each session has its own random secret; its token is HMAC-SHA256(secret, "csrf"), the same
for the session's life, so a page can put it in every form (field `csrf_token`) and in a meta tag
for scripts (header `X-CSRF-Token`). access.py refuses a state-changing request authenticated by
the cookie without it (403), comparing with hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Response
from sqlalchemy import delete
from sqlalchemy.orm import Session

from casecloud.models import LoginSession, User
from casecloud.settings import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
TOUCH_EVERY_S = 60  # last_seen_at is written at most this often per session


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only and
    # path=/, so no subdomain or plain-HTTP page can plant or shadow it. Without Secure (local
    # plain-HTTP development) the prefix is not allowed, hence the second name.
    return "__Host-casecloud_session" if settings.cookie_secure else "casecloud_session"


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Started:
    raw_id: str  # for the cookie only: never stored, never logged
    row: LoginSession


def start(s: Session, user: User, now: int, settings: Settings, *, user_agent: str = "", ip: str = "",
          replacing: str | None = None) -> Started:
    """A new session for `user`. replacing: the cookie the browser sent, deleted (rotation)."""
    if replacing:
        end(s, replacing)
    raw = secrets.token_urlsafe(32)
    row = LoginSession(id_hash=digest(raw), user_id=user.id, csrf_secret=secrets.token_hex(32),
                       created_at=now, last_seen_at=now, expires_at=now + settings.session_absolute_s,
                       user_agent=user_agent[:120], ip=ip[:48])
    s.add(row)
    return Started(raw, row)


def find(s: Session, raw: str, now: int, settings: Settings) -> LoginSession | None:
    """The live session of this cookie value; an expired one is deleted and None returned. Its
    user is loaded and checked by the caller (access.py: a disabled user's session is refused)."""
    if not raw or len(raw) > 100:
        return None
    row = s.get(LoginSession, digest(raw))
    if row is None:
        return None
    if now >= row.expires_at or now >= row.last_seen_at + settings.session_idle_s:
        s.delete(row)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY_S:
        row.last_seen_at = now
    return row


def end(s: Session, raw: str) -> bool:
    """Logout: the row is deleted. True when there was one."""
    res = s.execute(delete(LoginSession).where(LoginSession.id_hash == digest(raw)))
    return bool(getattr(res, "rowcount", 0))


def csrf_token(row: LoginSession) -> str:
    """The token a page puts in its forms (field `csrf_token`) or scripts send (`X-CSRF-Token`)."""
    return hmac.new(bytes.fromhex(row.csrf_secret), b"csrf", hashlib.sha256).hexdigest()


def csrf_ok(row: LoginSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(row).encode(), (token or "").encode())


def set_cookie(response: Response, raw: str, row: LoginSession, now: int, settings: Settings) -> None:
    response.set_cookie(cookie_name(settings), raw, max_age=max(0, row.expires_at - now), path="/",
                        secure=settings.cookie_secure, httponly=True, samesite=settings.cookie_samesite)


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(cookie_name(settings), path="/", secure=settings.cookie_secure, httponly=True,
                           samesite=settings.cookie_samesite)
