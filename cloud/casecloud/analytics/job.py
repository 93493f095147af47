"""The worker's analytics job: every minute, fold the new events and alert changes into the
counts (aggregate.fold). Supervised like the other periodic jobs (tasks.py): a failed run is logged
and the next one still comes; nothing is lost by a failed run, since its bookmark did not move."""

from __future__ import annotations

import asyncio
import logging
import time

from casecloud.analytics.aggregate import fold
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.analytics")

FOLD_EVERY_S = 60.0


def fold_once(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        r = fold(s, rt.now(), rt.settings.otp_ttl_s)
    if r.events:
        log.info("analytics: folded %d events into %d case-hours", r.events, r.hours)


async def analytics_loop(rt: Runtime, every: float = FOLD_EVERY_S) -> None:
    while True:
        started = time.monotonic()
        try:
            await asyncio.to_thread(fold_once, rt)
        except Exception:
            log.exception("analytics fold failed")
        await asyncio.sleep(max(every - (time.monotonic() - started), 1.0))
