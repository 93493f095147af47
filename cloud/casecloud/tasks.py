"""The worker side's long-running tasks, supervised: one list for every process that runs them
(`python -m casecloud`, and the demo cloud behind `make sim`)."""

from __future__ import annotations

from casecloud.analytics.job import analytics_loop
from casecloud.jobs import gauge_loop, offline_loop, retention_loop
from casecloud.releases.jobs import rollout_loop
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised
from casecloud.worker import Worker


def supervised(rt: Runtime, worker: bool) -> list[Supervised]:
    """The worker's long-running tasks, each restarted after any failure (supervise.py)."""
    if not worker:
        return []
    w = Worker(rt)
    p = rt.policy
    return [Supervised("rollouts", lambda: rollout_loop(rt)),
            Supervised("worker", w.run, link=w.connected,
                       stalled=lambda: w.load.stalled(rt.settings.stall_s)),
            Supervised("retention", lambda: retention_loop(rt)),
            Supervised("offline", lambda: offline_loop(p.alerts, rt.sessions,
                                                       lambda: p.flush_alerts(rt.sessions, wait=False))),
            Supervised("gauges", lambda: gauge_loop(rt)),
            Supervised("analytics", lambda: analytics_loop(rt))]
