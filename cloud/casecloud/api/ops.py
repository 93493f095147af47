"""/healthz: for load balancers and monitoring, public."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from casecloud.api.deps import Svc

router = APIRouter(tags=["ops"])


@router.get("/healthz", responses={503: {"description": "a task or its broker link is down"}})
def healthz(svc: Svc) -> JSONResponse:
    """200 when every long-running task of this process runs and has its broker link; 503
    with the reasons otherwise (a load balancer then stops sending app unlocks here)."""
    commander = svc.commander
    problems = [p for p in (t.problem() for t in svc.tasks) if p]
    body: dict[str, Any] = {"ok": not problems, "broker": bool(commander and commander.connected.is_set()),
                            "tasks": {t.name: t.health() for t in svc.tasks}}
    if commander is not None:  # acks refused (junk, forged) or that failed in this process, since start
        body["acks"] = {"rejected": sum(commander.rejected.values()), "failed": commander.failed}
    if problems:
        body["detail"] = "; ".join(problems)
    return JSONResponse(body, status_code=503 if problems else 200)
