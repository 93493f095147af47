"""Personal data handling: keyed hashes instead of numbers, retention, erasure.

A phone number exists in clear only in memory while a request is handled (and in the text sent to
the carrier). Everything stored is HMAC-SHA256(server secret, E.164) plus its last two digits, which
staff can read back to a shopper ("the number ending 67") without being able to recover it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from casecloud.analytics.aggregate import expire_events
from casecloud.models import Challenge, Event, LoginSession, Member, RateCount, SmsOutbox

log = logging.getLogger("casecloud.worker")  # the retention job's logger (jobs.py)

_LONG_DIGITS = re.compile(r"\d{7,}")
# A staff id the cloud issued (registry.add_staff: "s_" + 12 hex digits). About 1 in 9 holds a run
# of 7+ digits; blanking it would make a revoked credential used offline uncheckable
# (alerts._staff_use). Exempted only when the whole value has exactly this form: a phone number
# would have to come with the "s_" prefix and be exactly 12 digits long to slip through. (Making new
# ids digit-run free instead would still leave the ids already issued uncheckable.)
_STAFF_ID = re.compile(r"s_[0-9a-f]{12}")


class Hasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def phone(self, e164: str) -> str:
        return self._mac("phone", e164)

    def token(self, token: str) -> str:
        return self._mac("token", token)

    def code(self, sid: str, code: str) -> str:
        return self._mac("otp", f"{sid}:{code}")

    def _mac(self, domain: str, value: str) -> str:
        # A domain label keeps a phone hash from ever equalling a token hash of the same digits.
        return hmac.new(self._secret, f"{domain}\n{value}".encode(), hashlib.sha256).hexdigest()


def last2(e164: str) -> str:
    return e164[-2:]


def mask(e164: str) -> str:
    """How a number may appear in a log line."""
    return "…" + e164[-2:]


def scrub(data: Any) -> Any:
    """Blank any run of 7+ digits in event data: a case must not send numbers, but if one does
    it still never reaches the database. A value that is exactly a staff id is kept (_STAFF_ID)."""
    if isinstance(data, str):
        return data if _STAFF_ID.fullmatch(data) else _LONG_DIGITS.sub("#", data)
    if isinstance(data, dict):
        return {str(k): scrub(v) for k, v in data.items()}
    if isinstance(data, list):
        return [scrub(v) for v in data]
    return data


def erase_member(s: Session, member_id: str) -> bool:
    """Forget a member: the row, their open challenges and rate counters, their name on events."""
    member = s.get(Member, member_id)
    if member is None:
        return False
    keys = [k for k in (member.id, member.phone_hash) if k]
    s.execute(
        update(Event).where(Event.member_id == member_id).values(member_id=None, phone_last2=None)
    )
    conds = [Challenge.member_id == member_id]
    if member.phone_hash:
        conds.append(Challenge.phone_hash == member.phone_hash)
        s.execute(delete(SmsOutbox).where(SmsOutbox.to_hash == member.phone_hash))
    s.execute(delete(Challenge).where(or_(*conds)))
    s.execute(delete(RateCount).where(RateCount.key.in_(keys)))
    s.delete(member)
    return True


def retention(s: Session, now: int, days: int, event_days: int = 0, otp_ttl_s: int = 120) -> int:
    """Strip member references from events older than the retention; drop stale working data;
    delete the raw events older than `event_days` (0: keep them) once the analytics have counted
    them (analytics.aggregate.expire_events: the counts stay).

    Returns the number of events stripped.
    """
    cutoff = now - days * 86400
    res = s.execute(
        update(Event)
        .where(Event.received_at < cutoff)
        .where(or_(Event.member_id.is_not(None), Event.phone_last2.is_not(None)))
        .values(member_id=None, phone_last2=None)
    )
    day_ago = now - 86400
    s.execute(delete(Challenge).where(Challenge.expires_at < day_ago))
    s.execute(delete(RateCount).where(RateCount.at < day_ago))
    s.execute(delete(SmsOutbox).where(SmsOutbox.created_at < day_ago))
    # console sessions past their absolute end (an idle one is there at most session_absolute_s)
    s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
    stripped = int(getattr(res, "rowcount", 0) or 0)
    try:  # in a savepoint: a failed fold keeps the events and never undoes the stripping above
        with s.begin_nested():
            expire_events(s, now, event_days, otp_ttl_s)
    except Exception:
        log.exception("retention: raw events not expired (the analytics fold failed); member references stripped")
    return stripped
