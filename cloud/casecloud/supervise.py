"""Long-running tasks that cannot die silently: restarted after any exception, and reported.

A task that ended (the command sender after one bad ack raised RecursionError) used to leave the
process up and `/healthz` saying ok while app unlocks answered 503. `Supervised.run` runs the
task forever: after any exception it logs the traceback once, counts the restart and starts it
again after a backoff with jitter (tenacity), reset once the task had run well for `healthy_s`.
`health()` is what `/healthz` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from casecloud import metrics

log = logging.getLogger("casecloud.supervise")


class Stopped(Exception):
    """The task returned: it is meant to run until cancelled, so this is a failure too."""


class Supervised:
    def __init__(self, name: str, task: Callable[[], Coroutine[Any, Any, None]], *,
                 link: asyncio.Event | None = None, first_wait_s: float = 0.5, max_wait_s: float = 30.0,
                 healthy_s: float = 60.0, clock: Callable[[], float] = time.time,
                 stalled: Callable[[], str | None] | None = None) -> None:
        """link: set while the task's broker connection is up (reported, and down is unhealthy).
        stalled: why the task is hung though running (a thread that never returns), or None."""
        self.name = name
        self._task = task
        self.link = link
        self._wait = wait_exponential_jitter(initial=first_wait_s, max=max_wait_s)
        self._healthy_s = healthy_s
        self._clock = clock
        self.running = False
        self.since = clock()
        self.restarts = 0
        self.last_error: str | None = None
        self.supervising = False  # run() is looping
        self._stalled = stalled

    async def run(self) -> None:
        """Until cancelled."""
        self.supervising = True  # /livez: this loop is alive (the task may be in its backoff)
        try:
            while True:
                # A new backoff sequence each time the task failed after running well.
                async for attempt in AsyncRetrying(wait=self._wait, retry=retry_if_exception_type(Exception)):
                    with attempt:
                        await self._once()
        finally:
            self.supervising = False

    async def _once(self) -> None:
        start = time.monotonic()
        self._set(True)
        try:
            await self._task()
            raise Stopped(f"{self.name} returned")
        except asyncio.CancelledError:
            self._set(False)
            raise
        except Exception as e:
            self.restarts += 1
            self.last_error = f"{type(e).__name__}: {e}"[:300]
            self._set(False)
            log.exception("%s failed (restart %d)", self.name, self.restarts)
            metrics.TASK_RESTARTS.labels(self.name).inc()
            if time.monotonic() - start < self._healthy_s:
                raise  # tenacity waits, longer each time

    def _set(self, running: bool) -> None:
        if running != self.running:
            self.running, self.since = running, self._clock()

    @property
    def ok(self) -> bool:
        return self.running and (self.link is None or self.link.is_set())

    def dead(self) -> str | None:
        """Why this task makes the process not live (/livez: a restart of the process is what
        would help), or None. A task in its restart backoff is alive: its supervisor restarts it."""
        if not self.supervising:
            return f"{self.name}: supervisor ended"
        why = self._stalled() if self._stalled is not None else None
        return f"{self.name}: {why}" if why else None

    def problem(self) -> str | None:
        """Why this task makes the process unhealthy, or None."""
        if not self.running:
            return f"{self.name} down since {int(self.since)} ({self.last_error})"
        if self.link is not None and not self.link.is_set():
            return f"{self.name}: broker link down"
        return None

    def health(self) -> dict[str, Any]:
        return {"running": self.running, "since": int(self.since), "restarts": self.restarts,
                "last_error": self.last_error, "broker": None if self.link is None else self.link.is_set()}
