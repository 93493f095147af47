"""/v1/admin, the fleet: stores, cases, their commands, staff credentials and config (desired
state), the broker's files, case keys. Each route names the least role it needs
(accounts/access.py): the fleet (stores, register, rotate, retire, config, broker, keys) is hq's;
a store's staff credentials and pending cases its managers'; its cases' state and relock its
associates' too. A store outside the caller's answers as one that does not exist. Every change
is written to the audit log."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud import broker, channel, desired, keyring, registry
from casecloud.accounts import audit
from casecloud.accounts.access import Associate, Hq, Manager, Principal, StoreManager, visible_case
from casecloud.api.deps import DB, Rt, Svc
from casecloud.api.schemas import (
    CaseIn,
    CaseOut,
    CaseSecretsOut,
    CmdResult,
    ConfigIn,
    ConfigOut,
    MqttLogin,
    ResyncOut,
    StaffIn,
    StaffOut,
    StoreIn,
    StoreOut,
    StorePatch,
    case_out,
    store_out,
)
from casecloud.api.services import Services
from casecloud.brokersync import BrokerSyncError, SyncResult
from casecloud.codec import RESYNC_MARGIN
from casecloud.models import Case, Staff, Store
from casecloud.settings import Settings

log = logging.getLogger("casecloud.api")

router = APIRouter(tags=["admin"])


def bad(e: ValueError) -> HTTPException:
    """A refused change: 409 when it conflicts with what exists, else 422."""
    code = status.HTTP_409_CONFLICT if isinstance(e, registry.Conflict) else status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, str(e))


def get_case(s: Session, case_id: str) -> Case:
    c = s.get(Case, case_id)
    if c is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
    return c


def fields(body: Any) -> list[str]:
    """The names of the fields a PATCH-like body sets (for the audit log: names, not values)."""
    return sorted(body.model_dump(exclude_unset=True))


def secrets_out(st: Settings, c: Case, sec: registry.CaseSecrets) -> CaseSecretsOut:
    return CaseSecretsOut(
        id=c.id, store=c.store_id, key=sec.key_hex, key_version=c.key_version, topic_prefix=st.topic_prefix,
        mqtt=MqttLogin(host=st.public_mqtt_host or st.mqtt_host, port=st.public_mqtt_port or st.mqtt_port,
                       username=sec.mqtt_username, password=sec.mqtt_password))


# stores
@router.post("/v1/admin/stores", status_code=201)
def create_store(body: StoreIn, s: DB, rt: Rt, p: Hq) -> StoreOut:
    try:
        st = registry.create_store(s, body.id, rt.now(), name=body.name, country=body.country,
                                   notify_url=body.notify_url, guests_allowed=body.guests_allowed)
    except ValueError as e:
        raise bad(e) from None
    audit.record(s, p.actor, "store.create", rt.now(), target=("store", st.id), store=st.id)
    return store_out(st)


@router.get("/v1/admin/stores")
def list_stores(s: DB, p: Associate) -> list[StoreOut]:
    """The caller's stores (hq: every store)."""
    q = select(Store).order_by(Store.id)
    if (mine := p.store_clause(Store.id)) is not None:
        q = q.where(mine)
    return [store_out(st) for st in s.scalars(q)]


@router.patch("/v1/admin/stores/{store_id}")
def patch_store(store_id: str, body: StorePatch, s: DB, rt: Rt, p: Hq) -> StoreOut:
    st = s.get(Store, store_id)
    if st is None:
        raise HTTPException(404, f"no store {store_id}")
    for k, v in body.model_dump(exclude_unset=True).items():
        setattr(st, k, v.upper() if k == "country" else v)
    audit.record(s, p.actor, "store.update", rt.now(), target=("store", st.id), store=st.id,
                 detail={"fields": fields(body)})
    return store_out(st)


# cases
@router.post("/v1/admin/cases", status_code=201)
def register_case(body: CaseIn, svc: Svc, p: Hq) -> CaseSecretsOut:
    with svc.case_change() as s:
        try:
            c, sec = registry.register_case(s, body.store, body.id, svc.rt.now(), name=body.name)
        except ValueError as e:
            raise bad(e) from None
        log.info("case %s registered in store %s", c.id, c.store_id)
        audit.record(s, p.actor, "case.register", svc.rt.now(), target=("case", c.id), store=c.store_id)
        return secrets_out(svc.rt.settings, c, sec)


@router.get("/v1/admin/cases")
def list_cases(s: DB, p: Associate, store: str | None = None) -> list[CaseOut]:
    """The caller's stores' cases (hq: every case); `store` narrows it to one."""
    q = select(Case).order_by(Case.id)
    if store:
        q = q.where(Case.store_id == store)
    if (mine := p.store_clause(Case.store_id)) is not None:
        q = q.where(mine)
    return [case_out(c) for c in s.scalars(q)]


@router.get("/v1/admin/stores/{store_id}/pending")
def pending_cases(store_id: str, s: DB, _p: StoreManager) -> list[CaseOut]:
    """The store's cases that have not applied their desired staff set and config yet."""
    if s.get(Store, store_id) is None:
        raise HTTPException(404, f"no store {store_id}")
    q = select(Case).where(Case.store_id == store_id).order_by(Case.id)
    return [case_out(c) for c in s.scalars(q) if desired.pending(c)]


@router.get("/v1/admin/cases/{case_id}")
def read_case(case_id: str, s: DB, p: Associate) -> CaseOut:
    return case_out(visible_case(s, p, case_id))


@router.post("/v1/admin/cases/{case_id}/rotate")
def rotate_case(case_id: str, svc: Svc, p: Hq) -> CaseSecretsOut:
    with svc.case_change() as s:
        get_case(s, case_id)
        c, sec = registry.rotate_case(s, case_id)
        log.info("case %s key rotated to version %d", c.id, c.key_version)
        audit.record(s, p.actor, "case.rotate", svc.rt.now(), target=("case", c.id), store=c.store_id,
                     detail={"key_version": c.key_version})
        return secrets_out(svc.rt.settings, c, sec)


@router.post("/v1/admin/cases/{case_id}/resync")
def resync_case(case_id: str, s: DB, rt: Rt, p: Hq) -> ResyncOut:
    """For a case whose messages are refused as replays (its seq jumped or fell back, e.g. a
    corrupt seq file): its next beat or request re-establishes the window (docs/protocol.md)."""
    now = rt.now()
    if not channel.resync(s, case_id, now):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
    log.info("case %s: replay window resync requested", case_id)
    c = get_case(s, case_id)
    audit.record(s, p.actor, "case.resync", now, target=("case", case_id), store=c.store_id)
    return ResyncOut(case=case_id, signed_after=now + RESYNC_MARGIN)


@router.delete("/v1/admin/cases/{case_id}", status_code=204)
def delete_case(case_id: str, svc: Svc, p: Hq) -> Response:
    """Retire a case: its row and broker login go (its events and alerts stay)."""
    with svc.case_change() as s:
        c = get_case(s, case_id)
        audit.record(s, p.actor, "case.delete", svc.rt.now(), target=("case", c.id), store=c.store_id)
        s.delete(c)
    return Response(status_code=204)


async def audited_command(svc: Services, p: Principal, case_id: str, body: dict[str, Any], action: str
                          ) -> CmdResult:
    """A command to a case the caller may see (404 otherwise), audited with its outcome: ok, refused
    (the case said no) or failed (no broker, no answer)."""
    def store_of() -> str:
        with svc.rt.sessions() as s:
            return visible_case(s, p, case_id).store_id

    store = await asyncio.to_thread(store_of)
    result = "failed"
    try:
        res = await svc.command(case_id, body)
        result = "ok" if res.ok else "refused"
        return res
    finally:
        await asyncio.to_thread(audit.write, svc.rt.sessions, p.actor, action, svc.rt.now(),
                                target=("case", case_id), store=store, result=result)


@router.post("/v1/admin/cases/{case_id}/relock")
async def relock(case_id: str, svc: Svc, p: Associate) -> CmdResult:
    return await audited_command(svc, p, case_id, {"t": "relock"}, "case.relock")


@router.post("/v1/admin/cases/{case_id}/reset-tamper")
async def reset_tamper(case_id: str, svc: Svc, p: Manager) -> CmdResult:
    # A case whose enclosure was opened refuses shoppers until staff reset it (a PIN or badge
    # at the case, or this once someone has checked it); refused while it is still open.
    return await audited_command(svc, p, case_id, {"t": "reset_tamper"}, "case.reset_tamper")


@router.post("/v1/admin/cases/{case_id}/config")
async def push_config(case_id: str, body: ConfigIn, svc: Svc, p: Hq) -> ConfigOut:
    """Recorded as the case's desired config at once (re-sent until the case applies it);
    answered with the case's ack when it is connected and answers in time."""
    def record() -> list[dict[str, Any]]:
        with svc.rt.sessions.begin() as s:
            c = get_case(s, case_id)
            desired.set_config(s, c, body.set)
            audit.record(s, p.actor, "case.config", svc.rt.now(), target=("case", c.id), store=c.store_id,
                         detail={"keys": sorted(body.set)})
            return desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set)

    try:
        parts = await asyncio.to_thread(record)
    except desired.Invalid as e:
        raise bad(e) from None
    ack = await svc.push_state(case_id, parts, wait=svc.rt.settings.cmd_timeout_s)
    pending = await asyncio.to_thread(svc.still_pending, [case_id])
    return ConfigOut(ok=None if ack is None else bool(ack["ok"]),
                     err=str(ack["err"]) if ack and ack.get("err") else None, pending=pending)


# the broker's files
@router.get("/v1/admin/broker/passwd", response_class=PlainTextResponse)
def broker_passwd(s: DB, _p: Hq) -> str:
    """Mosquitto password_file for every case, for a broker this process does not write to
    (the cloud's own logins are added by hand)."""
    return broker.passwd_file((c.id, c.mqtt_password_hash) for c in s.scalars(select(Case).order_by(Case.id)))


@router.get("/v1/admin/broker/acl", response_class=PlainTextResponse)
def broker_acl(s: DB, rt: Rt, _p: Hq) -> str:
    cases = [(c.store_id, c.id) for c in s.scalars(select(Case).order_by(Case.id))]
    st = rt.settings
    return broker.acl_file(cases, [u for u in (st.mqtt_username, st.mqtt_api_username) if u], st.topic_prefix)


@router.post("/v1/admin/broker/sync")
def broker_sync(svc: Svc, p: Hq) -> SyncResult:
    """Rewrite the broker's files from the case table now (e.g. after the broker lost them)."""
    if svc.syncer is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "this process does not write the broker's files (broker_dir)")
    try:
        done = svc.syncer.sync()
    except BrokerSyncError as e:
        audit.write(svc.rt.sessions, p.actor, "broker.sync", svc.rt.now(), result="failed")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from None
    audit.write(svc.rt.sessions, p.actor, "broker.sync", svc.rt.now())
    return done


# staff credentials: desired state (desired.py)
async def staff_changed(svc: Services, p: Principal, action: str, change: Callable[[Session], Staff]
                        ) -> tuple[Staff, list[str]]:
    """Change the store's staff set and bump its cases' versions in one transaction (audited in
    it), then send the new state to the cases that are online."""
    def run() -> tuple[Staff, list[tuple[str, list[dict[str, Any]]]]]:
        with svc.rt.sessions.begin() as s:
            st = change(s)
            desired.bump_store(s, st.store_id)
            audit.record(s, p.actor, action, svc.rt.now(), target=("staff", st.id), store=st.store_id,
                         detail={"kind": st.kind})
            cases = s.scalars(select(Case).where(Case.store_id == st.store_id).order_by(Case.id))
            return st, [(c.id, desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set) if c.online else [])
                        for c in cases]

    st, sends = await asyncio.to_thread(run)
    for cid, parts in sends:
        if parts:
            await svc.push_state(cid, parts)
    return st, [cid for cid, _ in sends]


@router.post("/v1/admin/stores/{store_id}/staff", status_code=201)
async def add_staff(store_id: str, body: StaffIn, svc: Svc, p: StoreManager) -> StaffOut:
    def add(s: Session) -> Staff:
        desired.check_room(s, store_id)
        return registry.add_staff(s, store_id, body.kind, body.hash, svc.rt.now(), body.label)

    try:
        st, cases = await staff_changed(svc, p, "staff.add", add)
    except ValueError as e:
        raise bad(e) from None
    pending = await asyncio.to_thread(svc.still_pending, cases)
    return StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label, pending=pending)


@router.get("/v1/admin/stores/{store_id}/staff")
def list_staff(store_id: str, s: DB, _p: StoreManager) -> list[StaffOut]:
    return [StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label)
            for st in s.scalars(select(Staff).where(Staff.store_id == store_id).order_by(Staff.id))]


@router.delete("/v1/admin/staff/{staff_id}")
async def delete_staff(staff_id: str, svc: Svc, p: Manager) -> StaffOut:
    def remove(s: Session) -> Staff:
        st = s.get(Staff, staff_id)
        if st is None or not p.sees(st.store_id):  # another store's answers as a missing one
            raise registry.Invalid(f"no staff credential {staff_id}")
        s.delete(st)
        return st

    try:
        st, cases = await staff_changed(svc, p, "staff.revoke", remove)
    except registry.Invalid:
        raise HTTPException(404, f"no staff credential {staff_id}") from None
    pending = await asyncio.to_thread(svc.still_pending, cases)
    return StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label, pending=pending)


@router.post("/v1/admin/keys/rewrap")
def rewrap_keys(s: DB, rt: Rt, p: Hq) -> dict[str, int]:
    """After a new key-encryption key is put first in the settings: re-seal every case key
    under it, so the old one can be dropped (keyring.py)."""
    n = keyring.rewrap(s)
    audit.record(s, p.actor, "keys.rewrap", rt.now(), detail={"rewrapped": n})
    return {"rewrapped": n}
