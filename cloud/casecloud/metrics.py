"""Every Prometheus metric of the cloud, defined once (prometheus-client), and the one-line hooks
the code that does the work calls.

One endpoint per process, not the library's multiprocess mode: the API and each worker are
separate programs, often on separate hosts, started and restarted on their own, and Prometheus
scrapes each as a target of its own (its `instance` label tells them apart; `sum` across them in
queries). Multiprocess mode is for one host's pre-forked children sharing a directory that must be
wiped between runs, and it drops what we want per process: the process collector (CPU seconds,
memory) and gauges set per process. So each process keeps the library's default registry and
serves it: the API process on its own port (`/metrics`), a `--worker-only` process on
`ops_host:ops_port` (api/ops.py), both behind the scrape token (`metrics_token`).

Fleet-wide gauges (cases connected and synced, open alerts) are read from the database by the
worker side's gauge job (jobs.py) every `metrics_every_s`, not at scrape time: a scrape never waits
on the database, and every worker reports the same figure (take `max` across instances).

Hooks are O(1) (a dict lookup and an add under the library's lock), called where the thing
happens: worker.py, batch.py, backpressure.py, alertdelivery.py, policy.py, supervise.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

# No `_created` sample beside every counter and histogram: a third of a scrape's lines, and
# Prometheus's rate() does without them.
disable_created_metrics()

# Latency buckets in seconds: the protocol's budget is a reply well under the case's 8 s wait;
# tap-to-open is ~15 ms here, a loaded worker's p99 50-100 ms.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 20, 32, 64, 128, 256)

REQUESTS = Counter("casecloud_requests", "Shopper requests decided, by kind (phone, otp, token, help, app) "
                   "and outcome (allow, challenge, deny, ok); reason: why a deny", ["kind", "outcome", "reason"])
MESSAGES = Counter("casecloud_messages", "Messages from cases taken by the worker, by topic kind "
                   "(req, evt, status, ack, presence)", ["kind"])
REJECTED = Counter("casecloud_rejected", "Messages from cases refused by the checks (bad_sig, replay, "
                   "expired, unknown_case...)", ["reason"])
SUPERSEDED = Counter("casecloud_hellos_superseded", "Greetings left unanswered because a newer one from the same "
                     "case came in the same batch (one answer syncs the case: it refuses the others)")
SHED = Counter("casecloud_shed", "Requests dropped unread because their case stopped waiting (expired) or "
               "would before a batch could be decided (no_time)", ["reason"])
LATE = Counter("casecloud_late", "Requests whose deadline passed while their batch was decided: journaled "
               "late, not answered")
BATCH_SIZE = Histogram("casecloud_batch_size", "Messages per batch the worker decided", buckets=_SIZES)
DECISION = Histogram("casecloud_decision_seconds", "A batch from the worker taking it to its replies handed "
                     "to the MQTT client (checks, decisions, one commit, signing): each of its messages waited "
                     "this long", buckets=_LATENCY)
FINISH = Histogram("casecloud_finish_seconds", "Replies that wait on something outside the database after "
                   "the commit (the text with a code, a help call's alert): their extra time", buckets=_LATENCY)
QUEUE = Gauge("casecloud_queue_depth", "Messages received by this worker and not yet taken into a batch "
              "(the rest waits in the broker)")
HELD = Gauge("casecloud_held_messages", "Messages held unacknowledged while the database is unreachable")
OUTAGES = Counter("casecloud_database_outages", "Database outages the worker waited through")
CASES = Gauge("casecloud_cases", "Registered cases, and those connected (online) and synced (their clock "
              "set: they take requests), fleet-wide", ["state"])
OPEN_ALERTS = Gauge("casecloud_open_alerts", "Unresolved alerts by kind, fleet-wide", ["kind"])
WEBHOOKS = Counter("casecloud_webhook_deliveries", "Alert deliveries to stores' webhooks, by outcome "
                   "(ok, failed)", ["outcome"])
WEBHOOK_TRIES = Counter("casecloud_webhook_attempts", "HTTP POSTs to stores' webhooks, retries included")
SMS = Counter("casecloud_sms", "One-time codes texted, by outcome (sent, failed)", ["outcome"])
LOYALTY_FAILURES = Counter("casecloud_loyalty_failures", "Loyalty lookups that failed (the retailer's "
                           "webhook down or answering nonsense): the shopper was told unavailable")
TASK_RESTARTS = Counter("casecloud_task_restarts", "Supervised tasks restarted after an exception", ["task"])
HTTP = Counter("casecloud_http_requests", "HTTP requests answered, by method, route (its template, "
               "e.g. /v1/admin/cases/{case_id}) and status code", ["method", "route", "status"])
HTTP_SECONDS = Histogram("casecloud_http_request_seconds", "HTTP requests from arrival to the last byte "
                         "of the answer, by route (a live stream's is its whole length)", ["route"],
                         buckets=_LATENCY)
TASK_UP = Gauge("casecloud_task_up", "1 while a supervised task runs (and has its broker link, if any)",
                ["task"])


def exposition() -> bytes:
    """The process's metrics in the text format (the default registry: ours, and the library's
    process and platform collectors)."""
    return generate_latest(REGISTRY)


# --- hooks -----------------------------------------------------------------------------------------

# Label children looked up once: `labels()` takes a lock and builds a key each call, several times
# the cost of the add itself on the worker's hot path.
_requests: dict[tuple[str, str, str], Counter] = {}
_messages: dict[str, Counter] = {}


def decided(kind: str, outcome: str, reason: str | None = None) -> None:
    key = (kind, outcome, reason or "")
    c = _requests.get(key)
    if c is None:
        c = _requests[key] = REQUESTS.labels(*key)
    c.inc()


def taken(topics: Iterable[str]) -> None:
    """A batch's messages, by topic kind (the last level: the worker subscribes to five)."""
    counts: dict[str, int] = {}
    for t in topics:
        k = t[t.rfind("/") + 1:]
        counts[k] = counts.get(k, 0) + 1
    for k, n in counts.items():
        c = _messages.get(k)
        if c is None:
            c = _messages[k] = MESSAGES.labels(k)
        c.inc(n)


def batch(n: int, seconds: float) -> None:
    BATCH_SIZE.observe(n)
    DECISION.observe(seconds)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpMetrics:
    """ASGI middleware: each HTTP request counted by method, route template and status, and timed.
    Labels from the route's template, never the path itself (ids would make a series each), and
    any other method is `other`: what a client sends cannot grow the number of series."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers if the app raised before starting its answer

        async def send_seen(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_seen)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP.labels(method if method in _METHODS else "other", route, str(status)).inc()
            HTTP_SECONDS.labels(route).observe(time.perf_counter() - t0)
