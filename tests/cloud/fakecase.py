"""A case on the wire, for end-to-end tests: paho-mqtt plus the real firmware codec
(firmware/lockcase/uplink/codec.py imports under CPython too), so the worker is tested against
the bytes the firmware will send."""

from __future__ import annotations

import json
import queue
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lockcase.uplink import codec as P


class FakeCase:
    def __init__(self, host: str, port: int, store: str, case: str, key: bytes, *,
                 username: str | None = None, password: str | None = None,
                 clock: Any = None, seqs: Any = None) -> None:
        self.store, self.case = store, case
        self.topics = P.topics("lockcase/v1", store, case)
        self.codec = P.Codec(case, key, seqs or P.MemorySeqs(), clock=clock)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.raw: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"case-{case}",
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.will_set(self.topics["presence"], b"offline", qos=1, retain=True)
        self.client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.connected = queue.Queue[int]()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connected.put(rc.value)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        rc = self.connected.get(timeout=10)
        if rc != 0:
            self.close()
            raise ConnectionRefusedError(f"broker refused the case: rc={rc}")
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # as the firmware does (lockcase/uplink/transport.py)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for t in P.subscriptions("lockcase/v1", store, case):
            self.client.subscribe(t, qos=1)
        self.client.publish(self.topics["presence"], b"online", qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def publish_raw(self, kind: str, payload: bytes) -> None:
        self.client.publish(self.topics[kind], payload, qos=1).wait_for_publish(5)

    def send(self, kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        payload = self.codec.sign(self.topics[kind], body)
        self.publish_raw(kind, payload)
        return body, payload

    def expect(self, kind: str, re: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next valid message of `kind` (answering `re` if given); others are kept in self.raw."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} for {re} within {timeout}s")
            try:
                topic, payload = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            self.raw.append((topic, payload))
            try:
                body = self.codec.open(topic, payload)
            except P.Rejected:
                continue
            if topic.endswith("/" + kind) and (re is None or body.get("re") == re):
                return body

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Everything valid that arrives within `seconds` (to show that nothing does)."""
        got = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                topic, payload = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            try:
                got.append(self.codec.open(topic, payload))
            except P.Rejected:
                pass
        return got

    def hello(self) -> dict[str, Any]:
        body, _ = self.send("status", {"t": "hello", "fw": "0.1.0", "boot": "power_on"})
        t = self.expect("cmd", re=body["id"])
        assert t["t"] == "time" and self.codec.synced
        return t

    @staticmethod
    def dumps(body: dict[str, Any]) -> str:
        return json.dumps(body, separators=(",", ":"))
