"""Password login: rate limits, lockout with backoff, and answers that do not tell whether an
account exists.

- Every login is counted before its password is checked (`reserve`, a short transaction of its
  own), and the count is taken back when the password was right: a count read before the argon2
  check and written after it let 24 of 40 parallel wrong logins through a limit of 10.
- Failed logins are counted per account (by the HMAC of the typed email, whether an account has
  it or not) and per client address (an IPv6 client's /64) in `rate_counts` over
  `login_window_s`; past `login_rate_account` or `login_rate_client` a login is refused
  unchecked (RateLimited, a 429).
- `login_lockout_after` consecutive failures lock a real account for `login_lockout_base_s`,
  doubling with each further failure up to `login_lockout_max_s`; the lockout is audited. A
  locked account's login fails like a wrong password (the same Refused), so neither the
  lockout nor the account's existence can be read from the answer.
- Unknown, disabled and locked accounts cost one argon2 verify against a dummy hash, like a
  real check, so the time taken does not tell them apart either.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from casecloud import db
from casecloud.accounts import audit, passwords, users
from casecloud.models import RateCount, User
from casecloud.privacy import Hasher
from casecloud.settings import Settings

_RATES = cast(Table, RateCount.__table__)
SCOPE_ACCOUNT, SCOPE_CLIENT = "login_acct", "login_ip"


class Refused(Exception):
    """Wrong email or password, or an account that cannot sign in now: one answer for all."""


class RateLimited(Exception):
    """Too many failed logins for this account or from this address in the window."""


@dataclass(frozen=True)
class Attempt:
    email: str
    password: str
    client: str  # the client's address, whole: the per-address limit counts it
    now: int


def account_key(hasher: Hasher, email: str) -> str:
    return hasher.token("login\n" + users.normalize_email(email))


def client_key(address: str) -> str:
    """What the per-address limit counts: an IPv4 address, or an IPv6 address's /64 (one host
    usually has a whole /64 to pick addresses from)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "-"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _failures(s: Session, scope: str, key: str, since: int) -> int:
    n = s.scalar(select(func.coalesce(func.sum(RateCount.n), 0))
                 .where(RateCount.scope == scope, RateCount.key == key, RateCount.at > since))
    return int(n or 0)


def _count_failure(s: Session, keys: list[tuple[str, str]], now: int) -> None:
    db.upsert_add(s, _RATES, [{"scope": sc, "key": k, "at": now, "n": 1} for sc, k in sorted(keys)],
                  ("scope", "key", "at"), "n")


def new_password(s: Session, hasher: Hasher, user: User, password: str, now: int) -> None:
    """Give the user a new password (users.set_password: rules, sessions ended, lockout lifted)
    and forget the failed logins counted against the account: otherwise anyone who keeps typing
    wrong passwords for it keeps its owner out after the reset as well. Raises users.Invalid."""
    users.set_password(s, user, password, now)
    s.execute(delete(RateCount).where(RateCount.scope == SCOPE_ACCOUNT,
                                      RateCount.key == account_key(hasher, user.email)))


def _keys(hasher: Hasher, attempt: Attempt) -> list[tuple[str, str]]:
    return [(SCOPE_ACCOUNT, account_key(hasher, attempt.email)), (SCOPE_CLIENT, client_key(attempt.client))]


def reserve(s: Session, attempt: Attempt, settings: Settings, hasher: Hasher) -> None:
    """Count the attempt as a failure before its password is checked, in `s`, which the caller
    commits at once (before `authenticate`): parallel attempts then each see the others' counts,
    and at most the limit's number of passwords are checked in a window, however many arrive at
    once. Raises RateLimited past a limit: the caller rolls `s` back, so a refused attempt, which
    checks nothing, does not count."""
    st = settings
    keys = _keys(hasher, attempt)
    _count_failure(s, keys, attempt.now)
    since = attempt.now - st.login_window_s
    limits = {SCOPE_ACCOUNT: st.login_rate_account, SCOPE_CLIENT: st.login_rate_client}
    if any(_failures(s, sc, k, since) > limits[sc] for sc, k in keys):
        raise RateLimited("too many failed logins: try again later")


def authenticate(s: Session, attempt: Attempt, settings: Settings, hasher: Hasher) -> User:
    """The user whose email and password these are, for an attempt already `reserve`d (counted as
    a failure; a right password takes the count back, in `s`). Raises Refused; the caller commits
    `s` either way (a lockout and the audit are written on refusal too)."""
    st, now = settings, attempt.now
    keys = _keys(hasher, attempt)
    user = users.by_email(s, attempt.email) if len(attempt.email) <= 254 else None
    ip = audit.truncate_ip(attempt.client)
    if user is None or user.disabled or (user.locked_until is not None and now < user.locked_until):
        passwords.verify_dummy(attempt.password)
        if user is not None:  # a known account: audited (an unknown email goes only into the keyed count)
            why = "disabled" if user.disabled else "locked"
            audit.record(s, audit.Actor("anonymous", user.id, ip), "auth.login", now, target=("user", user.id),
                         result="refused", detail={"why": why})
        raise Refused("wrong email or password, or the account cannot sign in now")
    if not passwords.verify(user.password_hash, attempt.password):
        user.failed_logins += 1
        audit.record(s, audit.Actor("anonymous", user.id, ip), "auth.login", now, target=("user", user.id),
                     result="failed")
        over = user.failed_logins - st.login_lockout_after
        if over >= 0:
            lock_s = min(st.login_lockout_max_s, st.login_lockout_base_s * 2 ** min(over, 30))
            user.locked_until = now + lock_s
            audit.record(s, audit.Actor("anonymous", user.id, ip), "auth.lockout", now, target=("user", user.id),
                         result="locked", detail={"failures": user.failed_logins, "seconds": lock_s})
        raise Refused("wrong email or password, or the account cannot sign in now")
    db.upsert_add(s, _RATES, [{"scope": sc, "key": k, "at": now, "n": -1} for sc, k in sorted(keys)],
                  ("scope", "key", "at"), "n")  # a right password is not a failure: the reservation back
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(attempt.password)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    return user
