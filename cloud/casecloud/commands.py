"""Signed commands to cases (app unlock, relock, staff, config) and waiting for their acks.

The command sender has its own MQTT connection and its own plain (not shared) subscription to
acks, so whichever process sent a command sees its answer even when workers are scaled out. It
matches acks by the command's random id and does not touch the replay window (channel.peek):
the worker, which also receives every ack, owns that. Whatever an ack holds costs only that ack; `run` is supervised by whoever starts it (supervise.py), so the
sender comes back after anything else and `/healthz` says when it is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import aiomqtt

from casecloud import channel, codec
from casecloud.models import Case
from casecloud.mqtt import client as mqtt_client
from casecloud.mqtt import payload_bytes
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.commands")


class NotConnected(Exception):
    pass


class Commander:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connected = asyncio.Event()
        self.rejected: Counter[str] = Counter()
        self.failed = 0  # acks that raised something other than a protocol rejection

    async def run(self) -> None:
        backoff = 1.0
        st = self.rt.settings
        while True:
            try:
                async with mqtt_client(st, "api") as client:
                    await client.subscribe(f"{st.topic_prefix}/+/+/ack", qos=1)
                    self._client = client
                    self.connected.set()
                    backoff = 1.0
                    async for msg in client.messages:
                        try:
                            await self._on_ack(str(msg.topic), payload_bytes(msg.payload))
                        except Exception:
                            # One ack that breaks something costs only itself: the sender goes on.
                            self.failed += 1
                            log.exception("command sender: an ack on %s failed", msg.topic)
            except aiomqtt.MqttError as e:
                log.warning("command sender: broker connection lost (%s); retrying in %.0fs", e, backoff)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _on_ack(self, topic: str, payload: bytes) -> None:
        def check() -> dict[str, Any]:
            with self.rt.sessions() as s:
                return channel.peek(s, topic, payload, self.rt.now())[2]

        try:
            body = await asyncio.to_thread(check)
        except codec.Rejected as e:
            self.rejected[e.reason] += 1  # the worker, which sees every ack too, logs them
            return
        fut = self._pending.get(body["re"])
        if fut is not None and not fut.done():
            fut.set_result(body)

    async def send(self, case_id: str, body: dict[str, Any], *, wait: float | None = None) -> dict[str, Any] | None:
        """Publish a signed cmd; with `wait`, return the case's ack body or raise TimeoutError."""
        client = self._client
        if client is None:
            raise NotConnected("not connected to the broker")

        def sign() -> tuple[str, dict[str, Any], bytes]:
            with self.rt.sessions.begin() as s:
                case = s.get(Case, case_id)
                if case is None:
                    raise KeyError(case_id)
                return channel.seal(s, case, "cmd", body, self.rt.now(), self.rt.settings.msg_ttl_s,
                                    self.rt.settings.topic_prefix)

        topic, full, payload = await asyncio.to_thread(sign)
        if wait is None:
            await self._publish(client, topic, payload)
            return None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[full["id"]] = fut
        try:
            await self._publish(client, topic, payload)
            return await asyncio.wait_for(fut, wait)
        finally:
            self._pending.pop(full["id"], None)

    @staticmethod
    async def _publish(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as e:  # the link dropped between the check and the publish
            raise NotConnected(str(e)) from None
