"""The worker's CPU per message, by kind and batch size, in-process (docs/scaling.md).

`Handler.handle_batch` (batch.py: the batch's transaction, and for a typed number the text and
the reply signed after the commit) on a private PostgreSQL (tests/cloud/pgserver.py) or SQLite,
with `--cases` registered cases, each message from a case drawn at random from all of them or from
the first 40 (a fleet's cold rows against a bench's warm ones). No MQTT: the worker's event loop
is not in these figures. Reports this process's CPU ms per message and PostgreSQL's (its server
processes, from /proc).

Run: `PYTHONPATH=cloud:firmware:.:host_tools .venv/bin/python -m bench.batch_kinds --batch 5`
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.fleet import NO_LIMITS, TRUSTED_CARD, UNKNOWN_CARD
from casecloud import registry
from casecloud.batch import Handler
from casecloud.runtime import build
from casecloud.settings import Settings
from lockcase.uplink import codec as P
from tests.cloud.pgserver import PgServer

KINDS = ("card", "deny", "phone", "beat", "evts", "presence", "hello")


def server_cpu_s(pg: PgServer | None) -> float:
    """CPU seconds of the PostgreSQL postmaster and its children so far (0 without one)."""
    if pg is None:
        return 0.0
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == master or int(fields[1]) == master:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Fleet:
    """`n` registered cases of stores of 20, their codecs, a trusted member's card."""

    def __init__(self, url: str, workdir: Path, n: int) -> None:
        self.rt = build(Settings(data_dir=workdir / "data", database_url=url, admin_token=SecretStr("bench"),
                                 **NO_LIMITS))
        self.codecs: dict[str, tuple[str, P.Codec]] = {}
        with self.rt.sessions.begin() as s:
            for k in range((n + 19) // 20):
                registry.create_store(s, f"s{k}", self.rt.now(), name=f"Store {k}")
            for k in range(n):
                store = f"s{k // 20}"
                _, sec = registry.register_case(s, store, f"c{k}", self.rt.now())
                self.codecs[f"c{k}"] = (store, P.Codec(f"c{k}", bytes.fromhex(sec.key_hex), P.MemorySeqs()))
            registry.create_member(s, self.rt.hasher, self.rt.now(), card=TRUSTED_CARD, status="trusted")
        self.ids = list(self.codecs)
        self.handler = Handler(self.rt)
        self._event = 0
        for k in range(0, n, 50):  # every case greeted, as a fleet in its steady state
            self.handler.handle_batch([self.message("hello", c) for c in self.ids[k:k + 50]])

    def _signed(self, cid: str, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        store, codec = self.codecs[cid]
        topic = P.topics("lockcase/v1", store, cid)[kind]
        return topic, codec.sign(topic, body)

    def message(self, kind: str, cid: str) -> tuple[str, bytes]:
        makers: dict[str, Callable[[], tuple[str, bytes]]] = {
            "card": lambda: self._signed(cid, "req", {"t": "token", "tok": TRUSTED_CARD, "src": "nfc"}),
            "deny": lambda: self._signed(cid, "req", {"t": "token", "tok": UNKNOWN_CARD, "src": "nfc"}),
            "phone": lambda: self._signed(cid, "req", {"t": "phone", "num": f"20255501{random.randrange(10):02d}"}),
            "beat": lambda: self._signed(cid, "status", {"t": "beat", "up": 5, "lock": "locked", "synced": True,
                                                         "sv": 0, "door": "closed"}),
            "hello": lambda: self._signed(cid, "status", {"t": "hello", "fw": "1.0.0", "boot": "power_on", "sv": 0}),
            "evts": self._events_of(cid),
            "presence": lambda: (f"lockcase/v1/{self.codecs[cid][0]}/{cid}/presence", b"online"),
        }
        return makers[kind]()

    def _events_of(self, cid: str) -> Callable[[], tuple[str, bytes]]:
        def make() -> tuple[str, bytes]:
            self._event += 3
            now = int(time.time())
            evts = [{"i": str(self._event + j), "k": k, "ts": now} for j, k in enumerate(("granted", "opened", "closed"))]
            return self._signed(cid, "evt", {"t": "evts", "evts": evts})
        return make


def measure(fleet: Fleet, pg: PgServer | None, kind: str, pool: list[str], batch: int, messages: int
            ) -> dict[str, float]:
    batches = [[fleet.message(kind, c) for c in random.sample(pool, batch)] for _ in range(max(1, messages // batch))]
    n = len(batches) * batch
    g0, c0, w0 = server_cpu_s(pg), time.process_time(), time.perf_counter()
    for b in batches:
        fleet.handler.handle_batch(b)
    c1, w1, g1 = time.process_time(), time.perf_counter(), server_cpu_s(pg)
    return {"worker_cpu_ms": round(1000 * (c1 - c0) / n, 3), "wall_ms": round(1000 * (w1 - w0) / n, 3),
            "postgres_cpu_ms": round(1000 * (g1 - g0) / n, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The worker's CPU per message, by kind and batch size (docs/scaling.md)")
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5, help="messages a batch (the 10,000-case fleet's: 4.6-7.7)")
    ap.add_argument("--messages", type=int, default=600, help="per kind and pool")
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("kinds", nargs="*", metavar="KIND", help=f"of {', '.join(KINDS)} (default: all)")
    a = ap.parse_args(argv)
    kinds = a.kinds or list(KINDS)
    if unknown := set(kinds) - set(KINDS):
        ap.error(f"no such kind: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as d, PgServer.start() as pg:
        url = f"sqlite:///{d}/cloud.db" if a.sqlite else pg.url(pg.create_database())
        fleet = Fleet(url, Path(d), a.cases)
        try:
            for name, pool in ((f"any of {a.cases}", fleet.ids), ("the first 40", fleet.ids[:40])):
                for kind in kinds:
                    r = measure(fleet, None if a.sqlite else pg, kind, pool, a.batch, a.messages)
                    print(f"{kind:9} batches of {a.batch}, cases {name}: worker {r['worker_cpu_ms']:.3f} CPU ms a message"
                          f" (wall {r['wall_ms']:.3f}), PostgreSQL {r['postgres_cpu_ms']:.3f}", flush=True)
        finally:
            fleet.rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
