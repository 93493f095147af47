"""The operator's endpoints: liveness, readiness, health, metrics (docs/operations.md).

- `GET /livez`: the process's loops are alive: every supervisor (supervise.py) is still looping
  (a task it watches may be in its restart backoff: the supervisor restarts it, a process restart
  would not do better), no batch has been in the worker's database thread for `stall_s` (a hung
  query: only a restart frees that thread), and the event loop answered this request. 503 names
  what is dead.
- `GET /readyz`: this process can do its work now: the database answers a fresh connection
  within `ready_timeout_s`, every supervised task runs and every broker link is up. 503 with the
  reasons otherwise (`database unreachable: ...`, `worker: broker link down`); 200 again as soon
  as they are back. A load balancer sends app unlocks only to ready processes.
- `GET /healthz`: readiness with the details (each task's state and restarts, acks refused).
- `GET /metrics`: Prometheus text format, for a bearer token equal to `metrics_token` (that token
  opens nothing else; no API token opens this). One endpoint per process (metrics.py says why).

A `--worker-only` process serves these four on `ops_host:ops_port` (`ops_app`), and nothing else.
"""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases at run time.

import asyncio
import hmac
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from casecloud import __version__, metrics
from casecloud.api.deps import Svc
from casecloud.api.services import Services
from casecloud.runtime import Runtime
from casecloud.settings import sqlite_path
from casecloud.supervise import Supervised

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])
_bearer = HTTPBearer(auto_error=False)
_CACHE_S = 0.5  # probes from several balancers and Prometheus share one database check


class DatabaseProbe:
    """A fresh connection each time (no pool: a pooled connection can outlive the server, or an
    SQLite file that was moved away), `SELECT 1` on it; the answer kept for `_CACHE_S`."""

    def __init__(self, url: URL, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._sqlite = sqlite_path(url.render_as_string(hide_password=False))
        self._engine: Engine | None = None
        if self._sqlite is None:
            args: dict[str, Any] = {"connect_timeout": max(int(timeout_s), 1)} if url.get_backend_name() == \
                "postgresql" else {}
            self._engine = create_engine(url, poolclass=NullPool, connect_args=args)
        self._at = 0.0
        self._last: str | None = None
        self._lock = asyncio.Lock()

    def _check(self) -> None:
        if self._sqlite is not None:
            # mode=rw: a missing file is an error here, not a new empty database
            conn = sqlite3.connect(f"file:{quote(str(self._sqlite))}?mode=rw", uri=True, timeout=self._timeout)
            try:
                conn.execute("SELECT 1 FROM alembic_version").fetchall()
            finally:
                conn.close()
            return
        assert self._engine is not None
        with self._engine.connect() as c:
            c.execute(text("SELECT 1"))

    async def problem(self) -> str | None:
        """None when the database answers; else why not, in a few words."""
        async with self._lock:
            if time.monotonic() - self._at < _CACHE_S:
                return self._last
            try:
                await asyncio.wait_for(asyncio.to_thread(self._check), self._timeout)
                self._last = None
            except TimeoutError:
                self._last = f"database unreachable: no answer within {self._timeout:g} s"
            except Exception as e:
                # The driver's text names hosts, ports and users: it goes to the log, and the
                # probes, which answer anyone who reaches them, say only the error's kind.
                was = self._last
                self._last = f"database unreachable: {type(e).__name__}"
                if self._last != was:
                    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                    log.warning("%s (%s)", self._last, first)
            self._at = time.monotonic()
            return self._last

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _probe(request: Request) -> DatabaseProbe:
    state = request.app.state
    probe = getattr(state, "ops_probe", None)
    if probe is None:
        rt: Runtime = state.rt
        probe = state.ops_probe = DatabaseProbe(rt.engine.url, rt.settings.ready_timeout_s)
    return probe


Probe = Annotated[DatabaseProbe, Depends(_probe)]


def _links(tasks: Sequence[Supervised]) -> bool:
    return all(t.link.is_set() for t in tasks if t.link is not None)


async def _readiness(svc: Services, probe: DatabaseProbe) -> tuple[list[str], str | None]:
    db = await probe.problem()
    problems = [p for p in (db, *(t.problem() for t in svc.tasks)) if p]
    return problems, db


@router.get("/livez", responses={503: {"description": "a supervisor loop of this process ended"}})
def livez(svc: Svc) -> JSONResponse:
    """200 while every supervisor loop runs (answering at all shows the event loop does)."""
    dead = [d for d in (t.dead() for t in svc.tasks) if d]
    body: dict[str, Any] = {"live": not dead, "version": __version__}
    if dead:
        body["detail"] = "; ".join(dead)
    return JSONResponse(body, status_code=503 if dead else 200)


@router.get("/readyz", responses={503: {"description": "the database, the broker or a task is down"}})
async def readyz(svc: Svc, probe: Probe) -> JSONResponse:
    """200 when the database answers, every task runs and every broker link is up; 503 with why."""
    problems, _ = await _readiness(svc, probe)
    body: dict[str, Any] = {"ready": not problems}
    if problems:
        body["detail"] = "; ".join(problems)
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/healthz", responses={503: {"description": "the database, a task or its broker link is down"}})
async def healthz(svc: Svc, probe: Probe) -> JSONResponse:
    """Readiness with the details: 200 when the database answers and every long-running task of
    this process runs and has its broker link; 503 with the reasons otherwise (a load balancer
    then stops sending app unlocks here)."""
    problems, db = await _readiness(svc, probe)
    commander = svc.commander
    links = [t for t in svc.tasks if t.link is not None]
    body: dict[str, Any] = {"ok": not problems, "database": db is None,
                            "broker": commander.connected.is_set() if commander else bool(links) and _links(links),
                            "tasks": {t.name: t.health() for t in svc.tasks}}
    if commander is not None:  # acks refused (junk, forged) or that failed in this process, since start
        body["acks"] = {"rejected": sum(commander.rejected.values()), "failed": commander.failed}
    if problems:
        body["detail"] = "; ".join(problems)
    return JSONResponse(body, status_code=503 if problems else 200)


def _scraper(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    rt: Runtime = request.app.state.rt
    if cred is None or not hmac.compare_digest(cred.credentials.encode(), rt.settings.metrics_bearer().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the metrics token is needed",
                            headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics", dependencies=[Depends(_scraper)], response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, 401: {}})
def metrics_endpoint(svc: Svc) -> Response:
    """This process's metrics (Prometheus text format)."""
    for t in svc.tasks:
        metrics.TASK_UP.labels(t.name).set(1 if t.ok else 0)
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)


def ops_app(rt: Runtime, tasks: Sequence[Supervised]) -> FastAPI:
    """The four endpoints alone, for a process without the API (`--worker-only`)."""
    app = FastAPI(title="LockCase cloud: worker", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.rt = rt
    app.state.services = Services(rt, None, None, list(tasks))
    app.include_router(router)
    app.add_middleware(metrics.HttpMetrics)
    return app

