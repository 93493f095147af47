"""One shard of the fleet simulator (bench/fleet.py): thousands of virtual cases in one process.

Each case is a `bench.lightcase.LightCase` (its own broker login and TCP connection, the firmware's
codec under CPython, a minimal MQTT 3.1.1 client on asyncio streams) that also behaves as the
firmware's link and cloud client do (docs/protocol.md):

- connect with the Last Will `offline` (retained) and publish `online`; on a dropped connection
  reconnect after a wait drawn from [0.25 s, 1 s], and after each failed attempt from
  [0.25 s, min(20 s, 2^n s)] (full jitter, as `lockcase/uplink/link.py`);
- greet with `hello` at once, and again after 1-2 s, 2-4 s, ... (the window doubling to 60 s,
  upper half) until a `time` answers one of this connection's last four hellos signed within 60 s
  (the codec's rule, as on the firmware); a `beat` right after connecting (synced false),
  another right after the sync, then every `beat_s`; PINGREQ when nothing was sent for 30 s;
- journal events sent in batches and kept until their `evtack`, one batch in flight, resent after
  10 s and after every new sync;
- answer `cmd` (`unlock`, `relock`, `state`...) with a signed `ack`;
- shopper requests (`req`) picked by the shard at a set rate, one outstanding per case (a case has
  one keypad), given up after `req_wait_s` as the case shows "No answer".

The shard is driven over stdin/stdout, one JSON object a line. stdin: first the spec (below), then
commands `go`, `stop`, `quit`. stdout: `{"ev": "status", ...}` every second (connected, synced,
in flight, its CPU seconds), `{"ev": "result", ...}` after `stop` with every sample
(CLOCK_MONOTONIC seconds, the same clock in every process of the machine, so the orchestrator can
cut them into windows).

Spec: {"host", "port", "cases": [[store, case, key_hex, password], ...], "rate": requests/s of
this shard (0: none; "closed": N: N cases send back to back), "events": event batches/s,
"beat_s", "req_wait_s", "mix": [[weight, body], ...], "seed"}.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import socket
import struct
import sys
import time
from typing import Any

from bench.lightcase import LightCase
from lockcase.uplink import codec as P

FW = "0.1.0-fleet"
EVT_RETRY_S = 10.0  # lockcase/uplink/client.py _EVT_RETRY_MS
PING_IDLE_S = 30.0  # half the keepalive below
KEEPALIVE_S = 60
HELLO_MAX_S = 60.0


class Shard:
    """What one process's cases share: the clock, the samples and the counters."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rng = random.Random(spec.get("seed", 0))
        self.req_wait_s = float(spec.get("req_wait_s", 8.0))
        self.beat_s = float(spec.get("beat_s", 60.0))
        self.mix = [(float(w), b) for w, b in spec["mix"]]
        # samples: kind -> [[t_sent, latency_ms], ...]; a request given up has latency -1, one whose
        # connection dropped while it waited -2
        self.samples: dict[str, list[list[float]]] = {"req": [], "evt": [], "hello": []}
        self.syncs: list[list[float]] = []  # [t_connected, t_synced] of every connection
        self.drops: list[float] = []  # when a connection was lost
        self.counts: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}  # request answers by type (allow, challenge, deny:why...)
        self.running = False  # load on: requests and events are made
        self.cases: list[FleetCase] = []

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


class FleetCase(LightCase):
    """A LightCase that lives like a case: greetings, beats, events, commands, reconnects."""

    def __init__(self, shard: Shard, store: str, case: str, key_hex: str, password: str) -> None:
        super().__init__(store, case, bytes.fromhex(key_hex), case, password)
        self.shard = shard
        self.up = False  # connected
        self.synced = False  # a hello of this connection answered
        self.connected_at = 0.0
        self.hellos_sent: dict[str, float] = {}  # this connection's hellos: id -> when it went out
        self.hello_due = 0.0
        self.hello_wait = 2.0
        self.beat_due = 0.0
        self.sent_at = 0.0  # the last packet we sent (keepalive)
        self.req: tuple[str, float, str] | None = None  # (id, sent at, type) of the request in flight
        self.journal: list[dict[str, Any]] = []  # events not acknowledged yet
        self.first_sent: dict[str, float] = {}  # event id -> when it was first sent
        self.evt_inflight: list[str] | None = None
        self.evt_due = 0.0
        self.next_event = 1
        self.boot = time.monotonic()

    # --- the connection ----------------------------------------------------------------------

    async def live(self, host: str, port: int) -> None:
        failures = 0
        while True:
            try:
                await self._open(host, port)
            except (OSError, asyncio.IncompleteReadError, ConnectionRefusedError, TimeoutError) as e:
                self.shard.count("connect_failed")
                self.shard.count(f"connect_failed:{type(e).__name__}")
                self._drop_socket()
                failures += 1
                await asyncio.sleep(random.uniform(0.25, min(20.0, 2.0 ** failures)))
                continue
            failures = 0
            try:
                await self._serve()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            self.shard.drops.append(time.monotonic())
            self.shard.count("dropped")
            if self.req is not None:  # its answer cannot come on a new connection: "No answer"
                self.shard.samples["req"].append([self.req[1], -2])
                self.shard.count("req_lost_with_connection")
                self.req = None
            self.up = self.synced = False
            self._drop_socket()
            await asyncio.sleep(random.uniform(0.25, 1.0))  # the first wait after a drop

    def _drop_socket(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # user, password, will retain, will QoS 1, will, clean session
        var = self._str("MQTT") + bytes([4, 0xEE]) + struct.pack("!H", KEEPALIVE_S)
        pay = (self._str("case-" + self.case) + self._str(self.topics["presence"]) + self._str(b"offline")
               + self._str(self.user) + self._str(self.password))
        self.writer.write(self._packet(0x10, var + pay))
        head, body = await asyncio.wait_for(self._read(), 10)
        if head != 0x20 or body[1] != 0:
            raise ConnectionRefusedError(f"broker refused {self.case}: {body!r}")
        store, case = self.topics["req"].split("/")[2:4]
        subs = b"".join(self._str(t) + b"\x01" for t in P.subscriptions("lockcase/v1", store, case))
        self.writer.write(self._packet(0x82, struct.pack("!H", self._next_pid()) + subs))
        # presence: retained, QoS 1
        self.writer.write(self._packet(0x33, self._str(self.topics["presence"]) + struct.pack("!H", self._next_pid())
                                       + b"online"))
        now = time.monotonic()
        self.up, self.synced, self.connected_at = True, False, now
        self.codec.forget_hellos()  # as the firmware's on_up: an earlier connection's answer is refused
        self.hellos_sent.clear()
        self.hello_wait = 2.0
        self._hello(now)
        self.hello_due = now + random.uniform(1.0, 2.0)
        self._beat(now)

    async def _serve(self) -> None:
        while True:
            head, body = await self._read()
            kind = head >> 4
            if kind != 3:
                if kind == 9 and body[2] & 0x80:  # SUBACK refusing a topic
                    self.shard.count("suback_refused")
                continue  # PUBACK of ours, PINGRESP
            tlen = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tlen].decode()
            rest = body[2 + tlen:]
            if head & 0x06:
                self._write(self._packet(0x40, rest[:2]))
                rest = rest[2:]
            try:
                msg = self.codec.open(topic, rest)
            except P.Rejected as e:
                self.shard.count(f"rejected:{e.reason}")
                continue
            self._on_message(topic.rsplit("/", 1)[1], msg, time.monotonic())

    def _write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)
            self.sent_at = time.monotonic()

    def publish(self, kind: str, body: dict[str, Any]) -> bool:
        if not self.up:
            return False
        payload = self.codec.sign(self.topics[kind], body)
        self._write(self._packet(0x32, self._str(self.topics[kind]) + struct.pack("!H", self._next_pid()) + payload))
        self.shard.count(f"sent:{kind}")
        return True

    # --- what the cloud sends ----------------------------------------------------------------

    def _on_message(self, kind: str, msg: dict[str, Any], now: float) -> None:
        sh = self.shard
        t = msg["t"]
        if t == "time":
            sent = self.hellos_sent.get(msg["re"], now)  # the hello it answers, maybe not the last
            self.hellos_sent.clear()
            sh.samples["hello"].append([sent, round((now - sent) * 1000, 2)])
            if not self.synced:
                self.synced = True
                sh.syncs.append([self.connected_at, now])
                self._beat(now)  # the firmware beats right after the sync
                self.evt_inflight = None
                self._send_events(now)  # resend what is unacknowledged at once
        elif kind == "rep":
            if self.req is not None and msg["re"] == self.req[0]:
                sh.samples["req"].append([self.req[1], round((now - self.req[1]) * 1000, 2)])
                out = t if t != "deny" else f"deny:{msg.get('why')}"
                sh.outcomes[f"{self.req[2]}->{out}"] = sh.outcomes.get(f"{self.req[2]}->{out}", 0) + 1
                self.req = None
            else:
                sh.count("rep_late")  # answered after the case gave up
        elif t == "evtack":
            acked = set(msg["ids"])
            for i in msg["ids"]:
                t0 = self.first_sent.pop(i, None)
                if t0 is not None:
                    sh.samples["evt"].append([t0, round((now - t0) * 1000, 2)])
            self.journal = [e for e in self.journal if e["i"] not in acked]
            self.evt_inflight = None
            self._send_events(now)
        elif kind == "cmd":
            sh.count(f"cmd:{t}")
            ack: dict[str, Any] = {"t": "ack", "re": msg["id"], "ok": True}
            if t == "state":
                ack["sv"] = msg["sv"]
            self.publish("ack", ack)
            if t == "unlock":  # the app's unlock opens the door: the firmware journals it
                self.add_events(now, ("granted", {"g": self.next_event, "source": "app"}), ("opened", None),
                                ("closed", None))

    # --- what the case sends -----------------------------------------------------------------

    def _hello(self, now: float) -> None:
        body = {"t": "hello", "fw": FW, "boot": "power_on", "sv": 0}
        if self.publish("status", body):
            self.hellos_sent[body["id"]] = now

    def _beat(self, now: float) -> None:
        self.beat_due = now + self.shard.beat_s
        self.publish("status", {"t": "beat", "up": int(now - self.boot), "lock": "locked", "synced": self.synced,
                                "sv": 0, "door": "closed"})

    def add_events(self, now: float, *evts: tuple[str, dict[str, Any] | None]) -> None:
        ts = self.codec.now()
        for k, d in evts:
            e: dict[str, Any] = {"i": str(self.next_event), "k": k, "ts": ts}
            if d:
                e["d"] = d
            self.next_event += 1
            self.journal.append(e)
        self._send_events(now)

    def _send_events(self, now: float) -> None:
        if not self.synced or self.evt_inflight is not None or not self.journal:
            return
        batch = self.journal[:8]  # well under the 1024-byte payload
        if self.publish("evt", {"t": "evts", "evts": batch}):
            self.evt_inflight = [e["i"] for e in batch]
            self.evt_due = now + EVT_RETRY_S
            for e in batch:
                self.first_sent.setdefault(e["i"], now)

    def shop(self, now: float) -> bool:
        """A shopper's request from the mix, not awaited (the answer is matched in _on_message)."""
        if not self.synced or self.req is not None:
            return False
        r = self.shard.rng.random() * sum(w for w, _ in self.shard.mix)
        pick = self.shard.mix[-1][1]
        for w, b in self.shard.mix:
            r -= w
            if r <= 0:
                pick = b
                break
        body = dict(pick)
        body["id"] = P.new_id()
        self.req = (body["id"], now, body["t"])
        return self.publish("req", body)

    def tick(self, now: float) -> None:
        """Timers, once a second: hello repeats, beats, event resends, requests given up, pings."""
        if self.req is not None and now - self.req[1] > self.shard.req_wait_s:
            self.shard.samples["req"].append([self.req[1], -1])
            self.shard.count("req_timeout")
            self.req = None
        if not self.up:
            return
        if not self.synced and now >= self.hello_due:
            self._hello(now)
            w = self.hello_wait
            self.hello_wait = min(w * 2, HELLO_MAX_S)
            self.hello_due = now + random.uniform(w / 2, w)
        if now >= self.beat_due:
            self._beat(now)
        if self.evt_inflight is not None and now >= self.evt_due:
            self.shard.count("evt_resent")
            self.evt_inflight = None
            self._send_events(now)
        if now - self.sent_at > PING_IDLE_S:
            self._write(b"\xc0\x00")  # PINGREQ


class LineReader:
    """Lines from a file descriptor, unbuffered (a text stream's buffer would hide a second line
    from the event loop's reader callback)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, b""

    def read(self) -> list[str] | None:
        data = os.read(self.fd, 1 << 20)
        if not data:
            return None
        self.buf += data
        return self.drain()

    def drain(self) -> list[str]:
        """The complete lines buffered."""
        *lines, self.buf = self.buf.split(b"\n")
        return [x.decode().strip() for x in lines]

    def first(self) -> str:
        while b"\n" not in self.buf:
            data = os.read(self.fd, 1 << 20)
            if not data:
                raise SystemExit("no spec on stdin")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def peak_rss_kib() -> int:
    """VmHWM: getrusage's ru_maxrss survives exec on Linux, so it can be the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main_async(spec: dict[str, Any], lines: LineReader) -> None:
    sh = Shard(spec)
    host, port = spec["host"], int(spec["port"])
    sh.cases = [FleetCase(sh, store, case, key, pw) for store, case, key, pw in spec["cases"]]
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def readable() -> None:
        got = lines.read()
        if got is None:
            commands.put_nowait("quit")  # stdin closed: the orchestrator is gone
            loop.remove_reader(0)
            return
        for line in got:
            commands.put_nowait(line)

    for line in lines.drain():
        commands.put_nowait(line)
    loop.add_reader(0, readable)
    tasks: list[asyncio.Task[None]] = []

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def ticker() -> None:
        while True:
            now = time.monotonic()
            for c in sh.cases:
                c.tick(now)
            say({"ev": "status", "t": now, "connected": sum(c.up for c in sh.cases),
                 "synced": sum(c.synced for c in sh.cases), "cpu_s": cpu_s(),
                 "in_flight": sum(c.req is not None for c in sh.cases)})
            await asyncio.sleep(1.0 - (time.monotonic() - now) % 1.0)

    async def requests(rate: float) -> None:
        """Open loop: `rate` requests a second in total, each from a random case that is synced and
        has none in flight (a busy or offline case is skipped: its shopper is not there)."""
        interval = 1.0 / rate
        due = time.monotonic()
        while True:
            now = time.monotonic()
            while due <= now:
                if sh.running:
                    for _ in range(20):
                        if sh.rng.choice(sh.cases).shop(now):
                            break
                    else:
                        sh.count("req_no_case")  # every pick was offline or busy
                due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def closed(n: int) -> None:
        """Closed loop: n cases each send their next request as soon as the last is answered."""
        busy = sh.cases[:n]
        while True:
            now = time.monotonic()
            if sh.running:
                for c in busy:
                    if c.req is None:
                        c.shop(now)
            await asyncio.sleep(0.001)

    async def events(rate: float) -> None:
        interval = 1.0 / rate
        due = time.monotonic()
        while True:
            now = time.monotonic()
            while due <= now:
                if sh.running:
                    c = sh.rng.choice(sh.cases)
                    if c.up:
                        # a shopper's opening seen from the door: granted, opened, closed
                        c.add_events(now, ("granted", {"g": c.next_event, "source": "nfc"}), ("opened", None),
                                     ("closed", None))
                due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    tasks.append(asyncio.create_task(ticker()))
    # Connect in a ramp (a fleet powering up, not in one instant): spec["ramp_per_s"].
    ramp = float(spec.get("ramp_per_s", 250))
    for n, c in enumerate(sh.cases):
        tasks.append(asyncio.create_task(c.live(host, port)))
        if (n + 1) % 10 == 0:
            await asyncio.sleep(10 / ramp)
    rate = spec.get("rate", 0)
    if isinstance(rate, dict):
        tasks.append(asyncio.create_task(closed(int(rate["closed"]))))
    elif rate:
        tasks.append(asyncio.create_task(requests(float(rate))))
    if spec.get("events"):
        tasks.append(asyncio.create_task(events(float(spec["events"]))))
    while True:
        cmd = await commands.get()
        if cmd == "go":
            sh.running = True
        elif cmd == "stop":
            # No new requests or events; wait for what is in flight: requests answered or given up,
            # every journaled event acknowledged (resent as the firmware does), up to 30 s.
            sh.running = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(c.req is not None or c.journal for c in sh.cases):
                await asyncio.sleep(0.2)
            unacked = sum(len(c.journal) for c in sh.cases)
            say({"ev": "result", "samples": sh.samples, "syncs": sh.syncs, "drops": sh.drops, "counts": sh.counts,
                 "outcomes": sh.outcomes, "events_unacked": unacked, "events_made": sum(c.next_event - 1 for c in sh.cases),
                 "cases": len(sh.cases), "cpu_s": cpu_s(),
                 "peak_rss_kib": peak_rss_kib()})
        elif cmd in ("quit", ""):
            break
    for t in tasks:
        t.cancel()
    for c in sh.cases:
        if c.writer is not None:
            c.writer.write(b"\xe0\x00")  # DISCONNECT: no will
            c.writer.close()
    await asyncio.sleep(0.1)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket a case
    lines = LineReader(0)
    spec = json.loads(lines.first())
    if len(spec["cases"]) + 64 > hard:
        raise SystemExit(f"{len(spec['cases'])} cases need more file descriptors than the limit {hard}")
    asyncio.run(main_async(spec, lines))


if __name__ == "__main__":
    main()
