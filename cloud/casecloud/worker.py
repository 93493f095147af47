"""The MQTT worker: verifies what cases send, decides, answers signed, stores events.

`Handler.handle` is synchronous and does the database work (tested without a broker); `Worker`
feeds it from aiomqtt and publishes its answers, reconnecting with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiomqtt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from casecloud import channel, codec
from casecloud.models import Case, Event, Store
from casecloud.mqtt import client as mqtt_client
from casecloud.mqtt import payload_bytes
from casecloud.policy import Reply, deny
from casecloud.privacy import retention, scrub
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.worker")

SUBSCRIBED = (*codec.UP_KINDS, codec.PRESENCE)
_BEAT_FIELDS = ("up", "door", "lock", "heap", "rssi", "fw")
_EVENT_ID_MAX = 40


@dataclass(frozen=True)
class Out:
    topic: str
    payload: bytes


class Handler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rejected: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> list[Out]:
        """Never raises for anything a case (or an impostor) can send."""
        try:
            if topic.endswith("/" + codec.PRESENCE):
                self._presence(topic, payload)
                return []
            with self.rt.sessions.begin() as s:
                store, case, body = channel.receive(s, topic, payload, self.rt.now())
                case.last_seen = self.rt.now()
                case_id, store_id = case.id, store.id
            return self._dispatch(store_id, case_id, codec.parse_topic(topic).kind, body)
        except codec.Rejected as e:
            self.rejected[e.reason] += 1
            log.warning("rejected %s on %s", e.reason, topic)  # never the payload: it may hold a number
            return []
        except Exception:
            log.exception("failed on a message on %s", topic)
            return []

    def _presence(self, topic: str, payload: bytes) -> None:
        where = codec.parse_topic(topic)
        with self.rt.sessions.begin() as s:
            try:
                _, case = channel.lookup(s, where)
            except codec.Rejected:
                return
            case.online = payload.strip() == b"online"
            case.last_seen = self.rt.now()

    def _dispatch(self, store_id: str, case_id: str, kind: str, body: dict[str, Any]) -> list[Out]:
        t = body["t"]
        if kind == "req":
            return [self._request(store_id, case_id, body)]
        if t == "hello":
            return [self._hello(case_id, body)]
        if t == "beat":
            with self.rt.sessions.begin() as s:
                case = s.get(Case, case_id)
                if case is not None:
                    case.online = True
                    case.last_status = {k: body[k] for k in _BEAT_FIELDS if k in body}
            return []
        if t == "evts":
            return [self._events(store_id, case_id, body)]
        if t == "ack":
            with self.rt.sessions.begin() as s:
                case = s.get(Case, case_id)
                if case is not None:
                    self.rt.policy.journal(s, case, "cmd_ack", re=body["re"], ok=body["ok"],
                                           err=str(body.get("err", ""))[:60])
            return []
        return []

    def _sign(self, case_id: str, kind: str, body: dict[str, Any]) -> Out:
        with self.rt.sessions.begin() as s:
            case = s.get(Case, case_id)
            assert case is not None
            topic, _, payload = channel.seal(s, case, kind, body, self.rt.now(), self.rt.settings.msg_ttl_s,
                                             self.rt.settings.topic_prefix)
        return Out(topic, payload)

    def _hello(self, case_id: str, body: dict[str, Any]) -> Out:
        with self.rt.sessions.begin() as s:
            case = s.get(Case, case_id)
            assert case is not None
            case.fw = body["fw"][:40]
            case.online = True
            rx = case.rx_seq
        log.info("case %s connected (fw %s)", case_id, body["fw"][:40])
        return self._sign(case_id, "cmd", {"t": "time", "re": body["id"], "now": self.rt.now(), "rx": rx})

    def _request(self, store_id: str, case_id: str, body: dict[str, Any]) -> Out:
        p = self.rt.policy
        with self.rt.sessions.begin() as s:
            store, case = s.get(Store, store_id), s.get(Case, case_id)
            assert store is not None and case is not None
            r = self._decide(s, store, case, body)
        r = p.after_commit(self.rt.sessions, r)
        log.info("case %s %s -> %s %s", case_id, body["t"], r.t, r.why or "")
        return self._sign(case_id, "rep", {"t": r.t, "re": body["id"], **r.fields})

    def _decide(self, s: Session, store: Store, case: Case, body: dict[str, Any]) -> Reply:
        p = self.rt.policy
        t = body["t"]
        if t == "phone":
            sid = body.get("sid")
            return p.on_phone(s, store, case, body["num"][:24], sid if isinstance(sid, str) else None)
        if t == "otp":
            return p.on_otp(s, store, case, body["sid"][:32], body["code"][:12])
        if t == "token":
            return p.on_token(s, store, case, body["tok"][:128], body["src"])
        if t == "help":
            why = body.get("why")
            return p.on_help(s, store, case, why if isinstance(why, str) else None)
        return deny("unavailable")

    def _events(self, store_id: str, case_id: str, body: dict[str, Any]) -> Out:
        acked: list[str] = []
        now = self.rt.now()
        for e in body["evts"]:
            if not isinstance(e, dict) or not isinstance(e.get("i"), str) or not e["i"]:
                continue  # without an id it can be neither stored nor acknowledged
            eid = e["i"][:_EVENT_ID_MAX]
            acked.append(e["i"])
            kind, ts, data = e.get("k"), e.get("ts"), e.get("d", {})
            if not isinstance(kind, str) or type(ts) is not int or not isinstance(data, dict):
                log.warning("case %s event %s malformed: dropped", case_id, eid)
                continue
            with self.rt.sessions() as s:
                exists = s.scalar(select(Event.id).where(Event.case_id == case_id, Event.event_id == eid))
                if exists is not None:
                    continue
                s.add(Event(store_id=store_id, case_id=case_id, event_id=eid, source="case", kind=kind[:32],
                            ts=ts, received_at=now, data=scrub(data)))
                try:
                    s.commit()
                except IntegrityError:  # another worker stored it first
                    s.rollback()
        return self._sign(case_id, "evtack", {"t": "evtack", "re": body["id"], "ids": acked})


class Worker:
    def __init__(self, rt: Runtime, handler: Handler | None = None) -> None:
        self.rt = rt
        self.handler = handler or Handler(rt)
        self.connected = asyncio.Event()

    def subscriptions(self) -> list[str]:
        st = self.rt.settings
        return [f"{st.share_prefix}{st.topic_prefix}/+/+/{k}" for k in SUBSCRIBED]

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff."""
        backoff = 1.0
        while True:
            try:
                # A persistent session: the broker keeps what cases sent while we were away.
                async with mqtt_client(self.rt.settings, "worker", clean_session=False) as client:
                    for sub in self.subscriptions():
                        await client.subscribe(sub, qos=1)
                    self.connected.set()
                    backoff = 1.0
                    log.info("worker subscribed on %s:%s", self.rt.settings.mqtt_host, self.rt.settings.mqtt_port)
                    async for msg in client.messages:
                        outs = await asyncio.to_thread(self.handler.handle, str(msg.topic),
                                                       payload_bytes(msg.payload))
                        for o in outs:
                            await client.publish(o.topic, o.payload, qos=1)
            except aiomqtt.MqttError as e:
                self.connected.clear()
                log.warning("worker: broker connection lost (%s); retrying in %.0fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


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
