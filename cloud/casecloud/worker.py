"""The MQTT worker: receives what cases send, has it decided in batches (batch.py), publishes the
signed answers and acknowledges each message to the broker once it is decided.

`Worker` takes whatever the broker has delivered (at least one message, at most `MAX_BATCH`),
sheds what is past its deadline (backpressure.py), and hands the rest to `Handler.decide` in a
thread. Through a database outage it holds the batch, unacknowledged, until the database is back
(outage.py). The periodic jobs beside it are in jobs.py, the list of what runs in tasks.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

from casecloud import codec, metrics
from casecloud.backpressure import Load
from casecloud.batch import Decided, Handler, Out, PartlyDecided
from casecloud.mqtt import client as mqtt_client
from casecloud.mqtt import payload_bytes
from casecloud.outage import DatabaseUnavailable, wait_until_back
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.worker")

SUBSCRIBED = (*codec.UP_KINDS, codec.PRESENCE)
MAX_BATCH = 256  # messages per transaction


class Worker:
    def __init__(self, rt: Runtime, handler: Handler | None = None) -> None:
        self.rt = rt
        self.handler = handler or Handler(rt)
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._syncing: asyncio.Task[None] | None = None
        self._sync_again = False

    def subscriptions(self) -> list[str]:
        st = self.rt.settings
        return [f"{st.share_prefix}{st.topic_prefix}/+/+/{k}" for k in SUBSCRIBED]

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff."""
        backoff = 1.0
        try:
            while True:
                try:
                    # A persistent session: the broker keeps what cases sent while we were away.
                    async with mqtt_client(self.rt.settings, "worker", clean_session=False,
                                           manual_ack=True) as client:
                        for sub in self.subscriptions():
                            await client.subscribe(sub, qos=1)
                        self.connected.set()
                        backoff = 1.0
                        log.info("worker subscribed on %s:%s", self.rt.settings.mqtt_host,
                                 self.rt.settings.mqtt_port)
                        await self._serve(client)
                except aiomqtt.MqttError as e:
                    self.connected.clear()
                    log.warning("worker: broker connection lost (%s); retrying in %.0fs", e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.connected.clear()  # ended by any error: /healthz must not show the old link
            for t in list(self._tasks):
                t.cancel()

    @property
    def load(self) -> Load:
        return self.handler.load

    async def _serve(self, client: aiomqtt.Client) -> None:
        # Messages are acknowledged to the broker once decided (committed) or shed, never on
        # receipt: the broker keeps the rest (it sends a client only so many unacknowledged ones,
        # Mosquitto's max_inflight_messages), so the worker's memory stays bounded under any load
        # and a batch held through a database outage, or lost in a crash, is delivered again.
        # (aiomqtt's max_queued_incoming_messages would bound it too, by discarding messages.)
        messages = client.messages
        queue = client._queue  # what aiomqtt's iterator reads from
        while True:
            # Whatever has arrived makes the batch: one message when idle (no added latency), more
            # under load, while the previous batch was being decided. The iterator waits for the
            # first (or the connection's end); those already queued are taken as they are: the
            # iterator costs a task and an asyncio.wait per message, a sixth of the loop's work.
            batch = [await anext(messages)]
            while len(batch) < MAX_BATCH and queue.qsize():
                batch.append(queue.get_nowait())
            while batch:
                batch = await self._take(client, batch, lambda: len(messages))

    async def _take(self, client: aiomqtt.Client, batch: list[aiomqtt.Message], queued: Callable[[], int]
                    ) -> list[aiomqtt.Message]:
        """Shed what is past its deadline, decide the rest and answer; returns what is still held
        (the database went away: after it is back, the held messages are tried again)."""
        self._linked(client)
        items = [(str(m.topic), payload_bytes(m.payload)) for m in batch]
        metrics.taken(t for t, _ in items)
        metrics.QUEUE.set(queued())
        dl = self.handler.deadlines(items)
        shed = self.load.sift(dl, self.rt.clock())
        self._ack(client, [m for m, why in zip(batch, shed, strict=True) if why is not None])
        keep = [i for i, why in enumerate(shed) if why is None]
        batch = [batch[i] for i in keep]
        self.load.report()
        if not batch:
            return []
        t0 = time.monotonic()
        try:
            # Always in a thread, even a lone request: deciding on the loop saved a lone tap about
            # 1 ms, but a decision waiting on a lock (another worker's batch holding the case's
            # row, SQLite's busy_timeout, a stalled PostgreSQL connection) then froze the loop, and
            # a few keepalives of it dropped the broker link and lost the answer (review, 2026-12-02).
            d = await self.load.deciding(asyncio.to_thread(self.handler.decide, [items[i] for i in keep]))
        except DatabaseUnavailable as e:
            if isinstance(e, PartlyDecided):
                self._answer(client, batch[:e.done], e.decided)
            held = batch[e.done:]
            self.load.outages += 1
            self.load.held = len(held) + queued()
            metrics.OUTAGES.inc()
            metrics.HELD.set(self.load.held)
            await wait_until_back(self.rt.engine, lambda: len(held) + queued())
            self.load.held = 0
            metrics.HELD.set(0)
            return held  # tried again by the next _take, only if the broker link survived the wait
        self.load.timed(time.monotonic() - t0, len(batch))
        self._answer(client, batch, d)
        metrics.batch(len(batch), time.monotonic() - t0)
        return []

    @staticmethod
    def _linked(client: aiomqtt.Client) -> None:
        """Raises MqttError (run() reconnects) if the broker connection is gone: the replies of a
        batch decided now could not be delivered, and the broker, which was never sent its acks,
        delivers it again to the next connection, where what was committed would be refused as
        replays (an `allow` journaled for a tap that showed "No answer"). So nothing is decided."""
        if not client._client.is_connected():
            gone = client._disconnected  # its exception retrieved here (asyncio would log it unread)
            raise aiomqtt.MqttError("broker connection lost: the batch is left to the broker to deliver again"
                                    ) from (gone.exception() if gone.done() else None)

    def _answer(self, client: aiomqtt.Client, batch: list[aiomqtt.Message], d: Decided) -> None:
        self._publish(client, d.ready)
        self._ack(client, batch)
        if not d.synced:
            self._sync_soon()
        if d.pending:
            self._spawn(self._finish(client, d))

    def _sync_soon(self) -> None:
        """The WAL synced once the answers are out (durability.py): one fsync at a time, in a thread,
        covering every commit made before it began; asked for meanwhile, it runs once more."""
        self._sync_again = True
        if self._syncing is None or self._syncing.done():
            self._syncing = self._spawn(self._sync())

    async def _sync(self) -> None:
        wal = self.rt.wal
        while self._sync_again and wal is not None:
            self._sync_again = False
            try:
                await asyncio.to_thread(wal.sync)
            except OSError as e:  # the next batch's sync tries again; the commits are in the OS's cache
                log.error("worker: the database's WAL could not be synced: %s", e)

    @staticmethod
    def _ack(client: aiomqtt.Client, msgs: list[aiomqtt.Message]) -> None:
        paho = client._client  # aiomqtt 2.5 has no manual ack of its own; paho's (manual_ack_set)
        for m in msgs:
            if m.qos:
                paho.ack(m.mid, m.qos)

    async def _finish(self, client: aiomqtt.Client, d: Decided) -> None:
        with metrics.FINISH.time():
            self._publish(client, await asyncio.to_thread(d.finish))

    @staticmethod
    def _publish(client: aiomqtt.Client, outs: list[list[Out]]) -> None:
        # Handed to paho in order, at QoS 0 (docs/protocol.md): a QoS 1 PUBACK guarded nothing
        # here, since paho's unacknowledged messages die with its connection (aiomqtt makes a new
        # client for the next) and a case's clean session drops what the broker had not delivered
        # when it reconnects, while reading each PUBACK was a fifth of the event loop's work.
        # Not aiomqtt's publish: a task, an event and a scan of every pending call per reply. A
        # reply lost with a connection is asked for again by its case, as before.
        paho = client._client
        if not any(outs):
            return
        # Written at once (_write_now), so publish() must not have aiomqtt watch the socket for
        # writing: aiomqtt adds that watch a loop turn later (call_soon_threadsafe), after the
        # write has emptied paho's queue and paho has "removed" the watch not yet added, and the
        # watch then stayed, calling loop_write hundreds of thousands of times a second until
        # something else was written (review, 2026-12-02). Marked as watched meanwhile, paho asks
        # for no watch; loop_write asks for one only if it leaves something unwritten. When a
        # watch is already there or on its way (acks not yet written), the queue is left to it.
        own = not paho._registered_write
        if own:
            paho._registered_write = True
        try:
            for per_msg in outs:
                for o in per_msg:
                    rc = paho.publish(o.topic, o.payload, qos=0).rc
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        log.warning("worker: reply not published: %s", mqtt.error_string(rc))
        finally:
            if own:
                paho._registered_write = False
                Worker._write_now(client)

    @staticmethod
    def _write_now(client: aiomqtt.Client) -> None:
        """Writes what paho has queued, now, not two more turns of the loop later (aiomqtt's watch
        for writing, then select() seeing the socket writable): ~0.1-0.3 ms a reply of a lone tap.
        This is the loop's thread, where aiomqtt's own writer calls the same, and fails the same way."""
        try:
            client._client.loop_write()
        except Exception as exc:  # the connection broke: the client ends, run() reconnects
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # cancelled with the worker
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker: %s failed: %s", task.get_name(), task.exception())
