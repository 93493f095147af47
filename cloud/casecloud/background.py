"""A few daemon threads for work that may block long (a webhook retried for a minute) but must not
hold up the process's exit: concurrent.futures' pools join their threads, and everything still
queued, before the interpreter exits. What is cut short here is redone elsewhere (undelivered
alerts are POSTed again by the periodic check, alerts.py)."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
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
            _run_job(*self._jobs.get())


class PerKeyPool:
    """Jobs run one at a time per key, in the order given, each key on a daemon thread of its own
    (started for its first job, ended once its queue is empty). A key whose jobs block long (one
    store's webhook hanging) holds up only its own: another key's job never waits behind it. The
    threads are as many as the keys with work, and they mostly wait on sockets. drop(key): the
    key's waiting jobs are cancelled."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        # a key is here while its thread serves it (its running job is no longer in the deque)
        self._queues: dict[str, deque[tuple[Callable[[], None], Future[None]]]] = {}

    def submit(self, key: str, fn: Callable[[], None]) -> Future[None]:
        with self._lock:
            q = self._queues.get(key)
            fut: Future[None] = Future()
            start = q is None
            if q is None:
                q = self._queues[key] = deque()
            q.append((fn, fut))
            if start:
                try:
                    threading.Thread(target=self._run, args=(key,), name=f"{self._name}-{key}", daemon=True).start()
                except BaseException:
                    del self._queues[key]
                    raise
        return fut

    def busy(self) -> frozenset[str]:
        """The keys with a job running or waiting."""
        with self._lock:
            return frozenset(self._queues)

    def drop(self, key: str) -> int:
        """Cancel the key's waiting jobs (not the one running): how many."""
        with self._lock:
            q = self._queues.get(key)
            jobs = list(q) if q else []
            if q:
                q.clear()
        for _, f in jobs:
            # cancelled, then told so: futures.wait counts a cancelled future done only after this
            if f.cancel():
                f.set_running_or_notify_cancel()
        return len(jobs)

    def _run(self, key: str) -> None:
        while True:
            with self._lock:
                q = self._queues[key]
                if not q:
                    del self._queues[key]
                    return
                job = q.popleft()
            _run_job(*job)


def _run_job(fn: Callable[[], None], fut: Future[None]) -> None:
    if not fut.set_running_or_notify_cancel():
        return  # cancelled while it waited
    try:
        fn()
    except BaseException as e:  # reported on the future; the thread serves on
        fut.set_exception(e)
    else:
        fut.set_result(None)
