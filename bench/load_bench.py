"""The worker past saturation and through a database outage (issue: the worker sheds, waits and
recovers), on loopback with a real Mosquitto and one worker process (`python -m casecloud
--worker-only`), cases simulated by bench/lightcase.py's LightCase:

- overload: first the worker's capacity (closed loop, as cloud_bench's throughput), then an open
  loop at 1.5x and 2.4x of it: every case sends on schedule whether or not its last request was
  answered. Per run: requests sent, answered in time (within the cases' wait), answered late,
  never answered, journaled `late`, shed (the rest), p50/p99 of the answered, and the worker's
  peak RSS. The cases' wait is 2 s here (`req_wait_s`, 8 s on real cases) so that the queue
  reaches the deadline within a run of a few seconds;
- outage: 40 cases on PostgreSQL each send a request and an event batch a second; the server is
  stopped for 10 s and started again. Events lost (sent and never acknowledged), requests
  answered, requests the cases gave up on, and the worker's log bytes during the outage.
- scaling: one worker against two on a shared subscription over PostgreSQL (closed loop): the
  throughput ratio and CPU seconds per 1,000 answered per component (`scaling`).

Run: `.venv/bin/python -m bench.load_bench` (from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select

from bench.cloud_bench import (
    NO_LIMITS,
    CpuMeter,
    _load,
    broker_pid,
    pct,
    worker_cloud,
    worker_process,
)
from bench.lightcase import LightCase, connect_all, light_cases
from casecloud import broker as brokerfiles
from casecloud import registry
from casecloud.models import Event
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.conftest import start_mosquitto
from tests.cloud.pgserver import PgServer

TAP = {"t": "token", "tok": "0badge01", "src": "nfc"}


def _rss_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _cloud(workdir: Path, ids: tuple[str, ...], **kw: Any
           ) -> Iterator[tuple[Runtime, str, int, dict[str, Any], subprocess.Popen[bytes]]]:
    """cloud_bench.worker_cloud with the trusted member whose badge the cases tap (TAP)."""
    with worker_cloud(workdir, ids, **kw) as cloud:
        rt = cloud[0]
        with rt.sessions.begin() as s:
            registry.create_member(s, rt.hasher, rt.now(), card=TAP["tok"], status="trusted")
        yield cloud


async def _open_loop(fakes: list[LightCase], rate: float, seconds: float, wait_s: float
                     ) -> tuple[int, list[float], int]:
    """Every case sends on schedule (rate in total) whatever is outstanding; waits for answers up
    to wait_s + 5 s. Returns (sent, latencies in ms of the answered, unanswered)."""
    lat: list[float] = []
    missing = 0
    sent = 0
    interval = len(fakes) / rate
    start = time.monotonic() + 0.2

    async def one(f: LightCase) -> None:
        nonlocal missing
        t0 = time.perf_counter()
        try:
            await f.request("req", dict(TAP), timeout=wait_s + 5)
            lat.append((time.perf_counter() - t0) * 1000)
        except TimeoutError:
            missing += 1

    async def case(n: int, f: LightCase) -> None:
        nonlocal sent
        due = start + interval * n / len(fakes)
        tasks = []
        while due < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(f)))
            sent += 1
            due += interval
        await asyncio.gather(*tasks)

    await asyncio.gather(*(case(n, f) for n, f in enumerate(fakes)))
    return sent, lat, missing


def capacity(cases: int = 40, seconds: float = 4.0, broker: str = "") -> dict[str, Any]:
    """Closed loop (every case sends its next request once the last is answered): the most one
    worker answers. broker: extra Mosquitto settings (e.g. max_inflight_messages, which bounds the
    worker's batches now that it acknowledges messages only once decided)."""
    ids = tuple(f"t{i}" for i in range(cases))
    with tempfile.TemporaryDirectory() as d, _cloud(Path(d), ids, broker=broker) as (_rt, host, port, secrets, _p):
        fakes = light_cases(secrets, ids)
        lat, errors, elapsed = asyncio.run(_load(fakes, host, port, seconds, None))
    return {"per_second": round(len(lat) / elapsed, 1), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": len(errors), "broker": broker or "shipped"}


def _journal(rt: Runtime, kind: str) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Event).where(Event.kind == kind)) or 0)


def overload(factor: float, capacity: float, *, cases: int = 200, seconds: float = 6.0,
             wait_s: float = 2.0) -> dict[str, Any]:
    ids = tuple(f"t{i}" for i in range(cases))
    with tempfile.TemporaryDirectory() as d, \
            _cloud(Path(d), ids, req_wait_s=wait_s) as (rt, host, port, secrets, proc):
        fakes = light_cases(secrets, ids)

        rss0 = 0

        async def run() -> tuple[int, list[float], int]:
            nonlocal rss0
            await connect_all(fakes, host, port)
            rss0 = _rss_kib(proc.pid, "VmRSS")
            out = await _open_loop(fakes, factor * capacity, seconds, wait_s)
            await asyncio.gather(*(f.close() for f in fakes))
            return out

        sent, lat, missing = asyncio.run(run())
        peak = _rss_kib(proc.pid)
        allowed, late = _journal(rt, "allow"), _journal(rt, "late")
    on_time = [x for x in lat if x <= wait_s * 1000]
    return {"offered_per_s": round(factor * capacity), "factor": factor, "sent": sent,
            "answered_in_time": len(on_time), "answered_late": len(lat) - len(on_time), "unanswered": missing,
            "journaled_late": late, "shed": missing - late, "allow_rows": allowed,
            "in_time_per_s": round(len(on_time) / seconds), "p50_ms": pct(lat, 50) if lat else None,
            "p99_ms": pct(lat, 99) if lat else None, "worker_rss_kib": rss0, "worker_peak_rss_kib": peak}


def db_outage(outage_s: float = 10.0, cases: int = 40, before_s: float = 3.0, after_s: float = 12.0
              ) -> dict[str, Any]:
    with PgServer.start() as pg, tempfile.TemporaryDirectory() as d:
        url = pg.url(pg.create_database())
        ids = tuple(f"o{i}" for i in range(cases))
        with _cloud(Path(d), ids, database_url=url) as (rt, host, port, secrets, _proc):
            log = Path(d) / "worker.log"
            fakes = light_cases(secrets, ids)
            res: dict[str, Any] = {}
            ev_sent: list[str] = []
            ev_acked: set[str] = set()
            lat: list[tuple[float, float | None]] = []  # (sent at, answered after s or None)

            async def one_req(f: LightCase, t: float) -> None:
                try:
                    await f.request("req", dict(TAP), timeout=8)
                    lat.append((t, time.monotonic() - t))
                except TimeoutError:
                    lat.append((t, None))

            async def one_evt(f: LightCase, n: int) -> None:
                eid = f"{f.case}-{n}"
                ev_sent.append(eid)
                body = {"t": "evts", "evts": [{"i": eid, "k": "opened", "ts": int(time.time())}]}
                for _ in range(4):  # a case keeps its events until acknowledged, and resends them
                    try:
                        ack = await f.request("evt", dict(body), timeout=8)
                        ev_acked.update(ack["ids"])
                        return
                    except TimeoutError:
                        continue

            async def case(f: LightCase, stop: float) -> None:
                await asyncio.sleep(random.random())
                tasks, n = [], 0
                while time.monotonic() < stop:
                    t = time.monotonic()
                    tasks += [asyncio.create_task(one_req(f, t)), asyncio.create_task(one_evt(f, n))]
                    n += 1
                    await asyncio.sleep(1.0)
                await asyncio.gather(*tasks)

            async def outage(t0: float) -> None:
                await asyncio.sleep(before_s)
                size0 = log.stat().st_size
                res["down_at"] = time.monotonic()
                await asyncio.to_thread(pg.stop)
                await asyncio.sleep(outage_s)
                await asyncio.to_thread(pg._start)
                res["up_at"] = time.monotonic()
                res["log_bytes_during_outage"] = log.stat().st_size - size0

            async def run() -> None:
                await connect_all(fakes, host, port)
                t0 = time.monotonic()
                stop = t0 + before_s + outage_s + after_s
                await asyncio.gather(outage(t0), *(case(f, stop) for f in fakes))
                await asyncio.gather(*(f.close() for f in fakes))

            asyncio.run(run())
            down, up = res["down_at"], res["up_at"]
            during = [a for t, a in lat if down <= t < up]
            text = log.read_text(errors="replace")
    return {"outage_s": outage_s, "messages_per_s": 2 * cases, "events_sent": len(ev_sent),
            "events_lost": len(set(ev_sent) - ev_acked), "requests_sent_during_outage": len(during),
            "answered_in_time": sum(1 for a in during if a is not None),
            "given_up_by_the_case": sum(1 for a in during if a is None),
            "requests_lost_outside_outage": sum(1 for t, a in lat if a is None and not down <= t < up + 1),
            "log_bytes_during_outage": res["log_bytes_during_outage"],
            "log_lines_unavailable": text.count("database unavailable"), "log_lines_back": text.count("database back"),
            "tracebacks": text.count("Traceback")}


def scaling(cases: int = 80, seconds: float = 8.0, stores: int = 10) -> dict[str, Any]:
    """One worker against two on a shared subscription, over PostgreSQL (docs/cloud.md "Scaling
    out"): closed-loop token verifications from `cases` LightCases spread over `stores` stores,
    each case tapping its own trusted member's card (one store and one member for all would make
    their rate-counter rows, which every batch updates, the bottleneck: no fleet has that), each
    configuration on a fresh database of the same server. Per configuration: answered/s, p50/p99, and CPU seconds per 1,000
    answered per component (each worker's event loop and deciding threads, the broker, PostgreSQL's
    server and backends, the load generator); and the throughput ratio of two to one. The server
    is the tests' throwaway cluster (tests/cloud/pgserver.py: fsync off), so its commits cost CPU
    but no disk wait."""
    out: dict[str, Any] = {}
    where = [(f"s{i % stores}", f"t{i}") for i in range(cases)]
    with PgServer.start() as pg:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        for n in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                out[f"workers_{n}"] = _shared(Path(d), pg.url(pg.create_database()), where, n, seconds, postmaster)
    one, two = out["workers_1"]["per_second"], out["workers_2"]["per_second"]
    out["ratio_2_to_1"] = round(two / one, 2) if one else None
    return out


def _shared(workdir: Path, url: str, where: list[tuple[str, str]], workers: int, seconds: float, postmaster: int
            ) -> dict[str, Any]:
    rt = build(Settings(data_dir=workdir / "data", admin_token=SecretStr("t0ken"), database_url=url))
    secrets: dict[str, registry.CaseSecrets] = {}
    try:
        with rt.sessions.begin() as s:
            for store in sorted({st for st, _ in where}):
                registry.create_store(s, store, rt.now())
            for store, case in where:
                secrets[case] = registry.register_case(s, store, case, rt.now())[1]
                registry.create_member(s, rt.hasher, rt.now(), card=f"c{case}", status="trusted")
    finally:
        rt.close()
    logins = [(f"worker.b{n}", f"bench-worker-{n}-secret") for n in range(workers)]
    entries = [(u, brokerfiles.password_hash(pw)) for u, pw in logins]
    entries += [(c.mqtt_username, brokerfiles.password_hash(c.mqtt_password)) for c in secrets.values()]
    acl = brokerfiles.acl_file(where, [u for u, _ in logins])
    with contextlib.ExitStack() as stack:
        host, port = stack.enter_context(start_mosquitto(workdir / "broker", passwd=brokerfiles.passwd_file(entries),
                                                         acl=acl))
        procs = [stack.enter_context(worker_process(workdir, host, port, name=user, database_url=url,
                                                    mqtt_username=user, mqtt_password=pw, mqtt_client_id=user,
                                                    mqtt_share_group="bench", **NO_LIMITS))
                 for user, pw in logins]
        meter = CpuMeter([p.pid for p in procs], broker_pid(workdir), postmaster)
        fakes = [LightCase(st, c, bytes.fromhex(secrets[c].key_hex), secrets[c].mqtt_username,
                           secrets[c].mqtt_password) for st, c in where]
        lat, errors, elapsed = asyncio.run(_load(fakes, host, port, seconds, None, meter, [f"c{c}" for _, c in where]))
    return {"per_second": round(len(lat) / elapsed, 1), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": len(errors), **meter.figures(len(lat))}


def main() -> dict[str, Any]:
    cap = capacity()
    capacity_per_s = cap["per_second"]
    out: dict[str, Any] = {"capacity": cap}
    for factor in (1.5, 2.4):
        out[f"overload_{factor}x"] = overload(factor, capacity_per_s)
    out["db_outage"] = db_outage()
    sc = scaling()
    out["scaling"] = {"ratio_2_to_1": sc.pop("ratio_2_to_1"),
                      **{f"{cfg}_{k}": v for cfg, res in sc.items() for k, v in res.items()}}
    return out


if __name__ == "__main__":
    cap = capacity()
    print("capacity", cap, flush=True)
    for factor in (1.5, 2.4):
        print(f"overload_{factor}x", overload(factor, cap["per_second"]), flush=True)
    print("db_outage", db_outage(), flush=True)
    print("scaling", scaling(), flush=True)
