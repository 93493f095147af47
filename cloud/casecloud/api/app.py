"""/v1/app: the store app's unlock button, public (the member's app token in the body)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from casecloud import metrics
from casecloud.api.deps import Svc
from casecloud.api.schemas import UnlockIn, UnlockOut
from casecloud.codec import ID_RE
from casecloud.models import Case, Store

router = APIRouter(tags=["app"])


@router.post("/v1/app/unlock", responses={403: {}, 429: {}, 503: {}, 504: {}})
async def app_unlock(body: UnlockIn, request: Request, svc: Svc) -> UnlockOut:
    """Unlock the case whose QR code the shopper scanned; answers once the case has acted.
    An unknown case and an unknown token both answer 403 `refused`."""
    rt = svc.rt
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
    metrics.decided("app", r.t, r.why)
    if r.t != "allow":
        raise HTTPException(429 if r.why == "rate_limited" else 403, r.why)
    grant = r.fields["grant"]
    outcome = "timeout"
    try:
        res = await svc.command(body.case, {"t": "unlock", "grant": grant})
        outcome = "ok" if res.ok else (res.err or "failed")
        return UnlockOut(ok=res.ok, grant=grant, err=res.err)
    finally:
        def note() -> None:
            with rt.sessions.begin() as s:
                case = s.get(Case, body.case)
                if case is not None:
                    p.journal(s, case, "app_unlock", member_id=r.member_id, grant=grant, result=outcome)

        await asyncio.to_thread(note)
