"""`python -m casecloud`: the API and the MQTT worker in one process (uvicorn).

--no-worker runs only the API (with its command sender), --worker-only only the worker, so either
can be scaled out on its own (docs/cloud.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

import uvicorn

from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.tasks import supervised

log = logging.getLogger("casecloud")


async def serve(rt: Runtime, *, api: bool, worker: bool) -> None:
    watch = supervised(rt, worker)
    tasks = [asyncio.create_task(t.run(), name=t.name) for t in watch]
    try:
        if api:
            # /healthz reports the worker too when it runs in this process.
            app = create_app(rt, Commander(rt), watch)
            config = uvicorn.Config(app, host=rt.settings.api_host, port=rt.settings.api_port,
                                    log_level=rt.settings.log_level.lower(), lifespan="on")
            await uvicorn.Server(config).serve()
        else:
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="casecloud", description="LockCase reference cloud service")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--no-worker", action="store_true", help="serve the HTTP API only")
    mode.add_argument("--worker-only", action="store_true", help="run the MQTT worker only")
    args = ap.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = build(settings)
    if settings.admin_token is None:
        settings.admin_bearer()  # generate it now, so the file exists before the first request
        # the path, never the token; it only creates the first HQ account (docs/accounts.md)
        log.info("bootstrap (admin) token: in %s", settings.data_dir / "admin_token")
    log.info("database: %s", rt.engine.url.render_as_string(hide_password=True))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(rt, api=not args.worker_only, worker=not args.no_worker))


if __name__ == "__main__":
    main()
