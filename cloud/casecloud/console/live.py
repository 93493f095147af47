"""Live alarms: Server-Sent Events to every signed-in console page, scoped to the caller's stores.

Where the changes come from: one shared task per app polls the alerts table every POLL_S (250 ms)
and fans what changed out to the open streams. Not a notification from alerts.py after commit,
because the worker that raises alerts usually runs in another process (`--worker-only`, several
workers sharing the load) and acknowledgements come from any API process: the database is the
one place every change meets, on SQLite and PostgreSQL alike, without a message bus of its own.
The poll is cheap: it reads the unresolved alerts only (a handful; the partial index's rows),
compares them with the last read (new, count, state), and fetches by id the few that left the
set (resolved). It runs only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from casecloud.accounts.access import Principal, reauthenticate
from casecloud.console.web import AssociatePage, templates
from casecloud.models import Alert
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.console")

router = APIRouter(include_in_schema=False)

POLL_S = 0.25
KEEPALIVE_S = 15.0  # a comment line now and then: proxies drop silent connections
QUEUE = 200  # changes a slow stream may fall behind by before it is closed (the page reconnects)

_COLS = (Alert.id, Alert.store_id, Alert.case_id, Alert.kind, Alert.severity, Alert.state, Alert.detail,
         Alert.count, Alert.last_at, Alert.late, Alert.acked_by)


@dataclass(eq=False)  # each stream its own, kept in a set by identity
class _Watcher:
    stores: frozenset[str] | None  # None: every store (hq)
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE))


class AlertFeed:
    """One per app (app.state.console_feed): the poller and the streams it feeds."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.watchers: set[_Watcher] = set()
        self.task: asyncio.Task[None] | None = None
        self.seen: dict[int, tuple[Any, ...]] | None = None

    def _read(self) -> list[tuple[Any, ...]]:
        with self.rt.sessions() as s:
            return [tuple(r) for r in s.execute(select(*_COLS).where(Alert.state != "resolved"))]

    def _read_ids(self, ids: list[int]) -> list[tuple[Any, ...]]:
        with self.rt.sessions() as s:
            return [tuple(r) for r in s.execute(select(*_COLS).where(Alert.id.in_(ids)))]

    async def poll_once(self) -> list[dict[str, Any]]:
        rows = {r[0]: r for r in await asyncio.to_thread(self._read)}
        if self.seen is None:  # the first read is the baseline: the page rendered those already
            self.seen = rows
            return []
        changed = [r for i, r in rows.items() if self.seen.get(i) != r]
        gone = [i for i in self.seen if i not in rows]
        if gone:
            changed += await asyncio.to_thread(self._read_ids, gone)
        new = {i for i in rows if i not in self.seen}
        self.seen = rows
        return [dict(zip(("id", "store", "case", "kind", "severity", "state", "detail", "count", "last_at", "late",
                          "acked_by"), r, strict=True)) | {"new": r[0] in new} for r in changed]

    async def _run(self) -> None:
        while self.watchers:
            try:
                for change in await self.poll_once():
                    for w in list(self.watchers):
                        if w.stores is None or change["store"] in w.stores:
                            try:
                                w.queue.put_nowait(change)
                            except asyncio.QueueFull:
                                self.watchers.discard(w)
                                w.queue = asyncio.Queue(1)
                                w.queue.put_nowait(None)  # closes that stream; its page reconnects
            except Exception:  # noqa: BLE001 - a database hiccup: logged, the next poll tries again
                log.exception("live alerts: poll failed")
            await asyncio.sleep(POLL_S)
        self.task, self.seen = None, None

    def watch(self, stores: frozenset[str] | None) -> _Watcher:
        w = _Watcher(stores)
        self.watchers.add(w)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="console live alerts")
        return w

    def unwatch(self, w: _Watcher) -> None:
        self.watchers.discard(w)


def feed(request: Request) -> AlertFeed:
    app = request.app
    got: AlertFeed | None = getattr(app.state, "console_feed", None)
    if got is None:
        got = app.state.console_feed = AlertFeed(app.state.rt)
    return got


def _event(request: Request, p: Principal, change: dict[str, Any]) -> str:
    # The row as the page renders it, for this caller (their CSRF token in its forms)
    html = templates.get_template("_alert.html").render(a=change, p=p, request=request)
    return "event: alert\ndata: " + json.dumps(change | {"html": html}) + "\n\n"


@router.get("/console/live")
async def live(request: Request, p: AssociatePage) -> StreamingResponse:
    """text/event-stream: `alert` events (JSON: the alert's id, store, state..., and `html`, its
    row) for every alert of the caller's stores raised, repeated, acknowledged or resolved."""
    f = feed(request)
    w = f.watch(p.stores)
    loop = asyncio.get_running_loop()

    async def still(caller: Principal) -> Principal | None:
        # The stream outlives the request that opened it: a signed-out, expired or disabled caller,
        # or one moved to other stores, must not go on receiving this store's alarms.
        now = await asyncio.to_thread(reauthenticate, request)
        if now is None or now.user_id != caller.user_id or not now.at_least("associate"):
            return None
        w.stores = now.stores
        return now

    async def stream() -> AsyncIterator[str]:
        caller: Principal | None = p
        checked = loop.time()
        try:
            yield "retry: 1000\n: live\n\n"
            while True:
                try:
                    change = await asyncio.wait_for(w.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    change = False
                if loop.time() - checked >= KEEPALIVE_S:
                    checked = loop.time()
                    if (caller := await still(caller)) is None:
                        return
                if change is None:
                    return
                if change is False:
                    yield ": ping\n\n"
                    continue
                if w.stores is not None and change["store"] not in w.stores:
                    continue  # queued before the caller lost that store
                yield _event(request, caller, change)
        finally:
            f.unwatch(w)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def stop(request_app: Any) -> None:
    """At shutdown: close every stream, so the server need not wait for them."""
    f: AlertFeed | None = getattr(request_app.state, "console_feed", None)
    if f is None:
        return
    for w in list(f.watchers):
        with contextlib.suppress(asyncio.QueueFull):
            w.queue.put_nowait(None)
    f.watchers.clear()
