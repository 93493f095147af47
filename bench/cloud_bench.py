"""Cloud figures for `make bench` (issue: cloud unlocks), on loopback with a real Mosquitto:

- tap-to-open latency: a trusted member's card presented to the sim case -> request signed and
  sent -> broker -> cloud worker -> signed allow -> coil energized, from the firmware's own
  timestamps (ms), p50/p95/p99 over N unlocks;
- cloud throughput: one worker process (`python -m casecloud --worker-only`, as deployed) and many
  light simulated cases (each with its own broker login, the firmware codec under CPython and a
  minimal asyncio MQTT client), sending token verifications back to back (the most one worker
  does) or at a steady rate (the latency at that load); verifications answered per second,
  p50/p95/p99.

Run: `.venv/bin/python -m bench.cloud_bench` (from the repository root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench import proc_cpu
from bench.lightcase import LightCase, connect_all, light_cases
from casecloud import registry
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from sim.demo import demo_config
from sim.process import SimCase
from tests.e2e.conftest import (
    SERVICE_PASSWORD,
    SERVICE_USER,
    WORKER_PASSWORD,
    WORKER_USER,
    broker_files_ctx,
    cloud_env,
    register_shop,
)

NO_LIMITS: dict[str, Any] = {"rate_member": 10**9, "rate_case": 10**9, "rate_store": 10**9, "rate_phone": 10**9}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 1)


def tap_to_open(n: int = 200, fw_dir: Path | None = None, worker: str = "process") -> dict[str, Any]:
    """Request-to-coil on loopback: from the firmware's timestamp of the tap (the request is
    signed and published in the same step) to its timestamp of the coil energizing, through the
    broker and the cloud worker: its own process as deployed (worker="process"), or a thread of
    this process sharing the GIL with the bench's own threads ("thread"). fw_dir: another
    firmware tree (e.g. an older commit's) to compare."""
    with tempfile.TemporaryDirectory() as d, _cloud(Path(d), ("c1",), worker) as (rt, host, port, secrets, _):
        with rt.sessions.begin() as s:
            registry.create_member(s, rt.hasher, rt.now(), card="04a1b2c3d4", status="trusted")
        sec = secrets["c1"]
        cfg = demo_config()
        cfg.update(store_id="s1", case_id="c1", unlock_ms=500, pull_in_ms=100, duty_budget_ms=60000,
                   duty_window_s=10)
        cfg["cloud"] = {"host": host, "port": port, "user": sec.mqtt_username, "password": sec.mqtt_password,
                        "key": sec.key_hex, "keepalive": 5, "request_timeout_s": 4}
        with SimCase(Path(d) / "case", cfg, fw_dir=fw_dir) as case:
            cl = case.client()
            cl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="synced")
            cl.call("watch")
            lat: list[float] = []
            for _ in range(n):
                # The lock refuses more than 32 grants in one duty window (lockcase/lock.py treats
                # that as abuse), so taps are paced to fewer than 32 per 10 s whatever the latency.
                tapped = time.monotonic()
                t0 = cl.call("tap", uid="04a1b2c3d4", src="nfc")["t"]
                while True:
                    m = cl.stream.get(timeout=10)
                    if m.get("ev") == "out" and m["name"] == "lock" and m["value"]:
                        lat.append(m["t"] - t0)
                        break
                    if m.get("ev") == "event" and m.get("type") in ("duty_limited", "denied"):
                        raise RuntimeError(f"tap {len(lat)} did not open: {m}")
                    if time.monotonic() - tapped > 10:
                        raise TimeoutError(f"tap {len(lat)}: no unlock within 10 s")
                # Open and close the door: the coil drops and the case is ready for the next tap.
                cl.call("door", open=True)
                cl.wait_for(lambda s: s["lock"] == "open", what="open")
                cl.call("door", open=False)
                cl.wait_for(lambda s: s["lock"] == "locked", what="closed")
                while not cl.stream.empty():
                    cl.stream.get_nowait()
                time.sleep(max(0.0, tapped + 0.4 - time.monotonic()))
            cl.close()
    return {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "max_ms": max(lat)}


_DELIVERY_CASE = """
import asyncio, json, sys, time
from lockcase.uplink.link import Link
cfg = json.loads(sys.argv[1])
base = "lockcase/v1/s1/c1/"
link = Link(cfg, {"presence": base + "presence"}, (base + "cmd",), log=lambda *a: None)
def on_msg(topic, msg):
    print("D", (time.time_ns() - int(msg.decode())) // 1000)
link.bind(on_msg, lambda: print("UP"))
async def main():
    asyncio.create_task(link.run())
    while True:  # the case's app loop beside it: a step every 10 ms
        await asyncio.sleep_ms(10)
asyncio.run(main())
"""


def link_delivery(n: int = 300, fw_dir: Path | None = None) -> dict[str, Any]:
    """The case's side of the latency alone: a message published to a case's `cmd` topic on
    loopback -> Mosquitto -> the firmware's Link (under the MicroPython Unix port, with an app loop
    stepping beside it) -> its handler, in ms (the same host clock at both ends). Messages are
    spaced 20-60 ms apart at random, so they land anywhere in the app loop's tick."""
    import random
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sim.process import REPO, micropython

    with tempfile.TemporaryDirectory() as d:
        st = Settings(data_dir=Path(d) / "data", admin_token=SecretStr("t0ken"))
        rt = build(st)
        sec = register_shop(rt, ("c1",))["c1"]
        rt.engine.dispose()
        with broker_files_ctx(Path(d), {"c1": sec}) as (host, port):
            script = Path(d) / "delivery.py"
            script.write_text(_DELIVERY_CASE)
            cfg = {"host": host, "port": port, "user": sec.mqtt_username, "password": sec.mqtt_password,
                   "keepalive": 30}
            fw = str(fw_dir or REPO / "firmware")
            env = dict(os.environ, MICROPYPATH=":".join([".frozen", fw, str(REPO), str(REPO / "build" / "device-lib")]))
            proc = subprocess.Popen([micropython(), "-X", "heapsize=512k", str(script), __import__("json").dumps(cfg)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            lat: list[float] = []
            up = threading.Event()

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("UP"):
                        up.set()
                    elif line.startswith("D "):
                        lat.append(int(line[2:]) / 1000)

            threading.Thread(target=read, daemon=True).start()
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
            pub.username_pw_set(SERVICE_USER, SERVICE_PASSWORD)
            pub.connect(host, port)
            pub.loop_start()
            try:
                if not up.wait(20):
                    raise TimeoutError("the case's link did not come up")
                time.sleep(0.5)
                for _ in range(n):
                    pub.publish("lockcase/v1/s1/c1/cmd", str(time.time_ns()), qos=1)
                    time.sleep(random.uniform(0.02, 0.06))
                deadline = time.monotonic() + 5
                while len(lat) < n and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                pub.loop_stop()
                pub.disconnect()
                proc.terminate()
                proc.wait(10)
    if not lat:
        raise RuntimeError("no message reached the case")
    return {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "max_ms": round(max(lat), 1)}


@contextlib.contextmanager
def worker_process(workdir: Path, host: str, port: int, name: str = "worker", **settings: Any
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m casecloud --worker-only` on the database in workdir/data: one worker, as deployed.
    Its log: workdir/<name>.log."""
    env = dict(os.environ, CASECLOUD_DATA_DIR=str(workdir / "data"), CASECLOUD_MQTT_HOST=host,
               CASECLOUD_MQTT_PORT=str(port), CASECLOUD_MQTT_USERNAME=WORKER_USER,
               CASECLOUD_MQTT_PASSWORD=WORKER_PASSWORD, CASECLOUD_ADMIN_TOKEN="t0ken",
               CASECLOUD_MQTT_CLIENT_ID="bench")
    env.update({f"CASECLOUD_{k.upper()}": str(v) for k, v in settings.items()})
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "casecloud", "--worker-only"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@contextlib.contextmanager
def worker_cloud(workdir: Path, ids: tuple[str, ...], *, database_url: str | None = None, broker: str = "",
                 **settings: Any) -> Iterator[tuple[Runtime, str, int, dict[str, Any], subprocess.Popen[bytes]]]:
    """Store s1 with these cases, a Mosquitto with their logins (broker: extra Mosquitto settings)
    and one worker process with no rate limits (settings: more of its settings). Yields (runtime
    of this process, broker host, port, the cases' secrets, the worker process)."""
    rt = build(Settings(data_dir=workdir / "data", admin_token=SecretStr("t0ken"), database_url=database_url))
    secrets = register_shop(rt, ids)
    if database_url:
        settings["database_url"] = database_url
    try:
        with broker_files_ctx(workdir, secrets, extra=broker) as (host, port), \
                worker_process(workdir, host, port, **NO_LIMITS, **settings) as proc:
            yield rt, host, port, secrets, proc
    finally:
        rt.engine.dispose()


@contextlib.contextmanager
def _cloud(workdir: Path, ids: tuple[str, ...], worker: str
           ) -> Iterator[tuple[Runtime, str, int, dict[str, Any], int | None]]:
    """Yields (runtime, broker host, port, the cases' secrets, the worker's pid or None)."""
    if worker == "thread":  # the worker in this process (shares the GIL with the simulated cases)
        with cloud_env(workdir, ids, **NO_LIMITS) as env:
            yield env.rt, env.host, env.port, env.secrets, None
        return
    with worker_cloud(workdir, ids) as (rt, host, port, secrets, proc):
        yield rt, host, port, secrets, proc.pid


async def _load(fakes: list[LightCase], host: str, port: int, seconds: float, rate: float | None,
                meter: CpuMeter | None = None, cards: list[str] | None = None) -> tuple[list[float], list[str], float]:
    """cards: the trusted card each case taps (default: all the same, 0badge01)."""
    await connect_all(fakes, host, port)
    with meter or contextlib.nullcontext():
        return await _run_load(fakes, seconds, rate, cards or ["0badge01"] * len(fakes))


async def _run_load(fakes: list[LightCase], seconds: float, rate: float | None, cards: list[str]
                    ) -> tuple[list[float], list[str], float]:
    lat: list[float] = []
    errors: list[str] = []
    t_start = time.monotonic() + 0.2
    stop = t_start + seconds
    interval = len(fakes) / rate if rate else 0.0

    async def run(n: int, f: LightCase) -> None:
        due = t_start + interval * n / len(fakes)  # spread the cases over one interval
        while True:
            if due >= stop or time.monotonic() >= stop:
                return
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            due += interval
            t0 = time.perf_counter()
            try:
                rep = await f.request("req", {"t": "token", "tok": cards[n], "src": "nfc"})
            except TimeoutError:
                errors.append("timeout")
                return
            if rep["t"] != "allow":
                errors.append(rep["t"])
            lat.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(run(n, f) for n, f in enumerate(fakes)))
    elapsed = time.monotonic() - t_start
    await asyncio.gather(*(f.close() for f in fakes))
    return lat, errors, elapsed


class CpuMeter:
    """CPU seconds per component over a run, from /proc (bench/proc_cpu.py): each worker process's
    event loop (its main thread: MQTT, asyncio, shedding, publishing) apart from its other threads
    (deciding: checks, policy, database), the broker, PostgreSQL's server tree when given, and this
    process (the load generator)."""

    def __init__(self, workers: list[int], broker: int | None, postgres: int | None = None) -> None:
        self.workers, self.broker, self.postgres = workers, broker, postgres

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {"loadgen": time.process_time()}
        for n, pid in enumerate(self.workers):
            th = proc_cpu.threads(pid)
            out[f"worker{n}_loop"] = th.pop(pid, 0.0)
            out[f"worker{n}_decide"] = sum(th.values())
        if self.broker:
            out["broker"] = proc_cpu.process(self.broker)
        if self.postgres:
            out["postgres"] = proc_cpu.tree(self.postgres)
        return out

    def __enter__(self) -> CpuMeter:
        self._t0, self._c0 = time.monotonic(), self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        c1 = self._read()
        self.elapsed = time.monotonic() - self._t0
        self.cpu = {k: round(c1[k] - self._c0[k], 2) for k in c1}

    def figures(self, answered: int) -> dict[str, Any]:
        """CPU seconds per component, and per 1,000 answered requests; the loop's share of each
        worker's CPU."""
        out: dict[str, Any] = {f"cpu_s_{k}": v for k, v in self.cpu.items()}
        if answered:
            out.update({f"cpu_s_per_1000_{k}": round(v * 1000 / answered, 3) for k, v in self.cpu.items()})
        for n in range(len(self.workers)):
            loop, dec = self.cpu[f"worker{n}_loop"], self.cpu[f"worker{n}_decide"]
            out[f"worker{n}_loop_share"] = round(loop / (loop + dec), 2) if loop + dec else None
        return out


def broker_pid(workdir: Path) -> int | None:
    """The benches' Mosquitto (tests/cloud/conftest.start_mosquitto writes its pid beside its log)."""
    try:
        return int((workdir / "broker" / "mosquitto.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def throughput(cases: int = 40, seconds: float = 10.0, *, rate: float | None = None,
               worker: str = "process") -> dict[str, Any]:
    """Token verifications by `cases` simulated cases (`LightCase`), each with its own broker login.

    rate=None: every case sends its next request as soon as the last is answered (closed loop: how
    much the worker can do; latency then grows with the number of cases, by Little's law).
    rate=R: the cases together send R requests a second at a steady pace (open loop: the latency
    at that load; a case whose previous request is not answered yet waits for it, as a real case
    does, so use enough cases that each sends a few a second).
    worker: "process" runs `python -m casecloud --worker-only` (one worker, as deployed);
    "thread" runs it inside this process, where it shares the GIL with the simulated cases.
    """
    ids = tuple(f"t{i}" for i in range(cases))
    with tempfile.TemporaryDirectory() as d, _cloud(Path(d), ids, worker) as (rt, host, port, secrets, pid):
        with rt.sessions.begin() as s:
            registry.create_member(s, rt.hasher, rt.now(), card="0badge01", status="trusted")
        fakes = light_cases(secrets, ids)
        meter = CpuMeter([pid] if pid else [], broker_pid(Path(d)))
        lat, errors, elapsed = asyncio.run(_load(fakes, host, port, seconds, rate, meter))
    return {"cases": cases, "worker": worker, "offered_per_s": rate, "verifications": len(lat),
            "per_second": round(len(lat) / elapsed, 1), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99), "mean_ms": round(statistics.mean(lat), 1), "errors": len(errors),
            **meter.figures(len(lat))}


if __name__ == "__main__":
    print("broker-to-case delivery", link_delivery(300))
    print("tap-to-open", tap_to_open(50))
    print("throughput, back to back", throughput(40, 10))
    print("throughput, 1000/s offered", throughput(200, 10, rate=1000))
