"""A few daemon threads for work that may block long (a webhook retried for a minute) but must not
hold up the process's exit: concurrent.futures' pools join their threads, and everything still
queued, before the interpreter exits. What is cut short here is redone elsewhere (undelivered
alerts are POSTed again by the periodic check, alerts.py)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger("casecloud.background")


class DaemonPool:
    def __init__(self, threads: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = queue.SimpleQueue()
        self._threads, self._name = threads, name
        self._started = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        fut: Future[None] = Future()
        self._start()
        self._jobs.put((fn, fut))
        return fut

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for i in range(self._threads):
                threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fn()
            except BaseException as e:  # reported on the future; the thread serves on
                fut.set_exception(e)
            else:
                fut.set_result(None)
