"""The MQTT worker: verifies what cases send, decides, answers signed, stores events.

Messages are handled in batches. `Worker` takes whatever the broker has delivered (at least one
message, at most `MAX_BATCH`) and hands it to `Handler.decide`, which checks and decides every
message of the batch in ONE database transaction:

1. read the batch's cases (keys, replay windows) and stores in one query;
2. check each message in order (docs/protocol.md), sliding each case's window in memory, and
   decide it (policy), which adds rows to the transaction; rate counters are summed once per key
   and written with one upsert (policy.py), case events with one INSERT ... ON CONFLICT DO NOTHING;
3. per case, one UPDATE moves the stored window by compare-and-set and reserves the seqs of the
   replies; if another worker moved a window first, the whole batch is rolled back and redone;
4. commit (one fsync), then sign the replies with the reserved seqs and publish them.

Nothing is published before the commit, so whatever a case is told (allowed, events stored) is
on disk; a crash before the commit loses the batch's decisions and nothing else. Replies that must
wait for something outside the database (the text with a code, the staff notified of a help call)
are finished after the commit (`Decided.finish`) without holding up the rest of the batch.

`Handler.handle` / `handle_batch` are the synchronous forms (tests, tools).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import aiomqtt
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from casecloud import channel, codec, db, desired, keyring, status
from casecloud.backpressure import Load, deadline
from casecloud.models import Case, Event, Store
from casecloud.mqtt import client as mqtt_client
from casecloud.mqtt import payload_bytes
from casecloud.outage import DatabaseUnavailable, is_outage, wait_until_back
from casecloud.policy import Reply, deny
from casecloud.privacy import retention, scrub
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.worker")

SUBSCRIBED = (*codec.UP_KINDS, codec.PRESENCE)
MAX_BATCH = 256  # messages per transaction
_INFLIGHT = 4 * MAX_BATCH  # replies published and awaiting the broker's PUBACK
_ATTEMPTS = 10  # a batch redone this often after losing a window race goes one by one
_BEAT_FIELDS = ("up", "door", "lock", "heap", "rssi", "fw")
_EVENT_ID_MAX = 40
_EVENTS = cast(Table, Event.__table__)


@dataclass(frozen=True)
class Out:
    topic: str
    payload: bytes


@dataclass
class _Later:
    """A request whose reply waits for a side effect after the commit (a text, a staff alert)."""

    index: int
    case_id: str
    req: dict[str, Any]
    reply: Reply


@dataclass
class _Window:
    """One case's replay window while a batch is checked, and the replies the batch owes it."""

    case: Case
    key: bytes
    seen: tuple[int, int]
    rx: int
    mask: int
    accepted: bool = False
    replies: int = 0


@dataclass
class Decided:
    """A committed batch: per message (in order), the replies to publish now; and what is finished
    after the commit (`finish`, which may block on a carrier or a webhook)."""

    handler: Handler
    ready: list[list[Out]]
    later: list[_Later] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return bool(self.later) or self.handler.rt.policy.alerts_pending

    def finish(self) -> list[list[Out]]:
        """Texts codes, delivers staff alerts, then signs the replies that waited for them.
        Returns them per message, like `ready`. Never raises."""
        h = self.handler
        rt = h.rt
        outs: list[list[Out]] = [[] for _ in self.ready]
        for w in self.later:
            try:
                r = rt.policy.after_commit(rt.sessions, w.reply)
                log.info("case %s %s -> %s %s", w.case_id, w.req["t"], r.t, r.why or "")
                outs[w.index].append(h.sign(w.case_id, "rep", {"t": r.t, "re": w.req["id"], **r.fields}))
            except Exception:
                log.exception("failed to finish a request of case %s", w.case_id)
        try:
            rt.policy.flush_alerts(rt.sessions, wait=False)  # on the delivery threads, retried there
        except Exception:
            log.exception("failed to deliver alerts")
        return outs


class _LostRace(Exception):
    pass


class _Late(Exception):
    """Requests of the batch whose deadline passed before it could commit: redo it without them."""

    def __init__(self, late: set[int]) -> None:
        super().__init__(f"{len(late)} late")
        self.late = late


class PartlyDecided(DatabaseUnavailable):
    """The database went away while a batch was redone one by one: `decided` holds the messages
    committed before it (a prefix of the batch), to answer and acknowledge; the rest is held."""

    def __init__(self, decided: Decided) -> None:
        super().__init__(len(decided.ready))
        self.decided = decided


class Handler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rejected: Counter[str] = Counter()
        self.load = Load()

    # --- entry points ------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Out]:
        """One message, side effects included. Never raises for anything a case can send."""
        return self.handle_batch([(topic, payload)])[0]

    def handle_batch(self, msgs: Sequence[tuple[str, bytes]]) -> list[list[Out]]:
        """A batch, side effects included: the replies per message, in order."""
        d = self.decide(msgs)
        later = d.finish() if d.pending else [[] for _ in msgs]
        self.rt.policy.wait_alerts()
        return [a + b for a, b in zip(d.ready, later, strict=True)]

    def deadlines(self, msgs: Sequence[tuple[str, bytes]]) -> list[float | None]:
        st = self.rt.settings
        out: list[float | None] = []
        for t, p in msgs:
            try:
                out.append(deadline(t, p, st.req_wait_s, st.reply_margin_s))
            except Exception:  # outside decide()'s guard: one message must cost only itself here too
                log.exception("no deadline for a message on %s: it is decided, not shed", t)
                out.append(None)
        return out

    def decide(self, msgs: Sequence[tuple[str, bytes]], deadlines: Sequence[float | None] | None = None
               ) -> Decided:
        """Check and decide a batch in one transaction (module docstring). Never raises for
        anything a case (or an impostor) can send: a batch that fails is redone one message at a
        time, so one bad message costs only its own answer. Raises DatabaseUnavailable when the
        database is away (outage.py): then no message is to blame, and none is answered.
        deadlines: per message, when its case stops waiting (backpressure.py); a request still
        undecided then is journaled `late` instead."""
        dl = list(deadlines) if deadlines is not None else self.deadlines(msgs)
        try:
            return self._batch(msgs, dl)
        except DatabaseUnavailable:
            raise
        except Exception as e:
            if is_outage(self.rt.engine, e):
                raise DatabaseUnavailable() from e
            if len(msgs) == 1:
                log.exception("failed on a message on %s", msgs[0][0])
                return Decided(self, [[]])
            log.exception("a batch of %d failed; handling its messages one by one", len(msgs))
            return self._one_by_one(msgs, dl)

    def _one_by_one(self, msgs: Sequence[tuple[str, bytes]], dl: list[float | None]) -> Decided:
        out = Decided(self, [])
        for i, m in enumerate(msgs):
            try:
                d = self.decide([m], dl[i:i + 1])
            except DatabaseUnavailable as e:
                raise PartlyDecided(out) from e
            out.ready.append(d.ready[0])
            out.later += [replace(w, index=i) for w in d.later]
        return out

    # --- the batch ---------------------------------------------------------------------------

    def _batch(self, msgs: Sequence[tuple[str, bytes]], dl: list[float | None]) -> Decided:
        # Size, JSON and topic need no database: once, whatever the retries.
        pre: list[codec.Envelope | codec.Topic | str] = []
        for topic, payload in msgs:
            try:
                if topic.endswith("/" + codec.PRESENCE):
                    pre.append(codec.parse_topic(topic))
                else:
                    pre.append(codec.unwrap(topic, payload))
            except codec.Rejected as e:
                pre.append(e.reason)
        late: set[int] = set()
        ahead = 0.0
        for _ in range(_ATTEMPTS):
            t0 = time.monotonic()
            try:
                return self._attempt(msgs, pre, dl, late, ahead)
            except _LostRace:
                continue
            except _Late as e:  # the redo journals them late: no decision, no rate count
                late |= e.late
                # and those the redo itself would make late, or it could be redone again and again
                ahead = time.monotonic() - t0
        if len(msgs) > 1:
            return self._one_by_one(msgs, dl)
        self.rejected["replay"] += 1  # lost the race every time: treat as not accepted
        log.warning("rejected replay on %s (window contended)", msgs[0][0])
        return Decided(self, [[]])

    def _attempt(self, msgs: Sequence[tuple[str, bytes]], pre: list[codec.Envelope | codec.Topic | str],
                 dl: list[float | None], late: set[int], ahead: float = 0.0) -> Decided:
        rt = self.rt
        now = rt.now()
        decided: list[int] = []  # requests decided (not late): checked against their deadline at the end
        late_now = 0
        d = Decided(self, [[] for _ in msgs])
        rejected: list[tuple[str, str]] = []
        notes: list[tuple[Any, ...]] = []
        replies: list[tuple[int, str, str, dict[str, Any]]] = []
        events: list[dict[str, Any]] = []
        ids = {p.case if isinstance(p, codec.Topic) else p.topic.case for p in pre if not isinstance(p, str)}
        with rt.sessions() as s:
            cases: dict[str, Case] = {}
            stores: dict[str, Store] = {}
            if ids:
                for case, store in s.execute(select(Case, Store).join(Store, Store.id == Case.store_id)
                                             .where(Case.id.in_(ids))):
                    cases[case.id], stores[store.id] = case, store
            req_cases = [cases[p.topic.case] for p in pre
                         if isinstance(p, codec.Envelope) and p.topic.kind == "req" and p.topic.case in cases]
            if req_cases:
                rt.policy.prefetch(s, (c.store_id for c in req_cases), (c.id for c in req_cases))
            windows: dict[str, _Window] = {}
            for i, ((topic, payload), p) in enumerate(zip(msgs, pre, strict=True)):
                if isinstance(p, str):
                    rejected.append((p, topic))
                    continue
                if isinstance(p, codec.Topic):  # presence: a hint, not signed
                    case = cases.get(p.case)
                    if case is not None and case.store_id == p.store:
                        case.online = payload.strip() == b"online"
                        if not case.online:
                            case.synced = False  # gone: its next connection greets anew
                        else:
                            rt.policy.alerts.resolve(s, case.store_id, case.id, ("offline",), now, "case: online")
                        case.last_seen = now
                    continue
                case = cases.get(p.topic.case)
                if case is None or case.store_id != p.topic.store:
                    rejected.append(("unknown_case", topic))
                    continue
                w = windows.get(case.id)
                if w is None:
                    w = windows[case.id] = _Window(case, keyring.case_key(s, case), (case.rx_seq, case.rx_mask),
                                                   case.rx_seq, case.rx_mask)
                try:
                    body, w.rx, w.mask = codec.check_env(w.key, topic, p, now, w.rx, w.mask)
                except codec.Rejected as e:
                    rejected.append((e.reason, topic))
                    continue
                w.accepted = True
                if p.topic.kind == "req" and (due := dl[i]) is not None:
                    over = rt.clock() - due
                    if i in late or over + ahead > 0:  # its case has given up: no decision, no count
                        rt.policy.late(s, case, body["t"], max(int(over * 1000), 0))
                        notes.append(("case %s %s -> late by %d ms", case.id, body["t"], int(over * 1000)))
                        late_now += 1
                        continue
                    decided.append(i)
                self._dispatch(s, d, i, stores[case.store_id], w, p.topic.kind, body, now, replies, events, notes)
            db.insert_ignore(s, _EVENTS, events, ("case_id", "event_id"))
            # one order for every worker: no deadlock between them
            # the version read (or bumped to, desired.on_refused): a change since redoes the batch
            moves = [channel.Advance(cid, w.seen, (w.rx, w.mask), w.case.tx_seq, w.replies, w.case.desired_v)
                     for cid, w in sorted(windows.items()) if w.accepted]
            if not channel.advance(s, moves, now):
                s.rollback()
                raise _LostRace()
            # The last moment before the decisions become final: an allow must not be committed
            # (nor counted against the limits) for a case that has stopped waiting for it. The
            # commit's own work (journal insert, rate upsert, alerts, which may wait on another
            # worker's lock, the flush) is done first, so only the fsync comes after this check.
            db.prepare_commit(s)
            t = rt.clock()
            overdue = {i for i in decided if (due := dl[i]) is not None and t > due}
            if overdue:
                s.rollback()
                raise _Late(overdue)
            s.commit()
        self.load.late += late_now
        next_seq = {m.case_id: m.tx + 1 for m in moves}
        # Committed: from here on nothing may send the batch back (it would be refused as replays).
        for reason, topic in rejected:
            self.rejected[reason] += 1
            log.warning("rejected %s on %s", reason, topic)  # never the payload: it may hold a number
        for note in notes:
            log.info(*note)
        st = rt.settings
        for i, cid, kind, body in replies:
            w = windows[cid]
            seq, next_seq[cid] = next_seq[cid], next_seq[cid] + 1  # a failed reply still uses its seq
            try:
                topic, payload = channel.sign(w.key, w.case.store_id, cid, kind, body, seq, now, st.msg_ttl_s,
                                              st.topic_prefix)
            except Exception:  # e.g. too large: this reply is lost, not the others
                log.exception("case %s: %s reply not signed", cid, kind)
                continue
            d.ready[i].append(Out(topic, payload))
        return d

    def _dispatch(self, s: Session, d: Decided, i: int, store: Store, w: _Window, kind: str, body: dict[str, Any],
                  now: int, replies: list[tuple[int, str, str, dict[str, Any]]], events: list[dict[str, Any]],
                  notes: list[tuple[Any, ...]]) -> None:
        case = w.case
        t = body["t"]
        if kind == "req":
            r = self._decide(s, store, case, body)
            if r.text is not None or t == "help":  # answered once the code is sent / staff told
                d.later.append(_Later(i, case.id, body, r))
                return
            w.replies += 1
            replies.append((i, case.id, "rep", {"t": r.t, "re": body["id"], **r.fields}))
            notes.append(("case %s %s -> %s %s", case.id, t, r.t, r.why or ""))
        elif t == "hello":
            case.fw = db.case_text(body["fw"], 40)
            case.online = True
            notes.append(("case %s connected (fw %s)", case.id, case.fw))
            w.replies += 1
            replies.append((i, case.id, "cmd", {"t": "time", "re": body["id"], "now": now, "rx": w.rx,
                                                 "sv": case.desired_v}))
            self._state(i, case, desired.on_hello(s, case, body.get("sv"), now), w, replies)  # after the time
        elif t == "beat":
            case.online = True
            # Only an explicit false says unsynced: a beat without the field passed the clock
            # check, so its sender's clock is set (firmware from before the field).
            case.synced = body.get("synced") is not False
            case.last_status, case.status_at = status.from_beat(
                case.last_status, {k: body[k] for k in _BEAT_FIELDS if k in body}, now)
            if case.synced:  # an unsynced case refuses commands (no_clock); its hello gets the state
                self._state(i, case, desired.on_beat(s, case, body.get("sv"), now), w, replies)
        elif t == "evts":
            w.replies += 1
            start = len(events)
            replies.append((i, case.id, "evtack", {"t": "evtack", "re": body["id"],
                                                    "ids": self._events(store.id, case.id, body, now, events)}))
            # the door and alarms shown at once, not at the next beat; alarms become alerts
            new = events[start:]
            shown = status.from_events(case.last_status, case.status_at, new, now)
            if shown is not None:
                case.last_status, case.status_at = shown
            self.rt.policy.alerts.from_events(s, case, new, now)
        elif t == "ack":
            self.rt.policy.journal(s, case, "cmd_ack", re=body["re"], ok=body["ok"], err=str(body.get("err", ""))[:60])
            if body["ok"] is False and "sv" in body:  # a refused state: the next one goes out at once
                self._state(i, case, desired.on_refused(s, case, body["sv"], now), w, replies)

    @staticmethod
    def _state(i: int, case: Case, parts: list[dict[str, Any]], w: _Window,
               replies: list[tuple[int, str, str, dict[str, Any]]]) -> None:
        """The desired state's commands as replies of the batch (signed after its commit)."""
        w.replies += len(parts)
        replies += [(i, case.id, "cmd", p) for p in parts]

    def _decide(self, s: Session, store: Store, case: Case, body: dict[str, Any]) -> Reply:
        p = self.rt.policy
        t = body["t"]
        if t == "phone":
            sid = body.get("sid")
            return p.on_phone(s, store, case, body["num"][:24], db.case_text(sid, 32) if isinstance(sid, str) else None)
        if t == "otp":
            return p.on_otp(s, store, case, db.case_text(body["sid"], 32), body["code"][:12])
        if t == "token":
            return p.on_token(s, store, case, body["tok"][:128], body["src"])
        if t == "help":
            why = body.get("why")
            return p.on_help(s, store, case, why if isinstance(why, str) else None)
        return deny("unavailable")

    def _events(self, store_id: str, case_id: str, body: dict[str, Any], now: int,
                rows: list[dict[str, Any]]) -> list[str]:
        """Rows for the batch's insert (duplicates skipped there); returns the ids to acknowledge."""
        acked: list[str] = []
        for e in body["evts"]:
            if not isinstance(e, dict) or not isinstance(e.get("i"), str) or not e["i"]:
                continue  # without an id it can be neither stored nor acknowledged
            eid = db.case_text(e["i"], _EVENT_ID_MAX)
            acked.append(e["i"])
            kind, ts, data = e.get("k"), e.get("ts"), e.get("d", {})
            if not isinstance(kind, str) or type(ts) is not int or not isinstance(data, dict):
                log.warning("case %s event %s malformed: dropped", case_id, eid)
                continue
            rows.append({"store_id": store_id, "case_id": case_id, "event_id": eid, "source": "case",
                         "kind": db.case_text(kind, 32), "ts": ts, "received_at": now, "member_id": None,
                         "phone_last2": None, "data": scrub(data)})
        return acked

    def sign(self, case_id: str, kind: str, body: dict[str, Any]) -> Out:
        """Sign one message in its own transaction (takes the next seq)."""
        with self.rt.sessions.begin() as s:
            case = s.get(Case, case_id)
            assert case is not None
            topic, _, payload = channel.seal(s, case, kind, body, self.rt.now(), self.rt.settings.msg_ttl_s,
                                             self.rt.settings.topic_prefix)
        return Out(topic, payload)


class Worker:
    def __init__(self, rt: Runtime, handler: Handler | None = None) -> None:
        self.rt = rt
        self.handler = handler or Handler(rt)
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._publishing: set[asyncio.Task[Any]] = set()

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
                                           max_inflight=_INFLIGHT, manual_ack=True) as client:
                        client.pending_calls_threshold = _INFLIGHT  # a batch's replies are in flight together
                        for sub in self.subscriptions():
                            await client.subscribe(sub, qos=1)
                        self.connected.set()
                        backoff = 1.0
                        log.info("worker subscribed on %s:%s", self.rt.settings.mqtt_host,
                                 self.rt.settings.mqtt_port)
                        await self._serve(client)
                except aiomqtt.MqttError as e:
                    self.connected.clear()
                    for t in list(self._publishing):  # their connection is gone: they cannot complete
                        t.cancel()
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
        while True:
            # Whatever has arrived makes the batch: one message when idle (no added latency), more
            # under load, while the previous batch was being decided.
            batch = [await anext(messages)]
            while len(batch) < MAX_BATCH and len(messages):
                batch.append(await anext(messages))
            while batch:
                batch = await self._take(client, batch, lambda: len(messages))

    async def _take(self, client: aiomqtt.Client, batch: list[aiomqtt.Message], queued: Callable[[], int]
                    ) -> list[aiomqtt.Message]:
        """Shed what is past its deadline, decide the rest and answer; returns what is still held
        (the database went away: after it is back, the held messages are tried again)."""
        self._linked(client)
        items = [(str(m.topic), payload_bytes(m.payload)) for m in batch]
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
            d = await asyncio.to_thread(self.handler.decide, [items[i] for i in keep])
        except DatabaseUnavailable as e:
            if isinstance(e, PartlyDecided):
                self._answer(client, batch[:e.done], e.decided)
            held = batch[e.done:]
            self.load.outages += 1
            self.load.held = len(held) + queued()
            await wait_until_back(self.rt.engine, lambda: len(held) + queued())
            self.load.held = 0
            return held  # tried again by the next _take, only if the broker link survived the wait
        self.load.timed(time.monotonic() - t0, len(batch))
        self._answer(client, batch, d)
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
        if d.pending:
            self._spawn(self._finish(client, d))

    @staticmethod
    def _ack(client: aiomqtt.Client, msgs: list[aiomqtt.Message]) -> None:
        paho = client._client  # aiomqtt 2.5 has no manual ack of its own; paho's (manual_ack_set)
        for m in msgs:
            if m.qos:
                paho.ack(m.mid, m.qos)

    async def _finish(self, client: aiomqtt.Client, d: Decided) -> None:
        self._publish(client, await asyncio.to_thread(d.finish))

    def _publish(self, client: aiomqtt.Client, outs: list[list[Out]]) -> None:
        # One task per reply, created in order: each hands its packet to the client at once, in
        # that order, and then waits for the broker's PUBACK without holding up the next batch.
        # No timeout (it costs a timer and a task per reply): if the connection drops, run()
        # cancels what is still waiting.
        for per_msg in outs:
            for o in per_msg:
                self._spawn(client.publish(o.topic, o.payload, qos=1, timeout=math.inf), self._publishing)

    def _spawn(self, coro: Coroutine[Any, Any, None], group: set[asyncio.Task[Any]] | None = None) -> None:
        task = asyncio.create_task(coro)
        for g in (self._tasks, group):
            if g is not None:
                g.add(task)
                task.add_done_callback(g.discard)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker: reply not published: %s", task.exception())


async def retention_loop(rt: Runtime) -> None:
    while True:
        try:
            with rt.sessions.begin() as s:
                n = retention(s, rt.now(), rt.settings.retention_days)
            if n:
                log.info("retention: stripped member references from %d events", n)
        except Exception:
            log.exception("retention run failed")
        await asyncio.sleep(rt.settings.retention_every_s)
