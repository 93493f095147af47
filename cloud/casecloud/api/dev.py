"""/v1/dev: the dev SMS outbox (`make sim`, tests), only while the outbox backend is in use.
hq only: the texts hold live codes."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.accounts.access import require
from casecloud.api.deps import DB, Rt
from casecloud.api.schemas import PhoneQuery, SmsOut
from casecloud.models import SmsOutbox
from casecloud.phones import to_e164
from casecloud.runtime import Runtime

router = APIRouter(tags=["dev"], dependencies=[Depends(require("hq"))])


def outbox(rt: Runtime, s: Session, to_hash: str | None, last2: str | None, limit: int) -> list[SmsOut]:
    if rt.settings.sms_backend != "outbox":
        raise HTTPException(404, "the dev outbox is off (sms_backend is not outbox)")
    q = select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(limit)
    if to_hash:
        q = q.where(SmsOutbox.to_hash == to_hash)
    if last2:
        q = q.where(SmsOutbox.to_last2 == last2)
    return [SmsOut(to_last2=m.to_last2, body=m.body, created_at=m.created_at) for m in s.scalars(q)]


@router.get("/v1/dev/sms")
def dev_sms(s: DB, rt: Rt, last2: str | None = Query(None, pattern=r"^\d{2}$"),
            limit: int = Query(20, ge=1, le=200)) -> list[SmsOut]:
    """Texts the dev outbox 'sent', newest first, optionally only to numbers ending in `last2`."""
    return outbox(rt, s, None, last2, limit)


@router.post("/v1/dev/sms/lookup")
def dev_sms_to(body: PhoneQuery, s: DB, rt: Rt, limit: int = Query(20, ge=1, le=200)) -> list[SmsOut]:
    """Texts sent to one number (in the body: URLs end up in access logs)."""
    e164 = to_e164(body.phone, body.country)
    if e164 is None:
        raise HTTPException(422, "phone: not a valid number")
    return outbox(rt, s, rt.hasher.phone(e164), None, limit)
