"""HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs).

- /v1/admin/...: stores, cases, members, staff credentials, events, alerts. Bearer token.
- /v1/app/unlock: the store app's unlock button (member token in the body).
- /v1/dev/sms: the dev SMS outbox, only while the outbox backend is in use. Bearer token.
"""

# No `from __future__ import annotations`: FastAPI resolves the local Annotated aliases at run time.

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud import __version__, broker, channel, codec, desired, keyring, registry
from casecloud import alerts as alerting
from casecloud.api.schemas import (
    AlertAckIn,
    AlertOut,
    AlertResolveIn,
    CaseIn,
    CaseOut,
    CaseSecretsOut,
    CmdResult,
    ConfigIn,
    ConfigOut,
    EventOut,
    MemberCreated,
    MemberIn,
    MemberOut,
    MqttLogin,
    PhoneQuery,
    ResyncOut,
    SmsOut,
    StaffIn,
    StaffOut,
    StatusIn,
    StoreIn,
    StoreOut,
    StorePatch,
    UnlockIn,
    UnlockOut,
    alert_out,
    case_out,
    member_out,
    store_out,
)
from casecloud.brokersync import BrokerSync, BrokerSyncError, SyncResult
from casecloud.codec import ID_RE, INT_MAX, INT_MIN, RESYNC_MARGIN
from casecloud.commands import Commander, NotConnected
from casecloud.models import Alert, Case, Event, Member, SmsOutbox, Staff, Store
from casecloud.phones import to_e164
from casecloud.privacy import erase_member, retention
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised

log = logging.getLogger("casecloud.api")


def _plain_url(request: Request) -> None:
    """Every request: no NUL character in the path (ids) or the query (filters) either."""
    if "\x00" in request.scope.get("path", "") or any(
            "\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "NUL character in the URL")


MAX_BODY = 64 * 1024  # far above any admin or app request


async def _bounded_json(request: Request) -> None:
    """Every JSON body: read with the protocol's parser too (codec.parse), since FastAPI's json.loads
    takes NaN, Infinity, 1e999 and integers of any size into `Any` fields (a config's `set`), where
    PostgreSQL refused them with a 500 and a case would have been sent them."""
    # Every body, whatever its content type says: FastAPI reads JSON under any spelling of the
    # type (application/JSON, +json suffixes), and every endpoint here takes JSON or nothing.
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()
        if body:
            try:
                codec.parse(body, max_bytes=MAX_BODY)
            except codec.Rejected as e:
                if e.reason == "too_large":
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {MAX_BODY} bytes") from None
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    "body: not UTF-8 JSON, nested deeper than 16, or a number outside signed "
                                    "64 bits or not finite") from None


AlertId = Annotated[int, Path(ge=1, le=INT_MAX)]  # beyond a BIGINT, PostgreSQL would fail the query


# --- app ------------------------------------------------------------------------------------

def _db(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the endpoint returns without an error."""
    rt: Runtime = request.app.state.rt
    with rt.sessions.begin() as s:
        yield s


# scope="function": committed before the response goes out. By default FastAPI ends a yield
# dependency after sending the response, so a client could be told 201 and act on it (casectl
# registering a case in the store it just created) before the commit, or for a commit that fails.
DB = Annotated[Session, Depends(_db, scope="function")]


def create_app(rt: Runtime, commander: Commander | None = None, watch: Sequence[Supervised] = ()) -> FastAPI:
    """commander: sends cmds and waits for acks; None gives an API that answers 503 for those.
    watch: the process's other supervised tasks (the worker beside the API), for /healthz."""

    sender = Supervised("command sender", commander.run, link=commander.connected) if commander else None

    # Writes the broker's files from the case table (brokersync.py) when this process has them.
    syncer = BrokerSync(rt.settings, rt.sessions) if rt.settings.broker_dir else None
    follower = Supervised("broker sync", syncer.follow) if syncer else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(sender.run(), name=sender.name)] if sender else []
        if syncer:  # the broker's files match the table before the first request is served
            await asyncio.to_thread(syncer.sync_logged)
        if follower:
            tasks.append(asyncio.create_task(follower.run(), name=follower.name))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="LockCase cloud", version=__version__, lifespan=lifespan,
                  description="Reference cloud for LockCase merchandise cases (docs/cloud.md).",
                  dependencies=[Depends(_plain_url), Depends(_bounded_json)])
    bearer = HTTPBearer(auto_error=False)

    def admin(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        token = rt.settings.admin_bearer()
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin bearer token required",
                                headers={"WWW-Authenticate": "Bearer"})

    app.state.rt = rt
    Admin = [Depends(admin)]

    def bad(e: ValueError) -> HTTPException:
        code = status.HTTP_409_CONFLICT if isinstance(e, registry.Conflict) else status.HTTP_422_UNPROCESSABLE_CONTENT
        return HTTPException(code, str(e))

    @contextlib.contextmanager
    def case_change() -> Iterator[Session]:
        """A change to the case table: committed, then the broker's files rebuilt from it (when
        this process keeps them). Nothing is rebuilt for a change that raised."""
        with rt.sessions.begin() as s:
            yield s
        if syncer:
            syncer.sync_logged()

    def get_case(s: Session, case_id: str) -> Case:
        c = s.get(Case, case_id)
        if c is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
        return c

    def secrets_out(c: Case, sec: registry.CaseSecrets) -> CaseSecretsOut:
        st = rt.settings
        return CaseSecretsOut(
            id=c.id, store=c.store_id, key=sec.key_hex, key_version=c.key_version, topic_prefix=st.topic_prefix,
            mqtt=MqttLogin(host=st.public_mqtt_host or st.mqtt_host, port=st.public_mqtt_port or st.mqtt_port,
                           username=sec.mqtt_username, password=sec.mqtt_password))

    async def command(case_id: str, body: dict[str, Any]) -> CmdResult:
        if commander is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker connection in this process")
        try:
            ack = await commander.send(case_id, body, wait=rt.settings.cmd_timeout_s)
        except NotConnected:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not connected to the broker") from None
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}") from None
        except TimeoutError:
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "the case did not answer in time") from None
        except ValueError as e:  # codec.encode: over the 1024-byte limit of one message
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"command not sent: {e}") from None
        assert ack is not None
        return CmdResult(ok=ack["ok"], err=str(ack["err"]) if ack.get("err") else None)

    @app.get("/healthz", tags=["ops"], responses={503: {"description": "a task or its broker link is down"}})
    def healthz() -> JSONResponse:
        """200 when every long-running task of this process runs and has its broker link; 503
        with the reasons otherwise (a load balancer then stops sending app unlocks here)."""
        tasks = [t for t in (sender, follower, *watch) if t is not None]
        problems = [p for p in (t.problem() for t in tasks) if p]
        body = {"ok": not problems, "broker": bool(commander and commander.connected.is_set()),
                "tasks": {t.name: t.health() for t in tasks}}
        if commander is not None:  # acks refused (junk, forged) or that failed in this process, since start
            body["acks"] = {"rejected": sum(commander.rejected.values()), "failed": commander.failed}
        if problems:
            body["detail"] = "; ".join(problems)
        return JSONResponse(body, status_code=503 if problems else 200)

    # stores
    @app.post("/v1/admin/stores", tags=["admin"], dependencies=Admin, status_code=201)
    def create_store(body: StoreIn, s: DB) -> StoreOut:
        try:
            st = registry.create_store(s, body.id, rt.now(), name=body.name, country=body.country,
                                       notify_url=body.notify_url, guests_allowed=body.guests_allowed)
        except ValueError as e:
            raise bad(e) from None
        return store_out(st)

    @app.get("/v1/admin/stores", tags=["admin"], dependencies=Admin)
    def list_stores(s: DB) -> list[StoreOut]:
        return [store_out(st) for st in s.scalars(select(Store).order_by(Store.id))]

    @app.patch("/v1/admin/stores/{store_id}", tags=["admin"], dependencies=Admin)
    def patch_store(store_id: str, body: StorePatch, s: DB) -> StoreOut:
        st = s.get(Store, store_id)
        if st is None:
            raise HTTPException(404, f"no store {store_id}")
        for k, v in body.model_dump(exclude_unset=True).items():
            setattr(st, k, v.upper() if k == "country" else v)
        return store_out(st)

    # cases
    @app.post("/v1/admin/cases", tags=["admin"], dependencies=Admin, status_code=201)
    def register_case(body: CaseIn) -> CaseSecretsOut:
        with case_change() as s:
            try:
                c, sec = registry.register_case(s, body.store, body.id, rt.now(), name=body.name)
            except ValueError as e:
                raise bad(e) from None
            log.info("case %s registered in store %s", c.id, c.store_id)
            return secrets_out(c, sec)

    @app.get("/v1/admin/cases", tags=["admin"], dependencies=Admin)
    def list_cases(s: DB, store: str | None = None) -> list[CaseOut]:
        q = select(Case).order_by(Case.id)
        if store:
            q = q.where(Case.store_id == store)
        return [case_out(c) for c in s.scalars(q)]

    @app.get("/v1/admin/stores/{store_id}/pending", tags=["admin"], dependencies=Admin)
    def pending_cases(store_id: str, s: DB) -> list[CaseOut]:
        """The store's cases that have not applied their desired staff set and config yet."""
        if s.get(Store, store_id) is None:
            raise HTTPException(404, f"no store {store_id}")
        q = select(Case).where(Case.store_id == store_id).order_by(Case.id)
        return [case_out(c) for c in s.scalars(q) if desired.pending(c)]

    @app.get("/v1/admin/cases/{case_id}", tags=["admin"], dependencies=Admin)
    def read_case(case_id: str, s: DB) -> CaseOut:
        return case_out(get_case(s, case_id))

    @app.post("/v1/admin/cases/{case_id}/rotate", tags=["admin"], dependencies=Admin)
    def rotate_case(case_id: str) -> CaseSecretsOut:
        with case_change() as s:
            get_case(s, case_id)
            c, sec = registry.rotate_case(s, case_id)
            log.info("case %s key rotated to version %d", c.id, c.key_version)
            return secrets_out(c, sec)

    @app.post("/v1/admin/cases/{case_id}/resync", tags=["admin"], dependencies=Admin)
    def resync_case(case_id: str, s: DB) -> ResyncOut:
        """For a case whose messages are refused as replays (its seq jumped or fell back, e.g. a
        corrupt seq file): its next beat or request re-establishes the window (docs/protocol.md)."""
        now = rt.now()
        if not channel.resync(s, case_id, now):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
        log.info("case %s: replay window resync requested", case_id)
        return ResyncOut(case=case_id, signed_after=now + RESYNC_MARGIN)

    @app.delete("/v1/admin/cases/{case_id}", tags=["admin"], dependencies=Admin, status_code=204)
    def delete_case(case_id: str) -> Response:
        with case_change() as s:
            s.delete(get_case(s, case_id))
        return Response(status_code=204)

    @app.post("/v1/admin/cases/{case_id}/relock", tags=["admin"], dependencies=Admin)
    async def relock(case_id: str) -> CmdResult:
        return await command(case_id, {"t": "relock"})

    @app.post("/v1/admin/cases/{case_id}/reset-tamper", tags=["admin"], dependencies=Admin)
    async def reset_tamper(case_id: str) -> CmdResult:
        # A case whose enclosure was opened refuses shoppers until staff reset it (a PIN or badge
        # at the case, or this once someone has checked it); refused while it is still open.
        return await command(case_id, {"t": "reset_tamper"})

    @app.post("/v1/admin/cases/{case_id}/config", tags=["admin"], dependencies=Admin)
    async def push_config(case_id: str, body: ConfigIn) -> ConfigOut:
        """Recorded as the case's desired config at once (re-sent until the case applies it);
        answered with the case's ack when it is connected and answers in time."""
        def record() -> list[dict[str, Any]]:
            with rt.sessions.begin() as s:
                c = get_case(s, case_id)
                desired.set_config(s, c, body.set)
                return desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set)

        try:
            parts = await asyncio.to_thread(record)
        except desired.Invalid as e:
            raise bad(e) from None
        ack = await push_state(case_id, parts, wait=rt.settings.cmd_timeout_s)
        pending = await asyncio.to_thread(still_pending, [case_id])
        return ConfigOut(ok=None if ack is None else bool(ack["ok"]),
                         err=str(ack["err"]) if ack and ack.get("err") else None, pending=pending)

    @app.get("/v1/admin/broker/passwd", tags=["admin"], dependencies=Admin, response_class=PlainTextResponse)
    def broker_passwd(s: DB) -> str:
        """Mosquitto password_file for every case, for a broker this process does not write to
        (the cloud's own logins are added by hand)."""
        return broker.passwd_file((c.id, c.mqtt_password_hash) for c in s.scalars(select(Case).order_by(Case.id)))

    @app.get("/v1/admin/broker/acl", tags=["admin"], dependencies=Admin, response_class=PlainTextResponse)
    def broker_acl(s: DB) -> str:
        cases = [(c.store_id, c.id) for c in s.scalars(select(Case).order_by(Case.id))]
        st = rt.settings
        return broker.acl_file(cases, [u for u in (st.mqtt_username, st.mqtt_api_username) if u], st.topic_prefix)

    @app.post("/v1/admin/broker/sync", tags=["admin"], dependencies=Admin)
    def broker_sync() -> SyncResult:
        """Rewrite the broker's files from the case table now (e.g. after the broker lost them)."""
        if syncer is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "this process does not write the broker's files (broker_dir)")
        try:
            return syncer.sync()
        except BrokerSyncError as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from None

    # members
    @app.post("/v1/admin/members", tags=["admin"], dependencies=Admin, status_code=201)
    def create_member(body: MemberIn, s: DB) -> MemberCreated:
        try:
            m, app_token = registry.create_member(s, rt.hasher, rt.now(), phone=body.phone, country=body.country,
                                                  card=body.card, status=body.status, external_id=body.external_id)
        except ValueError as e:
            raise bad(e) from None
        return MemberCreated(**member_out(m).model_dump(), app_token=app_token)

    @app.get("/v1/admin/members/{member_id}", tags=["admin"], dependencies=Admin)
    def read_member(member_id: str, s: DB) -> MemberOut:
        m = s.get(Member, member_id)
        if m is None:
            raise HTTPException(404, f"no member {member_id}")
        return member_out(m)

    @app.post("/v1/admin/members/lookup", tags=["admin"], dependencies=Admin)
    def find_member(body: PhoneQuery, s: DB) -> list[MemberOut]:
        """Look a member up by number. A POST body, not a query string: URLs end up in access logs."""
        e164 = to_e164(body.phone, body.country)
        if e164 is None:
            raise HTTPException(422, "phone: not a valid number")
        return [member_out(m) for m in s.scalars(select(Member).where(Member.phone_hash == rt.hasher.phone(e164)))]

    def set_status(s: Session, member_id: str, st: str) -> MemberOut:
        try:
            return member_out(registry.set_member_status(s, member_id, st))
        except registry.Invalid as e:
            raise HTTPException(404, str(e)) from None

    @app.post("/v1/admin/members/{member_id}/status", tags=["admin"], dependencies=Admin)
    def member_status(member_id: str, body: StatusIn, s: DB) -> MemberOut:
        return set_status(s, member_id, body.status)

    @app.post("/v1/admin/members/{member_id}/flag", tags=["admin"], dependencies=Admin)
    def flag_member(member_id: str, s: DB) -> MemberOut:
        return set_status(s, member_id, "flagged")

    @app.post("/v1/admin/members/{member_id}/trust", tags=["admin"], dependencies=Admin)
    def trust_member(member_id: str, s: DB) -> MemberOut:
        return set_status(s, member_id, "trusted")

    @app.delete("/v1/admin/members/{member_id}", tags=["admin"], dependencies=Admin, status_code=204)
    def erase(member_id: str, s: DB) -> Response:
        """Right to erasure: the member, their challenges and counters, their name on events."""
        if not erase_member(s, member_id):
            raise HTTPException(404, f"no member {member_id}")
        log.info("member %s erased", member_id)
        return Response(status_code=204)

    # staff credentials and config: desired state (desired.py)
    async def push_state(case_id: str, parts: list[dict[str, Any]], *, wait: float | None = None
                         ) -> dict[str, Any] | None:
        """Best effort, at once: what is not acknowledged here is re-sent by the worker when the
        case greets or beats. With `wait`, the ack of the last part (or None)."""
        if commander is None or not commander.connected.is_set():
            return None
        ack = None
        with contextlib.suppress(NotConnected, KeyError, TimeoutError):
            for p in parts:
                ack = await commander.send(case_id, p, wait=wait if p is parts[-1] else None)
        return ack

    def still_pending(ids: list[str]) -> list[str]:
        with rt.sessions() as s:
            return [c.id for c in s.scalars(select(Case).where(Case.id.in_(ids)).order_by(Case.id))
                    if desired.pending(c)]

    async def staff_changed(change: Callable[[Session], Staff]) -> tuple[Staff, list[str]]:
        """Change the store's staff set and bump its cases' versions in one transaction, then send
        the new state to the cases that are online."""
        def run() -> tuple[Staff, list[tuple[str, list[dict[str, Any]]]]]:
            with rt.sessions.begin() as s:
                st = change(s)
                desired.bump_store(s, st.store_id)
                cases = s.scalars(select(Case).where(Case.store_id == st.store_id).order_by(Case.id))
                return st, [(c.id, desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set) if c.online else [])
                            for c in cases]

        st, sends = await asyncio.to_thread(run)
        for cid, parts in sends:
            if parts:
                await push_state(cid, parts)
        return st, [cid for cid, _ in sends]

    @app.post("/v1/admin/stores/{store_id}/staff", tags=["admin"], dependencies=Admin, status_code=201)
    async def add_staff(store_id: str, body: StaffIn) -> StaffOut:
        def add(s: Session) -> Staff:
            desired.check_room(s, store_id)
            return registry.add_staff(s, store_id, body.kind, body.hash, rt.now(), body.label)

        try:
            st, cases = await staff_changed(add)
        except ValueError as e:
            raise bad(e) from None
        pending = await asyncio.to_thread(still_pending, cases)
        return StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label, pending=pending)

    @app.get("/v1/admin/stores/{store_id}/staff", tags=["admin"], dependencies=Admin)
    def list_staff(store_id: str, s: DB) -> list[StaffOut]:
        return [StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label)
                for st in s.scalars(select(Staff).where(Staff.store_id == store_id).order_by(Staff.id))]

    @app.delete("/v1/admin/staff/{staff_id}", tags=["admin"], dependencies=Admin)
    async def delete_staff(staff_id: str) -> StaffOut:
        def remove(s: Session) -> Staff:
            st = s.get(Staff, staff_id)
            if st is None:
                raise registry.Invalid(f"no staff credential {staff_id}")
            s.delete(st)
            return st

        try:
            st, cases = await staff_changed(remove)
        except registry.Invalid:
            raise HTTPException(404, f"no staff credential {staff_id}") from None
        pending = await asyncio.to_thread(still_pending, cases)
        return StaffOut(id=st.id, store=st.store_id, kind=st.kind, label=st.label, pending=pending)

    # events and alerts
    @app.get("/v1/admin/events", tags=["admin"], dependencies=Admin)
    def events(
        s: DB,
        store: str | None = None,
        case: str | None = None,
        type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the API's word for it
        since: int | None = Query(None, ge=INT_MIN, le=INT_MAX, description="epoch seconds, inclusive"),
        until: int | None = Query(None, ge=INT_MIN, le=INT_MAX, description="epoch seconds, exclusive"),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=INT_MAX),
    ) -> list[EventOut]:
        q = select(Event)
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

    @app.get("/v1/admin/alerts", tags=["admin"], dependencies=Admin)
    def alerts(
        s: DB,
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

    @app.post("/v1/admin/alerts/{alert_id}/ack", tags=["admin"], dependencies=Admin,
              responses={404: {}, 409: {"description": "the alert is resolved"}})
    def ack_alert(alert_id: AlertId, body: AlertAckIn, s: DB) -> AlertOut:
        """Staff have seen it (the first to acknowledge stays on record)."""
        try:
            a = alerting.acknowledge(s, alert_id, body.by, rt.now())
        except alerting.Resolved as e:
            raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
        if a is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return alert_out(a)

    @app.post("/v1/admin/alerts/{alert_id}/resolve", tags=["admin"], dependencies=Admin, responses={404: {}})
    def resolve_alert(alert_id: AlertId, body: AlertResolveIn, s: DB) -> AlertOut:
        """Closed (idempotent): the next occurrence opens a new alert."""
        a = alerting.resolve(s, alert_id, body.by, rt.now())
        if a is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return alert_out(a)

    @app.post("/v1/admin/keys/rewrap", tags=["admin"], dependencies=Admin)
    def rewrap_keys(s: DB) -> dict[str, int]:
        """After a new key-encryption key is put first in the settings: re-seal every case key
        under it, so the old one can be dropped (keyring.py)."""
        return {"rewrapped": keyring.rewrap(s)}

    @app.post("/v1/admin/retention/run", tags=["admin"], dependencies=Admin)
    def run_retention(s: DB) -> dict[str, int]:
        return {"stripped": retention(s, rt.now(), rt.settings.retention_days)}

    # the store app
    @app.post("/v1/app/unlock", tags=["app"], responses={403: {}, 429: {}, 503: {}, 504: {}})
    async def app_unlock(body: UnlockIn, request: Request) -> UnlockOut:
        """Unlock the case whose QR code the shopper scanned; answers once the case has acted.
        An unknown case and an unknown token both answer 403 `refused`."""
        p = rt.policy
        # The ASGI peer; behind a proxy, uvicorn's --forwarded-allow-ips makes it the shopper's.
        client = (request.client.host if request.client else "-")[:64]

        def decide() -> Any:
            with rt.sessions.begin() as s:
                # the same lookups whether the case exists or not: no timing tells them apart
                case = s.get(Case, body.case) if ID_RE.match(body.case) else None
                store = s.get(Store, case.store_id if case else "")
                return p.app_unlock(s, store, case, body.token, client)

        r = await asyncio.to_thread(decide)
        r = await asyncio.to_thread(p.after_commit, rt.sessions, r)
        if r.t != "allow":
            raise HTTPException(429 if r.why == "rate_limited" else 403, r.why)
        grant = r.fields["grant"]
        outcome = "timeout"
        try:
            res = await command(body.case, {"t": "unlock", "grant": grant})
            outcome = "ok" if res.ok else (res.err or "failed")
            return UnlockOut(ok=res.ok, grant=grant, err=res.err)
        finally:
            def note() -> None:
                with rt.sessions.begin() as s:
                    case = s.get(Case, body.case)
                    if case is not None:
                        p.journal(s, case, "app_unlock", member_id=r.member_id, grant=grant, result=outcome)

            await asyncio.to_thread(note)

    # development
    def outbox(s: Session, to_hash: str | None, last2: str | None, limit: int) -> list[SmsOut]:
        if rt.settings.sms_backend != "outbox":
            raise HTTPException(404, "the dev outbox is off (sms_backend is not outbox)")
        q = select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(limit)
        if to_hash:
            q = q.where(SmsOutbox.to_hash == to_hash)
        if last2:
            q = q.where(SmsOutbox.to_last2 == last2)
        return [SmsOut(to_last2=m.to_last2, body=m.body, created_at=m.created_at) for m in s.scalars(q)]

    @app.get("/v1/dev/sms", tags=["dev"], dependencies=Admin)
    def dev_sms(s: DB, last2: str | None = Query(None, pattern=r"^\d{2}$"),
                limit: int = Query(20, ge=1, le=200)) -> list[SmsOut]:
        """Texts the dev outbox 'sent', newest first, optionally only to numbers ending in `last2`."""
        return outbox(s, None, last2, limit)

    @app.post("/v1/dev/sms/lookup", tags=["dev"], dependencies=Admin)
    def dev_sms_to(body: PhoneQuery, s: DB, limit: int = Query(20, ge=1, le=200)) -> list[SmsOut]:
        """Texts sent to one number (in the body: URLs end up in access logs)."""
        e164 = to_e164(body.phone, body.country)
        if e164 is None:
            raise HTTPException(422, "phone: not a valid number")
        return outbox(s, rt.hasher.phone(e164), None, limit)

    return app
