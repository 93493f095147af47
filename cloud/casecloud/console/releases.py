"""HQ's over-the-air pages (docs/ota.md): the releases with their rollouts, a new rollout, and one
rollout's progress per case with halt and resume. The forms call the API's own route functions
(api/releases.py), so a change from a page is checked and audited as one from casectl is."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from casecloud.api import releases as api
from casecloud.api.deps import DB, Svc
from casecloud.console.web import Form, HqPage, back, render
from casecloud.models import Release, Rollout, Store
from casecloud.releases import rollout, store

router = APIRouter(include_in_schema=False)

_DONE = {"created": "Rollout started.", "halted": "Rollout halted: the cases that were told are told to cancel.",
         "resumed": "Rollout resumed."}


def _why(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
    return str(e.detail) if isinstance(e, HTTPException) else str(e)


def _page(request: Request, s: Any, p: Any, *, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    releases = [store.summary(r) for r in s.scalars(select(Release).order_by(Release.created_at.desc(), Release.id))]
    rollouts = [rollout.summary(s, r) for r in s.scalars(select(Rollout).order_by(Rollout.created_at.desc(),
                                                                                    Rollout.id))]
    stores = list(s.scalars(select(Store).order_by(Store.id)))
    return render(request, "hq_releases.html", p, releases=releases, rollouts=rollouts, stores=stores, error=error,
                  note=_DONE.get(request.query_params.get("done", "")), status_code=status_code)


@router.get("/console/hq/releases", response_class=HTMLResponse)
def releases_page(request: Request, s: DB, p: HqPage) -> HTMLResponse:
    return _page(request, s, p)


@router.post("/console/hq/rollouts", response_class=HTMLResponse, response_model=None)
async def create_rollout(request: Request, svc: Svc, p: HqPage, f: Form) -> HTMLResponse | RedirectResponse:
    kind, value = f("target"), f("value", max_length=40).strip()
    try:
        waves = [int(x) for x in f("waves", "100").split(",") if x.strip()]
        after = f("wave_after_s").strip()
        body = api.RolloutIn.model_validate({
            "release": f("release"), "case": value if kind == "case" else None,
            "store": value if kind == "store" else None, "pct": int(value) if kind == "pct" else None,
            "stores": [f("in_store")] if kind == "pct" and f("in_store") else [], "waves": waves,
            "wave_after_s": int(after) if after else None, "max_fail_pct": int(f("max_fail_pct", "20"))})
        got = await api.create_rollout(body, svc, p)
    except (ValueError, HTTPException) as e:  # ValidationError is a ValueError
        with svc.rt.sessions() as s:
            return _page(request, s, p, error=_why(e), status_code=e.status_code if isinstance(e, HTTPException) else 422)
    return back(f"/console/hq/rollouts/{got['id']}?done=created")


@router.get("/console/hq/rollouts/{rid}", response_class=HTMLResponse)
def rollout_page(rid: str, request: Request, s: DB, p: HqPage) -> HTMLResponse:
    r = s.get(Rollout, rid)
    if r is None:
        raise HTTPException(404, f"no rollout {rid}")
    return render(request, "hq_rollout.html", p, r=rollout.summary(s, r, cases=True),
                  note=_DONE.get(request.query_params.get("done", "")))


@router.post("/console/hq/rollouts/{rid}/halt", response_model=None)
async def halt(rid: str, svc: Svc, p: HqPage, f: Form) -> RedirectResponse:
    await api.halt_rollout(rid, svc, p, api.HaltIn(reason=f("reason", max_length=200) or "halted from the console"))
    return back(f"/console/hq/rollouts/{rid}?done=halted")


@router.post("/console/hq/rollouts/{rid}/resume", response_model=None)
async def resume(rid: str, svc: Svc, p: HqPage) -> RedirectResponse:
    await api.resume_rollout(rid, svc, p)
    return back(f"/console/hq/rollouts/{rid}?done=resumed")
