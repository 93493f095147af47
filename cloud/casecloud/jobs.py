"""The worker side's periodic jobs, each a loop that tasks.py supervises: retention, and the
offline-alert check (with the redelivery of alerts whose webhook failed). The work itself is
elsewhere (privacy.retention, Alerts.scan_offline and redeliver); here only when it runs, and
that a failed run is logged and the next one still comes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from casecloud import metrics
from casecloud.alerts import SEVERITY, Alerts
from casecloud.models import Alert, Case
from casecloud.privacy import retention
from casecloud.runtime import Runtime

# Each job logs under the name it had before it moved here (log filters and alerting rules).
_retention_log = logging.getLogger("casecloud.worker")
_offline_log = logging.getLogger("casecloud.alerts")


async def retention_loop(rt: Runtime) -> None:
    while True:
        try:
            with rt.sessions.begin() as s:
                n = retention(s, rt.now(), rt.settings.retention_days, rt.settings.event_retention_days,
                              rt.settings.otp_ttl_s)
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


async def gauge_loop(rt: Runtime) -> None:
    """The fleet's gauges (metrics.py) read from the database every `metrics_every_s`: a scrape
    never waits on the database. A failed read is logged and the gauges keep their last values."""
    while True:
        try:
            await asyncio.to_thread(read_gauges, rt.sessions)
        except Exception:
            _retention_log.exception("metrics gauges not read")
        await asyncio.sleep(rt.settings.metrics_every_s)


def read_gauges(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        total, online, synced = s.execute(select(
            func.count(), func.count().filter(Case.online.is_(True)), func.count().filter(Case.synced.is_(True))
        ).select_from(Case)).one()
        open_by_kind: dict[str, int] = {kind: n for kind, n in s.execute(
            select(Alert.kind, func.count()).where(Alert.state != "resolved").group_by(Alert.kind))}
    metrics.CASES.labels("registered").set(total)
    metrics.CASES.labels("online").set(online)
    metrics.CASES.labels("synced").set(synced)
    for kind in {*SEVERITY, *open_by_kind}:
        metrics.OPEN_ALERTS.labels(kind).set(open_by_kind.get(kind, 0))
