"""A request's deadline, shedding by it, and the worker's load counters.

A case waits `req_wait_s` for the answer to a request (firmware `request_timeout_s`, 8 s) and then
shows "No answer"; an answer after that is useless, and an `allow` after it is harmful (the cloud
would record and rate-count an opening that never happened). So a request's deadline is the
earlier of its signed `exp` and the case's wait (counted from when it was signed: `exp - TTL` on
the synced clock, to the second), less `reply_margin_s` for the reply's trip. The worker drops a
request whose deadline has passed, or will pass before a batch can be decided, before doing any
work on it (`shed`); one whose deadline passes while its batch is decided is journaled `late`
instead of being decided (worker.py). Only requests: events, greetings, heartbeats and acks are
never shed (their senders repeat them until answered, and the broker keeps them meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from casecloud import codec, metrics

log = logging.getLogger("casecloud.worker")

_REQ = "/req"
T = TypeVar("T")


def deadline(topic: str, payload: bytes, wait_s: float, margin_s: float) -> float | None:
    """Epoch seconds after which a request's answer is no use to its case; None for anything that
    is not a request, or that the batch's checks will refuse anyway (not read unverified beyond
    the one field: a forged `exp` only gets its own message dropped, as its signature would)."""
    if not topic.endswith(_REQ):
        return None
    try:
        # codec.parse, as every reader of what a case sends: json.loads raised RecursionError on
        # 1,000 '[' here, and an exp of 10^300 OverflowError below, both out of the worker's loop.
        env = codec.parse(payload)
        body = codec.parse(env["p"]) if isinstance(env, dict) and isinstance(env.get("p"), str) else None
    except codec.Rejected:
        return None
    exp = body.get("exp") if isinstance(body, dict) else None
    if type(exp) is not int:
        return None
    return min(exp, exp - codec.TTL + wait_s) - margin_s


@dataclass
class Load:
    """What the worker did to keep up, for its logs (metrics.py counts the same): one per worker."""

    shed: Counter[str] = field(default_factory=Counter)  # requests dropped unread, by reason
    late: int = 0  # requests whose deadline passed while deciding them: journaled `late`
    held: int = 0  # messages held (not acknowledged to the broker) while the database is away
    outages: int = 0
    batch_s: float = 0.0  # recent time to decide a batch (moving average)
    per_msg_s: float = 0.0  # ... per message: a full batch takes longer than the average one
    # monotonic: when the batch now in the database thread went there (None: none is); a batch
    # still there minutes later is a hung thread (a query on a dead connection), which /livez reports
    deciding_since: float | None = None
    _reported: tuple[int, int] = (0, 0)
    _report_at: float = 0.0

    async def deciding(self, work: Awaitable[T]) -> T:
        """Await a batch's decision, marked as under way meanwhile."""
        self.deciding_since = time.monotonic()
        try:
            return await work
        finally:
            self.deciding_since = None

    def stalled(self, after_s: float) -> str | None:
        """Why the worker makes no progress, or None: a batch deciding for longer than `after_s`."""
        since = self.deciding_since
        if since is not None and (took := time.monotonic() - since) > after_s:
            return f"a batch has been deciding for {took:.0f} s"
        return None

    def timed(self, seconds: float, n: int) -> None:
        self.batch_s = seconds if not self.batch_s else 0.8 * self.batch_s + 0.2 * seconds
        each = seconds / max(n, 1)
        self.per_msg_s = each if not self.per_msg_s else 0.8 * self.per_msg_s + 0.2 * each

    def sift(self, deadlines: list[float | None], now: float) -> list[str | None]:
        """Per message: the reason to shed it, or None to decide it. A request is shed when its
        deadline has passed (`expired`) or comes before a batch could be decided (`no_time`)."""
        out: list[str | None] = []
        # What deciding this batch will take, at the recent pace: a request due before then would
        # be decided only to be journaled late (and cost its batch a redo).
        ahead = max(self.batch_s, self.per_msg_s * len(deadlines))
        for d in deadlines:
            why = None
            if d is not None:
                if now > d:
                    why = "expired"
                elif now + ahead > d:
                    why = "no_time"
            if why is not None:
                self.shed[why] += 1
                metrics.SHED.labels(why).inc()
            out.append(why)
        return out

    def report(self, every_s: float = 10.0) -> None:
        """One log line per `every_s` at most, and only when something was shed or late: under
        overload a line per request would add to the load."""
        now = time.monotonic()
        total = (sum(self.shed.values()), self.late)
        if total == self._reported or now < self._report_at:
            return
        shed, late = total[0] - self._reported[0], total[1] - self._reported[1]
        self._reported, self._report_at = total, now + every_s
        log.warning("overload: %d requests shed, %d late since the last report (in all: %s, late %d); "
                    "batch time %.0f ms", shed, late, ", ".join(f"{k} {v}" for k, v in sorted(self.shed.items())),
                    self.late, self.batch_s * 1000)
