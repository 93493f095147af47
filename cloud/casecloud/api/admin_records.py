"""/v1/admin, people and records: loyalty members (lookup by number, erasure), the event
journal, alerts, retention. Members are the retailer's, not a store's: managers of any store
look them up, flag, trust and erase them (hq creates them); events are a manager's, alerts an
associate's, each for their stores only (accounts/access.py). Every change is audited, naming
the member by id only."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud import alerts as alerting
from casecloud import registry
from casecloud.accounts import audit
from casecloud.accounts.access import Associate, Hq, Manager, Principal
from casecloud.api.admin import bad
from casecloud.api.deps import DB, Rt
from casecloud.api.schemas import (
    AlertAckIn,
    AlertOut,
    AlertResolveIn,
    EventOut,
    MemberCreated,
    MemberIn,
    MemberOut,
    PhoneQuery,
    StatusIn,
    alert_out,
    member_out,
)
from casecloud.codec import INT_MAX, INT_MIN
from casecloud.models import Alert, Event, Member
from casecloud.phones import to_e164
from casecloud.privacy import erase_member, retention

log = logging.getLogger("casecloud.api")

router = APIRouter(tags=["admin"])

AlertId = Annotated[int, Path(ge=1, le=INT_MAX)]  # beyond a BIGINT, PostgreSQL would fail the query


# members
@router.post("/v1/admin/members", status_code=201)
def create_member(body: MemberIn, s: DB, rt: Rt, p: Hq) -> MemberCreated:
    try:
        m, app_token = registry.create_member(s, rt.hasher, rt.now(), phone=body.phone, country=body.country,
                                              card=body.card, status=body.status, external_id=body.external_id)
    except ValueError as e:
        raise bad(e) from None
    audit.record(s, p.actor, "member.create", rt.now(), target=("member", m.id), detail={"status": m.status})
    return MemberCreated(**member_out(m).model_dump(), app_token=app_token)


@router.get("/v1/admin/members/{member_id}")
def read_member(member_id: str, s: DB, _p: Manager) -> MemberOut:
    m = s.get(Member, member_id)
    if m is None:
        raise HTTPException(404, f"no member {member_id}")
    return member_out(m)


@router.post("/v1/admin/members/lookup")
def find_member(body: PhoneQuery, s: DB, rt: Rt, p: Manager) -> list[MemberOut]:
    """Look a member up by number. A POST body, not a query string: URLs end up in access logs.
    Audited (who searched, how many were found), without the number."""
    e164 = to_e164(body.phone, body.country)
    if e164 is None:
        raise HTTPException(422, "phone: not a valid number")
    found = [member_out(m) for m in s.scalars(select(Member).where(Member.phone_hash == rt.hasher.phone(e164)))]
    audit.record(s, p.actor, "member.lookup", rt.now(), detail={"found": len(found)})
    return found


def set_status(s: Session, rt: Rt, p: Principal, member_id: str, st: str) -> MemberOut:
    try:
        m = registry.set_member_status(s, member_id, st)
    except registry.Invalid as e:
        raise HTTPException(404, str(e)) from None
    audit.record(s, p.actor, "member.status", rt.now(), target=("member", m.id), detail={"status": st})
    return member_out(m)


@router.post("/v1/admin/members/{member_id}/status")
def member_status(member_id: str, body: StatusIn, s: DB, rt: Rt, p: Manager) -> MemberOut:
    return set_status(s, rt, p, member_id, body.status)


@router.post("/v1/admin/members/{member_id}/flag")
def flag_member(member_id: str, s: DB, rt: Rt, p: Manager) -> MemberOut:
    return set_status(s, rt, p, member_id, "flagged")


@router.post("/v1/admin/members/{member_id}/trust")
def trust_member(member_id: str, s: DB, rt: Rt, p: Manager) -> MemberOut:
    return set_status(s, rt, p, member_id, "trusted")


@router.delete("/v1/admin/members/{member_id}", status_code=204)
def erase(member_id: str, s: DB, rt: Rt, p: Manager) -> Response:
    """Right to erasure: the member, their challenges and counters, their name on events."""
    if not erase_member(s, member_id):
        raise HTTPException(404, f"no member {member_id}")
    log.info("member %s erased", member_id)
    audit.record(s, p.actor, "member.erase", rt.now(), target=("member", member_id))
    return Response(status_code=204)


# events and alerts
@router.get("/v1/admin/events")
def events(
    s: DB,
    p: Manager,
    store: str | None = None,
    case: str | None = None,
    type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the API's word for it
    since: int | None = Query(None, ge=INT_MIN, le=INT_MAX, description="epoch seconds, inclusive"),
    until: int | None = Query(None, ge=INT_MIN, le=INT_MAX, description="epoch seconds, exclusive"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=INT_MAX),
) -> list[EventOut]:
    q = select(Event)
    if (mine := p.store_clause(Event.store_id)) is not None:  # the caller's stores only
        q = q.where(mine)
    if store:
        q = q.where(Event.store_id == store)
    if case:
        q = q.where(Event.case_id == case)
    if type:
        q = q.where(Event.kind.in_(type))
    if since is not None:
        q = q.where(Event.ts >= since)
    if until is not None:
        q = q.where(Event.ts < until)
    q = q.order_by(Event.ts.desc(), Event.id.desc()).limit(limit).offset(offset)
    return [EventOut(id=e.id, store=e.store_id, case=e.case_id, event_id=e.event_id, source=e.source,
                     type=e.kind, ts=e.ts, received_at=e.received_at, member_id=e.member_id,
                     phone_last2=e.phone_last2, data=e.data) for e in s.scalars(q)]


@router.get("/v1/admin/alerts")
def alerts(
    s: DB,
    p: Associate,
    store: str | None = None,
    case: str | None = None,
    state: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
    kind: Annotated[list[str] | None, Query()] = None,
    severity: Annotated[list[Literal["normal", "high", "critical"]] | None, Query()] = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=INT_MAX),
) -> list[AlertOut]:
    """Newest first; each filter may repeat (`state=open&state=acknowledged`)."""
    q = select(Alert)
    if (mine := p.store_clause(Alert.store_id)) is not None:  # the caller's stores only
        q = q.where(mine)
    if store:
        q = q.where(Alert.store_id == store)
    if case:
        q = q.where(Alert.case_id == case)
    if state:
        q = q.where(Alert.state.in_(state))
    if kind:
        q = q.where(Alert.kind.in_(kind))
    if severity:
        q = q.where(Alert.severity.in_(severity))
    q = q.order_by(Alert.id.desc()).limit(limit).offset(offset)
    return [alert_out(a) for a in s.scalars(q)]


@router.post("/v1/admin/alerts/{alert_id}/ack", responses={404: {}, 409: {"description": "the alert is resolved"}})
def ack_alert(alert_id: AlertId, body: AlertAckIn, s: DB, rt: Rt, p: Associate) -> AlertOut:
    """Staff have seen it (the first to acknowledge stays on record)."""
    visible_alert(s, p, alert_id)
    try:
        a = alerting.acknowledge(s, alert_id, body.by, rt.now())
    except alerting.Resolved as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    if a is None:
        raise HTTPException(404, f"no alert {alert_id}")
    audit.record(s, p.actor, "alert.ack", rt.now(), target=("alert", str(a.id)), store=a.store_id)
    return alert_out(a)


@router.post("/v1/admin/alerts/{alert_id}/resolve", responses={404: {}})
def resolve_alert(alert_id: AlertId, body: AlertResolveIn, s: DB, rt: Rt, p: Associate) -> AlertOut:
    """Closed (idempotent): the next occurrence opens a new alert."""
    visible_alert(s, p, alert_id)
    a = alerting.resolve(s, alert_id, body.by, rt.now())
    if a is None:
        raise HTTPException(404, f"no alert {alert_id}")
    audit.record(s, p.actor, "alert.resolve", rt.now(), target=("alert", str(a.id)), store=a.store_id)
    return alert_out(a)


def visible_alert(s: Session, p: Principal, alert_id: int) -> None:
    """404 for an alert of a store the caller may not see, as for one that does not exist."""
    a = s.get(Alert, alert_id)
    if a is not None and not p.sees(a.store_id):
        raise HTTPException(404, f"no alert {alert_id}")


@router.post("/v1/admin/retention/run")
def run_retention(s: DB, rt: Rt, p: Hq) -> dict[str, int]:
    n = retention(s, rt.now(), rt.settings.retention_days, rt.settings.event_retention_days, rt.settings.otp_ttl_s)
    audit.record(s, p.actor, "retention.run", rt.now(), detail={"stripped": n})
    return {"stripped": n}
