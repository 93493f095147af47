"""HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs), one router per audience:

- admin.py, admin_records.py: /v1/admin/..., stores, cases, staff credentials, members, events,
  alerts. An API token or a console session, each route with the least role it needs.
- auth.py: /v1/auth/login, /v1/auth/logout, /v1/me, and /v1/bootstrap/hq-user (the admin token's
  one use); accounts.py: /v1/users, /v1/tokens, /v1/audit (docs/accounts.md).
- app.py: /v1/app/unlock, the store app's unlock button (member token in the body).
- dev.py: /v1/dev/sms, the dev SMS outbox, only while the outbox backend is in use. hq only.
- analytics.py: /v1/admin/stores/{id}/analytics (and .csv) and /hours for a store's manager, the fleet and a
  rebuild for hq (docs/analytics.md).
- ops.py: /livez, /readyz, /healthz, /metrics (the operator's: docs/operations.md).

The store console's pages (casecloud.console) are installed on the same app, and /docs serves
Swagger UI from the pinned, locally served files (no CDN).

schemas.py holds the bodies, deps.py the guards and the bootstrap token, services.py what the
routes share (kept in app.state, so two apps in one process stay apart). Who may do what:
casecloud.accounts.access.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import Depends, FastAPI

from casecloud import __version__
from casecloud.api import accounts, admin, admin_records, analytics, auth, dev, ops, releases
from casecloud.api import app as app_api
from casecloud.api.deps import bounded_json, plain_url
from casecloud.api.services import Services
from casecloud.brokersync import BrokerSync
from casecloud.commands import Commander
from casecloud.console import install as install_console
from casecloud.console import running as console_running
from casecloud.logs import RequestIds
from casecloud.metrics import HttpMetrics
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised


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
            async with console_running(_app):
                yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="LockCase cloud", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Reference cloud for LockCase merchandise cases (docs/cloud.md).",
                  dependencies=[Depends(plain_url), Depends(bounded_json)])
    app.state.rt = rt
    app.state.services = Services(rt, commander, syncer,
                                  [t for t in (sender, follower, *watch) if t is not None])
    for router in (ops.router, auth.router, accounts.router, admin.router, admin_records.router, app_api.router,
                   dev.router):
        app.include_router(router)
    app.include_router(releases.router)  # over-the-air releases and rollouts (docs/ota.md)
    app.include_router(analytics.router)  # store analytics (docs/analytics.md)
    install_console(app)
    app.add_middleware(HttpMetrics)  # counted and timed by route (metrics.py)
    app.add_middleware(RequestIds)  # each request's id in its log lines and its answer (logs.py)
    return app
