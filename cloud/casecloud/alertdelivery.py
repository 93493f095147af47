"""Delivery of committed alerts to the stores' webhooks, off the threads that decide.

Transactions that raise or re-raise an alert queue (store, alert id) once they have committed
(alerts.py, from any thread); `flush` hands the queue to the delivery threads. Deliveries retry
for up to notify_max_s, so they never run on the threads that decide the worker's batches: one
store at a time on its own thread (PerKeyPool), so a store's dead webhook delays only that
store's alerts, and an unreachable one leaves the rest of its queue to the periodic redelivery.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Collection
from concurrent import futures
from concurrent.futures import Future

from sqlalchemy.orm import Session, sessionmaker

from casecloud import metrics
from casecloud.adapters.notify import Notifier
from casecloud.alerts import message as alert_message
from casecloud.background import PerKeyPool
from casecloud.models import Alert, Store

log = logging.getLogger("casecloud.policy")  # the name operators' filters already know


class AlertDelivery:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._queued: deque[tuple[str, int]] = deque()
        self._pool = PerKeyPool("casecloud-alerts")
        self._delivering: set[Future[None]] = set()

    def queue(self, store_id: str, alert_id: int) -> None:
        """An alert a committed transaction raised: delivered at the next flush."""
        self._queued.append((store_id, alert_id))

    def busy(self) -> Collection[str]:
        """The stores with a delivery under way in this process (alerts.redeliver skips them)."""
        return self._pool.busy()

    @property
    def pending(self) -> bool:
        return bool(self._queued)

    def flush(self, sessions: sessionmaker[Session], *, wait: bool = True) -> None:
        """Hand every queued alert to its store's delivery thread (no HTTP inside a transaction);
        wait: until they are delivered or given up."""
        while True:
            try:
                store_id, alert_id = self._queued.popleft()
            except IndexError:
                break
            fut = self._pool.submit(store_id, functools.partial(self._deliver, sessions, store_id, alert_id))
            self._delivering.add(fut)
            fut.add_done_callback(self._delivering.discard)
        if wait:
            self.wait()

    def wait(self, timeout: float | None = None) -> None:
        """Until every delivery handed over so far is done (tests, tools, shutdown)."""
        futures.wait(list(self._delivering), timeout)

    def _deliver(self, sessions: sessionmaker[Session], store_id: str, alert_id: int) -> None:
        try:
            with sessions.begin() as s:
                a = s.get(Alert, alert_id)
                store = s.get(Store, a.store_id) if a else None
                if a is None or store is None:
                    return
                msg, url = alert_message(a), store.notify_url
            d = self.notifier.notify(url, msg)
            metrics.WEBHOOKS.labels("ok" if d.ok else "failed").inc()
            metrics.WEBHOOK_TRIES.inc(d.attempts)
            with sessions.begin() as s:
                a = s.get(Alert, alert_id, with_for_update=True)
                if a is not None:
                    a.delivered = d.ok
                    a.attempts += d.attempts
                    a.last_error = None if d.ok else (d.error or "")[:200]
            if d.unreachable:
                # the rest of the store's queue would wait a minute each for the same failure:
                # left undelivered, the periodic check (alerts.redeliver) sends them again
                n = self._pool.drop(store_id)
                if n:
                    log.warning("store %s webhook unreachable: %d alerts left for redelivery", store_id, n)
        except Exception:
            log.exception("alert %d: delivery failed", alert_id)
