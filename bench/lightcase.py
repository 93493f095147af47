"""LightCase: many simulated cases in one process, for the cloud's load figures.

Each has its own broker login and TCP connection, signs and checks with the firmware's own codec
(lockcase/uplink/codec.py, which imports under CPython) and speaks just enough MQTT 3.1.1 (QoS 1
publish, its rep/cmd subscriptions) on an asyncio loop, so hundreds fit in one process and the load
generator does not compete with the worker for the CPU more than it must. Used by
bench/cloud_bench.py and bench/load_bench.py.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

from lockcase.uplink import codec as P


class LightCase:
    """One simulated case (module docstring)."""

    def __init__(self, store: str, case: str, key: bytes, user: str, password: str) -> None:
        self.case, self.user, self.password = case, user, password
        self.topics = P.topics("lockcase/v1", store, case)
        self.codec = P.Codec(case, key, P.MemorySeqs())
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.pid = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    @staticmethod
    def _packet(head: int, body: bytes) -> bytes:
        n, size = len(body), bytearray()
        while True:
            n, b = n >> 7, n & 0x7F
            size.append(b | (0x80 if n else 0))
            if not n:
                return bytes([head]) + bytes(size) + body

    @staticmethod
    def _str(x: str | bytes) -> bytes:
        b = x.encode() if isinstance(x, str) else x
        return struct.pack("!H", len(b)) + b

    async def _read(self) -> tuple[int, bytes]:
        assert self.reader is not None
        head = (await self.reader.readexactly(1))[0]
        n, shift = 0, 0
        while True:
            b = (await self.reader.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return head, await self.reader.readexactly(n)

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the firmware does
        var = self._str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)  # user, password, clean
        self.writer.write(self._packet(0x10, var + self._str("case-" + self.case) + self._str(self.user)
                                       + self._str(self.password)))
        head, body = await self._read()
        if head != 0x20 or body[1] != 0:
            raise ConnectionRefusedError(f"broker refused {self.case}: {body!r}")
        subs = b"".join(self._str(t) + b"\x01" for t in P.subscriptions("lockcase/v1", *self.topics["req"].split("/")[2:4]))
        self.writer.write(self._packet(0x82, struct.pack("!H", self._next_pid()) + subs))
        head, _ = await self._read()
        assert head == 0x90
        self.task = asyncio.create_task(self._pump())

    def _next_pid(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid

    async def _pump(self) -> None:
        assert self.writer is not None
        while True:
            head, body = await self._read()
            if head >> 4 != 3:
                continue  # PUBACK of ours, PINGRESP
            tlen = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tlen].decode()
            rest = body[2 + tlen:]
            if head & 0x06:  # QoS 1: acknowledge
                self.writer.write(self._packet(0x40, rest[:2]))
                rest = rest[2:]
            try:
                msg = self.codec.open(topic, rest)
            except P.Rejected:
                continue
            fut = self.waiting.pop(msg.get("re", ""), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def request(self, kind: str, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        assert self.writer is not None
        payload = self.codec.sign(self.topics[kind], body)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[body["id"]] = fut
        pub = self._str(self.topics[kind]) + struct.pack("!H", self._next_pid()) + payload
        self.writer.write(self._packet(0x32, pub))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(body["id"], None)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.write(b"\xe0\x00")  # DISCONNECT
            self.writer.close()


def light_cases(secrets: dict[str, Any], ids: tuple[str, ...]) -> list[LightCase]:
    return [LightCase("s1", c, bytes.fromhex(secrets[c].key_hex), secrets[c].mqtt_username, secrets[c].mqtt_password)
            for c in ids]


async def connect_all(fakes: list[LightCase], host: str, port: int) -> None:
    """Connect every case and have each greeted (answered `time`)."""
    await asyncio.gather(*(f.connect(host, port) for f in fakes))

    async def hello(f: LightCase) -> None:
        deadline = time.monotonic() + 30
        while True:  # the worker process may still be starting: its subscription is not there yet
            try:
                await f.request("status", {"t": "hello", "fw": "0.1.0", "boot": "power_on"}, timeout=1)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    await asyncio.gather(*(hello(f) for f in fakes))
