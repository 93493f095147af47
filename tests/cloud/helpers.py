"""Small helpers shared by the cloud tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.models import Case, SmsOutbox, Store
from casecloud.runtime import Runtime


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class Loop:
    """An asyncio loop in a thread, for the service's coroutines beside synchronous test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[Any] = []

    def start(self, coro: Any) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self.tasks.append(fut)
        return fut

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        time.sleep(0.1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)



def texted_code(rt: Runtime) -> str:
    with rt.sessions() as s:
        row = s.scalars(select(SmsOutbox).order_by(SmsOutbox.id.desc())).first()
        assert row is not None
        m = re.search(r"\b(\d{6})\b", row.body)
        assert m
        return m.group(1)


@contextlib.contextmanager
def ctx(rt: Runtime, case_id: str = "c1") -> Iterator[tuple[Session, Store, Case]]:
    """A transaction with the case and its store, for calling the policy directly."""
    with rt.sessions.begin() as s:
        case = s.get(Case, case_id)
        assert case is not None
        store = s.get(Store, case.store_id)
        assert store is not None
        yield s, store, case
