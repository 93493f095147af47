"""The worker side's periodic jobs, each a loop that tasks.py supervises: retention, and the
offline-alert check (with the redelivery of alerts whose webhook failed). The work itself is
elsewhere (privacy.retention, Alerts.scan_offline and redeliver); here only when it runs, and
that a failed run is logged and the next one still comes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from casecloud.alerts import Alerts
from casecloud.privacy import retention
from casecloud.runtime import Runtime

# Each job logs under the name it had before it moved here (log filters and alerting rules).
_retention_log = logging.getLogger("casecloud.worker")
_offline_log = logging.getLogger("casecloud.alerts")


async def retention_loop(rt: Runtime) -> None:
    while True:
        try:
            with rt.sessions.begin() as s:
                n = retention(s, rt.now(), rt.settings.retention_days)
            if n:
                _retention_log.info("retention: stripped member references from %d events", n)
        except Exception:
            _retention_log.exception("retention run failed")
        await asyncio.sleep(rt.settings.retention_every_s)


async def offline_loop(alerts: Alerts, sessions: sessionmaker[Session], flush: Callable[[], object]) -> None:
    """Supervised: a failed scan is logged and the next one runs on time."""
    every = alerts.settings.offline_check_every_s
    while True:
        started = time.monotonic()
        try:
            await asyncio.to_thread(_scan, alerts, sessions)
            flush()
        except Exception:
            _offline_log.exception("offline check failed")
        await asyncio.sleep(max(every - (time.monotonic() - started), 1.0))


def _scan(alerts: Alerts, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        alerts.scan_offline(s)
    with sessions.begin() as s:
        alerts.redeliver(s)
