"""Telling a database outage from a failed batch, and waiting for the database to come back.

A batch that fails because of its messages is redone one message at a time (worker.py); a batch
that fails because the database is away must not be: every message would fail again, each with a
traceback, and be lost although the broker could have kept it. So an error that can mean "no
database" (SQLAlchemy's OperationalError, InterfaceError, or a connection it invalidated) is
checked with a fresh `SELECT 1`: only if that fails too is it an outage. The worker then holds its
batch unacknowledged and waits here, probing with backoff, logging once each way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

log = logging.getLogger("casecloud.worker")


class DatabaseUnavailable(Exception):
    """The database cannot be reached; `done` messages of the batch were decided before it went."""

    def __init__(self, done: int = 0) -> None:
        super().__init__("database unavailable")
        self.done = done


def reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def is_outage(engine: Engine, e: BaseException) -> bool:
    may_be = isinstance(e, OperationalError | InterfaceError) or (
        isinstance(e, DBAPIError) and e.connection_invalidated)
    return may_be and not reachable(engine)


async def wait_until_back(engine: Engine, held: Callable[[], int], max_wait_s: float = 5.0) -> float:
    """Probe until the database answers (backoff with jitter up to `max_wait_s`); log the outage
    once with the number of messages held, and once more when it is over. Returns its length."""
    start = time.monotonic()
    log.error("database unavailable (%d messages held)", held())
    async for attempt in AsyncRetrying(wait=wait_exponential_jitter(initial=0.1, max=max_wait_s),
                                       retry=retry_if_exception_type(ConnectionError), reraise=True):
        with attempt:
            if not await asyncio.to_thread(reachable, engine):
                raise ConnectionError("database unavailable")
    took = time.monotonic() - start
    log.warning("database back after %.1f s (%d messages held)", took, held())
    return took
