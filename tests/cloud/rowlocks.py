"""Another writer of a case's row while a worker's batch is open, as each database lets it happen.

On PostgreSQL a batch locks its cases' rows first (batch.py, `db.lock_in_order`): whoever else
writes one of them (another worker, the API taking a seq or bumping the desired state) waits for
the batch's commit. On SQLite a batch's reads lock nothing: the other writer commits at once and
the batch's compare-and-set finds the change. `meanwhile` runs such a write the way the test's
database lets it, for the tests of what a batch does about it (test_batch, test_desired).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from casecloud.runtime import Runtime

_WAITS = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
              "AND wait_event_type = 'Lock'")
_LIMIT_S = 60.0  # a hang guard, not a timing: the condition is met within milliseconds


def lock_waits(engine: Engine) -> int:
    """How many sessions of this PostgreSQL database wait on a lock now."""
    with engine.connect() as c:
        return int(c.execute(_WAITS).scalar_one())


def until_waiting(engine: Engine, done: Callable[[], bool]) -> bool:
    """Until a session of the database waits on a lock (True) or `done()` (False)."""
    end = time.monotonic() + _LIMIT_S
    while not done():
        if lock_waits(engine):
            return True
        if time.monotonic() > end:
            raise AssertionError("neither a lock wait nor the awaited step within a minute")
        time.sleep(0.005)
    return False


def meanwhile(rt: Runtime, write: Callable[[], Any]) -> Callable[[], None]:
    """Run `write` (another process's transaction on the cases' rows) while the caller holds a
    batch's transaction open. SQLite: at once. PostgreSQL: in a thread, which must be seen waiting
    on a row lock (AssertionError if it finishes without waiting). Returns `join`, to call once
    the batch has committed: it waits for the thread and raises what `write` raised."""
    if rt.engine.dialect.name == "sqlite":
        write()
        return lambda: None
    failed: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as e:  # handed to join
            failed.append(e)

    t = threading.Thread(target=run, name="meanwhile", daemon=True)
    t.start()
    if not until_waiting(rt.engine, lambda: not t.is_alive()):
        raise AssertionError(f"the other writer did not wait for the batch's row locks: {failed}")

    def join() -> None:
        t.join()
        if failed:
            raise failed[0]

    return join
