"""`python -m casecloud`: the API and the MQTT worker in one process (uvicorn).

--no-worker runs only the API (with its command sender), --worker-only only the worker, so either
can be scaled out on its own (docs/cloud.md); a --worker-only process serves its liveness,
readiness and metrics on `ops_host:ops_port` when that is set (api/ops.py).

`python -m casecloud migrate`: the database migrations, and nothing else (an upgrade's first step).
`python -m casecloud after-restore`: after the database was restored from a backup, every case's
replay window is re-established by its next message and the cloud's outgoing seq moves past what
the cases may have seen (docs/operations.md, docs/protocol.md "Replay window").

Logs are JSON, one event a line, on stderr (logs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import uvicorn
from sqlalchemy.engine import make_url

from casecloud import channel, db, logs, restore
from casecloud.accounts import audit
from casecloud.api import create_app
from casecloud.api.ops import ops_app
from casecloud.commands import Commander
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.tasks import supervised

log = logging.getLogger("casecloud")


async def serve(rt: Runtime, *, api: bool, worker: bool) -> None:
    watch = supervised(rt, worker)
    tasks = [asyncio.create_task(t.run(), name=t.name) for t in watch]
    st = rt.settings
    try:
        if api:
            # /healthz reports the worker too when it runs in this process.
            app = create_app(rt, Commander(rt), watch)
            await _uvicorn(app, st.api_host, st.api_port, st.log_level)
        elif st.ops_port is not None:
            await _uvicorn(ops_app(rt, watch), st.ops_host, st.ops_port, st.log_level)
        else:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def _uvicorn(app: object, host: str, port: int, level: str) -> None:
    # log_config=None: uvicorn's lines go through the root logger, JSON like the rest (logs.py)
    config = uvicorn.Config(app, host=host, port=port, log_level=level.lower(), lifespan="on",  # type: ignore[arg-type]
                            log_config=None)
    await uvicorn.Server(config).serve()


def after_restore(settings: Settings) -> int:
    """Every case's seqs and desired state set right after a restore (restore.py), audited;
    returns how many cases."""
    rt = build(settings)
    try:
        with rt.sessions.begin() as s:
            n, managed = restore.after_restore(s, rt.now())
            audit.record(s, audit.Actor("cli"), "fleet.resync", rt.now(),
                         detail={"cases": n, "desired_moved": managed, "why": "restore"})
    finally:
        rt.engine.dispose()
    log.info("after restore: %d cases resynchronized (their next message re-establishes the replay window; "
             "the cloud's outgoing seq moved %d ahead); %d cases will be sent the restored staff set and config",
             n, channel.RESYNC_TX_JUMP, managed)
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="casecloud", description="LockCase reference cloud service")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--no-worker", action="store_true", help="serve the HTTP API only")
    mode.add_argument("--worker-only", action="store_true", help="run the MQTT worker only")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("after-restore", help="after restoring the database from a backup: resynchronize every "
                   "case's seqs (docs/operations.md)")
    sub.add_parser("migrate", help="apply the database migrations and exit (an upgrade's first step: "
                   "docs/operations.md)")
    args = ap.parse_args(argv)
    settings = Settings()
    logs.setup(settings.log_level)
    if args.command == "after-restore":
        after_restore(settings)
        return
    if args.command == "migrate":
        settings.prepare()
        db.migrate(settings.db_url)
        log.info("database migrated to the head: %s", make_url(settings.db_url).render_as_string(hide_password=True))
        return
    rt = build(settings)
    if settings.admin_token is None:
        settings.admin_bearer()  # generate it now, so the file exists before the first request
        # the path, never the token; it only creates the first HQ account (docs/accounts.md)
        log.info("bootstrap (admin) token: in %s", settings.data_dir / "admin_token")
    if settings.metrics_token is None:
        settings.metrics_bearer()
        log.info("metrics scrape token: in %s", settings.data_dir / "metrics_token")
    log.info("database: %s", rt.engine.url.render_as_string(hide_password=True))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(rt, api=not args.worker_only, worker=not args.no_worker))


if __name__ == "__main__":
    main()
