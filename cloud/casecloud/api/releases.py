"""/v1/admin/releases and /v1/admin/rollouts: over-the-air firmware releases (docs/ota.md), hq only.

A release is uploaded in two steps, both verified: POST the manifest (base64 of the exact signed
bytes) with its signature, checked against the fleet's release public keys (settings
release_keys, which GET /v1/admin/releases/key answers for provisioning); then PUT each file
(base64), checked against the manifest's size and sha256. A rollout sends a ready release to a
case, a store or a percentage of a cohort, in waves; halt and resume by hand. Every change is
audited. The worker does the rest (releases/rollout.py).
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import Field
from sqlalchemy import select

from casecloud.accounts import audit
from casecloud.accounts.access import Hq
from casecloud.api.deps import DB, Rt, Svc
from casecloud.api.schemas import Input
from casecloud.api.services import Services
from casecloud.commands import NotConnected
from casecloud.models import Release, Rollout
from casecloud.releases import rollout, store

log = logging.getLogger("casecloud.api")

router = APIRouter(tags=["releases"])


class ReleaseIn(Input):
    manifest: str = Field(description="base64 of the manifest's bytes, exactly as signed")
    sig: str = Field(description="the Ed25519 signature of those bytes: 128 lowercase hex digits")


class FileIn(Input):
    data: str = Field(description="base64 of the file's bytes")


class RolloutIn(Input):
    release: str
    case: str | None = None
    store: str | None = None
    pct: int | None = Field(default=None, ge=1, le=100, description="a percentage (1-100) of the cohort: `stores`, `fw`")
    stores: list[str] = Field(default_factory=list, max_length=1000)
    fw: str | None = Field(default=None, max_length=40, description="only cases running this version")
    waves: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [100], max_length=rollout.MAX_WAVES, description="cumulative % of the cases per wave")
    wave_after_s: int | None = Field(default=None, ge=0, le=365 * 86400,
                                     description="the next wave after this long, confirmed or not")
    max_fail_pct: int = Field(default=20, ge=0, le=100, description="halt when more than this % of the updated cases fail")


class HaltIn(Input):
    reason: str = Field(default="halted by hand", max_length=200)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{what}: not base64") from None


def _release(s: Any, rel: str) -> Release:
    r = s.get(Release, rel)
    if r is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no release {rel}")
    return r


def _rollout(s: Any, rid: str) -> Rollout:
    r = s.get(Rollout, rid)
    if r is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rollout {rid}")
    return r


@router.get("/v1/admin/releases/key")
def release_key(rt: Rt, _p: Hq) -> dict[str, Any]:
    """The fleet's release public keys (newest first): what `casectl provision` writes into a
    case's config as ota_key (the first). Set in the cloud's settings, never through the API."""
    try:
        keys = store.keys(rt.settings.release_keys)
    except store.Refused as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from None
    return {"key": keys[0] if keys else None, "keys": keys}


@router.get("/v1/admin/releases/floor")
def release_floor(board: str, s: DB, _p: Hq) -> dict[str, Any]:
    """The highest anti-rollback floor among the board's published releases (and whose it is):
    a new release may not go below it (`casectl release build` takes it as its default --floor)."""
    top = store.highest_floor(s, board)
    return {"board": board, "floor": top[0] if top else None, "release": top[1] if top else None}


@router.post("/v1/admin/releases", status_code=201)
def upload_release(body: ReleaseIn, s: DB, rt: Rt, p: Hq) -> dict[str, Any]:
    """The manifest and its signature, verified; then PUT each file it names."""
    manifest = _b64(body.manifest, "manifest")
    try:
        r = store.create(s, manifest, body.sig, rt.settings.release_keys, rt.now(), p.actor.actor)
    except store.Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    except store.Refused as e:
        audit.record(s, p.actor, "release.upload", rt.now(), result="refused", detail={"why": str(e)[:200]})
        s.commit()  # the refusal is audited; nothing else was added
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    audit.record(s, p.actor, "release.upload", rt.now(), target=("release", r.id),
                 detail={"version": r.version, "board": r.board, "files": r.files})
    log.info("release %s (%s %s) uploaded, %d files to come", r.id, r.board, r.version, r.files)
    return {**store.summary(r), "missing": store.missing(s, r.id)}


@router.put("/v1/admin/releases/{rel}/files/{idx}")
def upload_file(rel: str, idx: Annotated[int, Path(ge=0, lt=store.MAX_FILES)], body: FileIn, s: DB, rt: Rt, p: Hq
                ) -> dict[str, Any]:
    data = _b64(body.data, "data")
    _release(s, rel)
    try:
        r = store.put_file(s, rel, idx, data)
    except LookupError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from None
    except store.Refused as e:
        audit.record(s, p.actor, "release.file", rt.now(), target=("release", rel), result="refused",
                     detail={"idx": idx, "why": str(e)[:200]})
        s.commit()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    if r.ready:
        audit.record(s, p.actor, "release.ready", rt.now(), target=("release", rel))
    return {**store.summary(r), "missing": store.missing(s, rel)}


@router.get("/v1/admin/releases")
def list_releases(s: DB, _p: Hq) -> list[dict[str, Any]]:
    return [store.summary(r) for r in s.scalars(select(Release).order_by(Release.created_at.desc(), Release.id))]


@router.get("/v1/admin/releases/{rel}")
def read_release(rel: str, s: DB, _p: Hq) -> dict[str, Any]:
    r = _release(s, rel)
    return {**store.summary(r), "missing": store.missing(s, rel), "sig": r.sig,
            "manifest": base64.b64encode(r.manifest).decode()}


async def _send(svc: Services, sends: list[tuple[str, dict[str, Any]]]) -> int:
    """Best effort, at once: a case that does not get it now gets it at its next hello or beat."""
    commander = svc.commander
    if commander is None or not commander.connected.is_set():
        return 0
    n = 0
    for case_id, body in sends:
        with contextlib.suppress(NotConnected, KeyError, ValueError):
            await commander.send(case_id, body)
            n += 1
    return n


@router.post("/v1/admin/rollouts", status_code=201)
async def create_rollout(body: RolloutIn, svc: Svc, p: Hq) -> dict[str, Any]:
    target = rollout.Target(case=body.case, store=body.store, pct=body.pct, stores=tuple(body.stores), fw=body.fw)
    if sum(x is not None for x in (body.case, body.store, body.pct)) != 1:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "name one of case, store or pct")

    def run() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with svc.rt.sessions.begin() as s:
            now = svc.rt.now()
            r = rollout.create(s, body.release, target, now, p.actor.actor, waves=body.waves,
                               wave_after_s=body.wave_after_s, max_fail_pct=body.max_fail_pct)
            audit.record(s, p.actor, "rollout.create", now, target=("rollout", r.id),
                         detail={"release": r.release_id, "target": r.target, "waves": r.waves})
            return rollout.summary(s, r), rollout.sends_due(s, r, now)

    try:
        out, sends = await asyncio.to_thread(run)
    except LookupError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e).strip("'\"")) from None
    except rollout.Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    except rollout.Invalid as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    log.info("rollout %s of %s: %d cases", out["id"], out["release"], out["total"])
    out["sent"] = await _send(svc, sends)
    return out


@router.get("/v1/admin/rollouts")
def list_rollouts(s: DB, _p: Hq, release: str | None = None) -> list[dict[str, Any]]:
    q = select(Rollout).order_by(Rollout.created_at.desc(), Rollout.id)
    if release:
        q = q.where(Rollout.release_id == release)
    return [rollout.summary(s, r) for r in s.scalars(q)]


@router.get("/v1/admin/rollouts/{rid}")
def read_rollout(rid: str, s: DB, _p: Hq) -> dict[str, Any]:
    """The rollout with each case's state: waiting (its wave not open), pending, downloading (pct),
    staged, switching, confirmed, rolled_back, failed or refused (why), cancelled."""
    return rollout.summary(s, _rollout(s, rid), cases=True)


@router.post("/v1/admin/rollouts/{rid}/halt")
async def halt_rollout(rid: str, svc: Svc, p: Hq, body: HaltIn | None = None) -> dict[str, Any]:
    reason = body.reason if body else "halted by hand"

    def run() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with svc.rt.sessions.begin() as s:
            now = svc.rt.now()
            r = _rollout(s, rid)
            if not rollout.halt(s, r, now, f"{reason} ({p.label})"):
                raise HTTPException(status.HTTP_409_CONFLICT, f"rollout {rid} is {r.state}, not active")
            audit.record(s, p.actor, "rollout.halt", now, target=("rollout", rid), detail={"reason": reason})
            cancels = rollout.cancels_due(s, r, now)
            return rollout.summary(s, r), cancels

    out, cancels = await asyncio.to_thread(run)
    out["sent"] = await _send(svc, cancels)
    return out


@router.post("/v1/admin/rollouts/{rid}/resume")
async def resume_rollout(rid: str, svc: Svc, p: Hq) -> dict[str, Any]:
    def run() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with svc.rt.sessions.begin() as s:
            now = svc.rt.now()
            r = _rollout(s, rid)
            if not rollout.resume(s, r, now):
                raise HTTPException(status.HTTP_409_CONFLICT, f"rollout {rid} is {r.state}, not halted")
            audit.record(s, p.actor, "rollout.resume", now, target=("rollout", rid))
            return rollout.summary(s, r), rollout.sends_due(s, r, now)

    out, sends = await asyncio.to_thread(run)
    out["sent"] = await _send(svc, sends)
    return out
