"""The fleet simulator (issue 15): the cloud as deployed, at fleet size, on this machine.

`make fleet` (`.venv/bin/python -m bench.fleet`, options below) starts:

- PostgreSQL (a private cluster, tests/cloud/pgserver.py) with S stores of `cases_per_store`
  cases, registered through casecloud.registry as the admin API does;
- Mosquitto with the shipped configuration (cloud/broker/casecloud.conf), its password and ACL
  files written from the case table by casecloud.brokersync, one login per case and per cloud
  process (worker.w1..wN, api.a1);
- N worker processes (`python -m casecloud --worker-only`) on one shared subscription
  (`CASECLOUD_MQTT_SHARE_GROUP`) and one API process (`--no-worker`), as docs/cloud.md "Scaling
  out" describes;
- the cases: shards of bench/fleet_case.py, each a process with thousands of virtual cases (their
  own broker logins and TCP connections, the firmware's codec, greetings, heartbeats, journal
  events acknowledged, shopper requests at a set rate, commands acknowledged), and app unlocks
  through the HTTP API from this process.

Then it measures: the initial connect and sync; a steady window (latency percentiles per message
kind, throughput, errors, CPU seconds and peak memory per component, from /proc: fleet_proc.py);
and a whole-fleet reconnect (the broker restarted on its port): how long until every case is
synced again, and the shopper requests' latency meanwhile. Nothing here asserts a time; the
report is printed and written to build/fleet.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bench.fleet_proc import Component, Monitor
from casecloud import broker as brokerfiles
from casecloud import registry
from casecloud.brokersync import ACL_FILE, PASSWD_FILE, SERVICE_FILE, BrokerSync
from casecloud.runtime import build
from casecloud.settings import Settings
from sim.process import free_port
from tests.cloud.conftest import mosquitto_binary, shipped_conf
from tests.cloud.helpers import stop, wait_listening
from tests.cloud.pgserver import PgServer

REPO = Path(__file__).resolve().parents[1]
SHARE_GROUP = "casecloud"
METRICS_TOKEN = "fleet-metrics-token"
# The workers' counters the report keeps (worker_metrics): what each took and decided, what its
# checks refused, the greetings it left unanswered as superseded, and its batches.
WORKER_COUNTERS = ("casecloud_messages_total", "casecloud_requests_total", "casecloud_rejected_total",
                   "casecloud_hellos_superseded_total", "casecloud_shed_total", "casecloud_late_total",
                   "casecloud_batch_size_count", "casecloud_batch_size_sum",
                   # how long a batch takes from taken to answered: whether a request waits behind bulk traffic
                   "casecloud_decision_seconds_count", "casecloud_decision_seconds_sum",
                   "casecloud_decision_seconds_bucket")
TRUSTED_CARD, UNKNOWN_CARD = "0f1ee701", "0badbad1"
# The policy's rate limits would refuse a fleet's worth of requests from a handful of members and
# numbers; raised, so that every request is decided the same way whatever the run's length (the
# refusals cost the same work: docs/cloud.md "Limits").
NO_LIMITS: dict[str, Any] = {"rate_member": 10**9, "rate_case": 10**9, "rate_store": 10**9, "rate_phone": 10**9}


@dataclass
class FleetConfig:
    cases: int = 10_000
    workers: int = 2
    rate: float = 500.0  # shopper requests/s, the whole fleet (open loop)
    closed: int = 0  # > 0: instead of `rate`, this many cases send back to back (saturation)
    events: float | None = None  # event batches/s (granted, opened, closed); None: one per case per 100 s
    app_rate: float = 5.0  # app unlocks/s through the HTTP API
    beat_s: float = 60.0
    warmup_s: float = 5.0
    steady_s: float = 30.0
    restart: bool = True  # restart the broker: the whole fleet reconnects
    reconnect_limit_s: float = 180.0
    sync_limit_s: float = 0.0  # how long the initial connect and sync may take; 0: 120 s + 1 s per 100 cases
    shards: int = 0  # simulator processes; 0: one per 5,000 cases
    cases_per_store: int = 20
    # connects/s of the whole fleet at the start (a fleet powering up over minutes, so the steady
    # window finds it synced; the broker restart is the storm: docs/scaling.md)
    ramp_per_s: float = 100.0
    req_wait_s: float = 8.0  # the cases' request_timeout_s (and the cloud's req_wait_s)
    seed: int = 1

    def event_rate(self) -> float:
        return self.events if self.events is not None else self.cases / 100

    def shard_count(self) -> int:
        return self.shards or max(1, math.ceil(self.cases / 5000))


# --- numbers -------------------------------------------------------------------------------------

def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 1)


def latency(samples: list[list[float]], t0: float, t1: float) -> dict[str, Any]:
    """Samples [t_sent, ms] sent within [t0, t1): ms -1 never answered (given up after the cases'
    wait), -2 lost with its connection (the broker went away while it waited)."""
    got = [ms for t, ms in samples if t0 <= t < t1 and ms >= 0]
    lost = sum(1 for t, ms in samples if t0 <= t < t1 and ms == -1)
    dropped = sum(1 for t, ms in samples if t0 <= t < t1 and ms == -2)
    return {"n": len(got), "unanswered": lost, "lost_with_connection": dropped,
            "p50_ms": pct(got, 50), "p90_ms": pct(got, 90),
            "p99_ms": pct(got, 99), "max_ms": round(max(got), 1) if got else None}


# --- the stack -----------------------------------------------------------------------------------

@dataclass
class Stack:
    workdir: Path
    host: str
    port: int
    api_url: str
    cases: list[tuple[str, str, str, str]]  # store, case, key hex, broker password
    app_token: str
    broker_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_ops: dict[str, int] = field(default_factory=dict)  # worker name -> its ops port
    pg: PgServer | None = None
    broker_ctx: Any = None

    def broker_pid(self) -> list[int]:
        try:
            return [int((self.workdir / "broker" / "mosquitto.pid").read_text().strip())]
        except (OSError, ValueError):
            return []

    def start_broker(self) -> None:
        self.broker_ctx = mosquitto(self.workdir / "broker", self.broker_dir, self.port or None)
        self.host, self.port = self.broker_ctx.__enter__()

    def stop_broker(self) -> None:
        if self.broker_ctx is not None:
            self.broker_ctx.__exit__(None, None, None)
            self.broker_ctx = None


@contextlib.contextmanager
def mosquitto(workdir: Path, files_dir: Path, port: int | None) -> Iterator[tuple[str, int]]:
    """Mosquitto with the shipped configuration and brokersync's files, as tests/cloud/conftest.py's
    start_mosquitto runs it but logging what a production broker logs (connections, errors), not
    every packet: at fleet size `log_type all` writes about 200 bytes a message and costs the
    broker CPU a deployment does not spend."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [f"listener {port} 127.0.0.1", f"log_dest file {workdir / 'mosquitto.log'}",
             "log_type error", "log_type warning", "log_type notice", f"pid_file {workdir / 'mosquitto.pid'}"]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to 'mosquitto' and cannot read our files
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n" + shipped_conf(workdir, passwd_file=files_dir / PASSWD_FILE,
                                                           acl_file=files_dir / ACL_FILE))
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        # it reads its ACL for about 8 s at 10,000 cases
        wait_listening(proc, port, 120, lambda: f"mosquitto exited {proc.returncode}: see {conf}")
        yield "127.0.0.1", port
    finally:
        stop(proc, 10)


def _service_logins(workers: int) -> dict[str, str]:
    logins = {f"worker.w{k}": f"fleet-worker-{k}-secret" for k in range(1, workers + 1)}
    logins["api.a1"] = "fleet-api-secret"
    return logins


def _cloud_env(st: Settings, url: str, host: str, port: int, **more: Any) -> dict[str, str]:
    env = dict(os.environ, CASECLOUD_DATA_DIR=str(st.data_dir), CASECLOUD_DATABASE_URL=url,
               CASECLOUD_MQTT_HOST=host, CASECLOUD_MQTT_PORT=str(port), CASECLOUD_ADMIN_TOKEN="fleet-admin",
               CASECLOUD_REQ_WAIT_S=str(st.req_wait_s))
    env.update({f"CASECLOUD_{k.upper()}": str(v) for k, v in {**NO_LIMITS, **more}.items()})
    return env


def _spawn(name: str, args: list[str], env: dict[str, str], workdir: Path, stdin: int | None = None,
           stdout: int | None = None) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(args, env=env, stdin=stdin, stdout=log if stdout is None else stdout, stderr=log,
                                cwd=REPO)
    finally:
        log.close()  # the child has its own descriptor


@contextlib.contextmanager
def stack(cfg: FleetConfig, workdir: Path, log: Any = print) -> Iterator[Stack]:
    """PostgreSQL, Mosquitto, cfg.workers workers and one API process, with cfg.cases cases."""
    with PgServer.start() as pg, contextlib.ExitStack() as exits:
        url = pg.url(pg.create_database())
        st = Settings(data_dir=workdir / "data", database_url=url, admin_token=SecretStr("fleet-admin"),
                      req_wait_s=cfg.req_wait_s, **NO_LIMITS)
        rt = build(st)  # migrations, and the server secret and key-encryption key files the processes share
        t0 = time.monotonic()
        cases: list[tuple[str, str, str, str]] = []
        with rt.sessions.begin() as s:
            for n in range(math.ceil(cfg.cases / cfg.cases_per_store)):
                registry.create_store(s, f"s{n}", rt.now(), name=f"Store {n}")
            for n in range(cfg.cases):
                store = f"s{n // cfg.cases_per_store}"
                _, sec = registry.register_case(s, store, f"c{n}", rt.now())
                cases.append((store, f"c{n}", sec.key_hex, sec.mqtt_password))
            registry.create_member(s, rt.hasher, rt.now(), card=TRUSTED_CARD, status="trusted")
            _, app_token = registry.create_member(s, rt.hasher, rt.now(), status="member")
        log(f"registered {cfg.cases} cases in {time.monotonic() - t0:.1f} s")
        logins = _service_logins(cfg.workers)
        broker_dir = workdir / "brokerfiles"
        broker_dir.mkdir(parents=True, exist_ok=True)
        (broker_dir / SERVICE_FILE).write_text(brokerfiles.passwd_file(
            (u, brokerfiles.password_hash(pw)) for u, pw in logins.items()))
        BrokerSync(st.model_copy(update={"broker_dir": broker_dir, "broker_pid_file": None}), rt.sessions).sync()
        rt.engine.dispose()
        sk = Stack(workdir, "127.0.0.1", 0, "", cases, app_token, broker_dir, pg=pg)
        sk.start_broker()
        exits.callback(sk.stop_broker)
        py = sys.executable
        for k in range(1, cfg.workers + 1):
            env = _cloud_env(st, url, sk.host, sk.port, mqtt_username=f"worker.w{k}",
                             mqtt_password=logins[f"worker.w{k}"], mqtt_client_id=f"fleet-w{k}",
                             mqtt_share_group=SHARE_GROUP)
            ops = sk.worker_ops[f"worker{k}"] = free_port()  # its /metrics, read at the end (worker_metrics)
            env.update(CASECLOUD_OPS_PORT=str(ops), CASECLOUD_METRICS_TOKEN=METRICS_TOKEN)
            sk.procs[f"worker{k}"] = _spawn(f"worker{k}", [py, "-m", "casecloud", "--worker-only"], env, workdir)
        api_port = free_port()
        env = _cloud_env(st, url, sk.host, sk.port, mqtt_api_username="api.a1", mqtt_api_password=logins["api.a1"],
                         mqtt_client_id="fleet-api", api_port=api_port, log_level="warning")
        sk.procs["api"] = _spawn("api", [py, "-m", "casecloud", "--no-worker"], env, workdir)
        sk.api_url = f"http://127.0.0.1:{api_port}"
        try:
            _wait_healthy(sk)
            yield sk
        finally:
            for p in sk.procs.values():
                p.terminate()
            for p in sk.procs.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _wait_healthy(sk: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, p in sk.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited {p.returncode}: see {sk.workdir / (name + '.log')}")
        try:
            if httpx.get(sk.api_url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not become healthy: see {sk.workdir / 'api.log'}")
        time.sleep(0.2)


# --- the simulator's shards ----------------------------------------------------------------------

class ShardProc:
    """A bench/fleet_case.py process and what it last said."""

    def __init__(self, n: int, spec: dict[str, Any], workdir: Path) -> None:
        self.n = n
        self.cases = len(spec["cases"])
        env = dict(os.environ, PYTHONPATH=":".join([str(REPO), str(REPO / "firmware")]))
        self.proc = _spawn(f"shard{n}", [sys.executable, "-m", "bench.fleet_case"], env, workdir,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.status: dict[str, Any] = {"connected": 0, "synced": 0, "t": 0.0}
        self.timeline: list[tuple[float, int, int]] = []  # (t, connected, synced) of every status line
        self.result: dict[str, Any] | None = None
        self.got_result = threading.Event()
        self._send(json.dumps(spec))
        threading.Thread(target=self._read, daemon=True, name=f"shard{n}").start()

    def _send(self, line: str) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def command(self, cmd: str) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._send(cmd)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg["ev"] == "status":
                self.status = msg
                self.timeline.append((msg["t"], msg["connected"], msg["synced"]))
            elif msg["ev"] == "result":
                self.result = msg
                self.got_result.set()

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"simulator shard {self.n} exited {self.proc.returncode}")


def _mix() -> list[list[Any]]:
    """The shoppers: 70% a trusted member's card (allow), 15% an unknown card (deny), 15% a phone
    number typed (a code texted: challenge)."""
    mix: list[list[Any]] = [[0.70, {"t": "token", "tok": TRUSTED_CARD, "src": "nfc"}],
                            [0.15, {"t": "token", "tok": UNKNOWN_CARD, "src": "nfc"}]]
    mix += [[0.015, {"t": "phone", "num": f"20255501{n:02d}"}] for n in range(10)]
    return mix


def timeline(shards: list[ShardProc], t0: float, t1: float, step: float = 5.0) -> list[list[float]]:
    """[s after t0, cases connected, cases synced] every `step` s from t0 to t1, from the shards'
    status lines (each shard's last line before that moment)."""
    out = []
    times = [t0 + k * step for k in range(int((t1 - t0) // step) + 1)]
    for t in [*times, t1] if not times or times[-1] < t1 else times:
        conn = sync = 0
        for s in shards:
            last = [x for x in s.timeline if x[0] <= t]
            if last:
                conn += last[-1][1]
                sync += last[-1][2]
        out.append([round(t - t0, 1), conn, sync])
    return out


def _wait(shards: list[ShardProc], pred: Any, timeout: float, what: str, since: float = 0.0) -> float:
    """Poll the shards' status lines until pred(total connected, total synced) holds on lines
    written after `since`; returns the monotonic time of the line that made it true. Raises
    TimeoutError after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        for s in shards:
            s.check()
        st = [s.status for s in shards]
        if all(x["t"] > since for x in st) and pred(sum(x["connected"] for x in st), sum(x["synced"] for x in st)):
            return max(x["t"] for x in st)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {sum(x['synced'] for x in st)} synced after {timeout:.0f} s")
        time.sleep(0.1)


class PgWaits:
    """What the database's sessions are doing, sampled every every_s (pg_stat_activity): how many
    run a statement, how many of those wait for a lock another transaction holds (two workers
    updating one case's row), how many sit idle inside a transaction."""

    def __init__(self, pg: PgServer, every_s: float = 0.5) -> None:
        self.pg, self.every_s = pg, every_s
        self.samples: list[tuple[float, int, int, int]] = []  # (t, active, waiting on a lock, idle in transaction)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pg-waits")

    def _run(self) -> None:
        with contextlib.suppress(Exception), self.pg.connect() as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE state = 'active'),"
                    " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),"
                    " count(*) FILTER (WHERE state = 'idle in transaction')"
                    " FROM pg_stat_activity WHERE datname LIKE 'casecloud_%' AND pid <> pg_backend_pid()").fetchone()
                if row is not None:
                    self.samples.append((time.monotonic(), int(row[0]), int(row[1]), int(row[2])))
                self._stop.wait(self.every_s)

    def between(self, t0: float, t1: float) -> dict[str, Any]:
        xs = [x for x in self.samples if t0 <= x[0] < t1]
        if not xs:
            return {"samples": 0}
        return {"samples": len(xs), "active_mean": round(statistics.mean(x[1] for x in xs), 2),
                "lock_waits_mean": round(statistics.mean(x[2] for x in xs), 2),
                "lock_waits_max": max(x[2] for x in xs),
                "share_waiting_on_locks": round(sum(x[2] for x in xs) / max(1, sum(x[1] for x in xs)), 3),
                "idle_in_transaction_mean": round(statistics.mean(x[3] for x in xs), 2)}

    def __enter__(self) -> PgWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class AppUnlocks:
    """POST /v1/app/unlock at a steady rate from this process, each for a random case. At most
    POOL at a time: a shopper whose press would wait behind them is not queued (counted as
    `not_sent_busy`), so a slow cloud cannot pile up presses that outlive the run."""

    POOL = 16

    def __init__(self, url: str, token: str, cases: list[str], rate: float) -> None:
        self.url, self.token, self.cases, self.rate = url + "/v1/app/unlock", token, cases, rate
        self.samples: list[list[float]] = []  # [t_sent, ms] (-1: not ok)
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self.in_flight = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.POOL, thread_name_prefix="app")
        self._client = httpx.Client(timeout=30)
        self._thread = threading.Thread(target=self._run, daemon=True, name="app-unlocks")

    def _one(self, case: str) -> None:
        try:
            self._unlock(case)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _unlock(self, case: str) -> None:
        t0 = time.monotonic()
        try:
            r = self._client.post(self.url, json={"token": self.token, "case": case})
            ok = r.status_code == 200 and r.json().get("ok") is True
            why = str(r.status_code) if r.status_code != 200 else str(r.json().get("err"))
        except httpx.HTTPError as e:
            ok, why = False, type(e).__name__
        self.samples.append([t0, round((time.monotonic() - t0) * 1000, 2) if ok else -1])
        if not ok:
            with self._lock:
                self.errors[why] = self.errors.get(why, 0) + 1

    def _run(self) -> None:
        rng = random.Random(7)
        due = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                full = self.in_flight >= self.POOL
                if not full:
                    self.in_flight += 1
            if full:
                self.errors["not_sent_busy"] = self.errors.get("not_sent_busy", 0) + 1
            else:
                self._pool.submit(self._one, rng.choice(self.cases))
            due += 1 / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> AppUnlocks:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()


def scrape_worker(port: int) -> dict[str, float] | str:
    """A worker's counters of WORKER_COUNTERS from its /metrics, summed over their labels (a
    labelled one also per label set, as `name{label="v"}`); what went wrong, if the scrape failed."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                      timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as e:
        return f"not scraped: {e}"
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(r.text):
        for smp in fam.samples:
            if smp.name not in WORKER_COUNTERS:
                continue
            out[smp.name] = out.get(smp.name, 0.0) + smp.value
            if smp.labels:
                key = smp.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(smp.labels.items())) + "}"
                out[key] = smp.value
    return out


# --- the run -------------------------------------------------------------------------------------

def run(cfg: FleetConfig, workdir: Path | None = None, log: Any = print) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it: a socket a case
    if cfg.cases + 200 > hard:
        raise SystemExit(f"{cfg.cases} cases need {cfg.cases + 200} file descriptors; the hard limit is {hard}")
    with contextlib.ExitStack() as ex:
        if workdir is None:
            workdir = Path(ex.enter_context(tempfile.TemporaryDirectory(prefix="fleet-")))
        workdir.mkdir(parents=True, exist_ok=True)
        sk = ex.enter_context(stack(cfg, workdir, log))
        return _measure(cfg, sk, log)


def _measure(cfg: FleetConfig, sk: Stack, log: Any) -> dict[str, Any]:
    n_sh = cfg.shard_count()
    parts = [sk.cases[k::n_sh] for k in range(n_sh)]
    spec: dict[str, Any] = {"host": sk.host, "port": sk.port, "beat_s": cfg.beat_s, "req_wait_s": cfg.req_wait_s,
                            "mix": _mix(), "ramp_per_s": cfg.ramp_per_s / n_sh}
    shards: list[ShardProc] = []
    comps = [Component("broker", sk.broker_pid),
             *(Component(n, (lambda p=p: [p.pid]), tree=False) for n, p in sk.procs.items()),
             Component("postgresql", lambda: [_postmaster(sk)], tree=True)]
    try:
        t_start = time.monotonic()
        for k, part in enumerate(parts):
            rate: Any = {"closed": math.ceil(cfg.closed / n_sh)} if cfg.closed else cfg.rate / n_sh
            shards.append(ShardProc(k, {**spec, "cases": [list(c) for c in part], "rate": rate,
                                        "events": cfg.event_rate() / n_sh, "seed": cfg.seed + k}, sk.workdir))
        comps.append(Component("simulator", lambda: [s.proc.pid for s in shards]))
        comps.append(Component("orchestrator", lambda: [_self_pid()]))
        mon = Monitor(comps)
        assert sk.pg is not None
        waits = PgWaits(sk.pg)
        with mon, waits:
            try:
                t_synced = _wait(shards, lambda c, s: s == cfg.cases, cfg.sync_limit_s or 120 + cfg.cases / 100,
                                 "initial sync")
                log(f"{cfg.cases} cases connected and synced in {t_synced - t_start:.1f} s")
            except TimeoutError as e:  # reported; the run goes on with the cases that are synced
                t_synced = None
                log(f"{e}; going on")
            t_go = time.monotonic()
            for s in shards:
                s.command("go")
            with AppUnlocks(sk.api_url, sk.app_token, [c[1] for c in sk.cases], cfg.app_rate) as app:
                time.sleep(cfg.warmup_s)
                t_a, cpu_a = time.monotonic(), mon.snapshot()
                time.sleep(cfg.steady_s)
                t_b, cpu_b = time.monotonic(), mon.snapshot()
                log(f"steady window done ({cfg.steady_s:.0f} s)")
                t_kill = t_up = t_all = t_c = None
                cpu_c: dict[str, float] = {}
                if cfg.restart:
                    # What was sent in the window is answered (or given up) before the broker goes.
                    time.sleep(cfg.req_wait_s + 1)
                    mon.snapshot()  # the old broker's last CPU figure
                    t_kill = time.monotonic()
                    sk.stop_broker()
                    sk.start_broker()
                    t_up = time.monotonic()
                    try:
                        t_all = _wait(shards, lambda c, s: s == cfg.cases, cfg.reconnect_limit_s, "reconnect",
                                      since=t_up)
                        log(f"broker restarted: every case synced again {t_all - t_kill:.1f} s after the restart")
                    except TimeoutError as e:  # a figure not reached is reported, not raised
                        t_all = None
                        log(f"broker restarted: {e}")
                    time.sleep(2)
                    t_c, cpu_c = time.monotonic(), mon.snapshot()
            worker_metrics = {name: scrape_worker(port) for name, port in sk.worker_ops.items()}
            for s in shards:
                s.command("stop")
            for s in shards:
                if not s.got_result.wait(60):
                    raise TimeoutError(f"shard {s.n} sent no result")
            memory = {c.name: c.peak_kib for c in comps}
        results = [s.result for s in shards if s.result is not None]
        rep = _report(cfg, results, app, memory, t_start, t_synced, t_a, t_b, cpu_a, cpu_b, t_kill, t_up, t_all,
                      t_c, cpu_c)
        rep["database_sessions"] = {"initial_sync": waits.between(t_start, t_go), "steady": waits.between(t_a, t_b)}
        if t_kill is not None:
            rep["database_sessions"]["reconnect"] = waits.between(t_kill, t_c or time.monotonic())
        rep["worker_metrics"] = worker_metrics
        rep["initial_sync_timeline"] = timeline(shards, t_start, t_go)
        rep["initial_synced"] = rep["initial_sync_timeline"][-1][2]
        if t_kill is not None:
            rep["reconnect_timeline"] = timeline(shards, t_kill, t_c or time.monotonic())
        return rep
    finally:
        for s in shards:
            s.command("quit")
        for s in shards:
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def _self_pid() -> int:
    return os.getpid()


def _postmaster(sk: Stack) -> int:
    assert sk.pg is not None
    return int((sk.pg.data / "postmaster.pid").read_text().split()[0])


def _merge(results: list[dict[str, Any]], key: str) -> Any:
    first = results[0][key]
    if isinstance(first, dict) and all(isinstance(v, list) for v in first.values()):
        return {k: [x for r in results for x in r[key][k]] for k in first}
    if isinstance(first, dict):
        out: dict[str, int] = {}
        for r in results:
            for k, v in r[key].items():
                out[k] = out.get(k, 0) + v
        return out
    if isinstance(first, list):
        return [x for r in results for x in r[key]]
    return sum(r[key] for r in results)


def _report(cfg: FleetConfig, results: list[dict[str, Any]], app: AppUnlocks, memory: dict[str, int],
            t_start: float, t_synced: float | None, t_a: float, t_b: float, cpu_a: dict[str, float],
            cpu_b: dict[str, float], t_kill: float | None, t_up: float | None, t_all: float | None,
            t_c: float | None, cpu_c: dict[str, float]) -> dict[str, Any]:
    samples = _merge(results, "samples")
    counts = _merge(results, "counts")
    syncs = _merge(results, "syncs")
    window = t_b - t_a
    req = latency(samples["req"], t_a, t_b)
    cpu = {k: round(cpu_b[k] - cpu_a[k], 2) for k in cpu_b}
    answered = req["n"]
    rep: dict[str, Any] = {
        "config": asdict(cfg) | {"events": cfg.event_rate(), "shards": cfg.shard_count()},
        # None: not every case was synced within sync_limit_s (initial_synced says how many were)
        "initial_sync_s": round(t_synced - t_start, 1) if t_synced is not None else None,
        "initial_hello_time": latency(samples["hello"], t_start, t_synced + 1 if t_synced else t_a),
        "steady": {
            "window_s": round(window, 1),
            "requests_per_s": round(answered / window, 1),
            "latency": {"request_reply": req, "event_evtack": latency(samples["evt"], t_a, t_b),
                        "hello_time": latency(samples["hello"], t_a, t_b),
                        "app_unlock_http_ack": latency(app.samples, t_a, t_b)},
            "cpu_s": cpu,
            "cpu_util_pct": {k: round(100 * v / window, 1) for k, v in cpu.items()},
            "cpu_s_per_1000_requests": {k: round(1000 * v / answered, 3) for k, v in cpu.items()} if answered else {},
        },
        "peak_memory_kib": memory,
        "outcomes": _merge(results, "outcomes"),
        "counts": counts,
        "errors": {
            "requests_unanswered": sum(1 for _t, ms in samples["req"] if ms == -1),
            "requests_lost_with_connection": sum(1 for _t, ms in samples["req"] if ms == -2),
            "requests_answered_late": counts.get("rep_late", 0),
            "events_unacked": _merge(results, "events_unacked"),
            "rejected_by_cases": {k: v for k, v in counts.items() if k.startswith("rejected:")},
            "connect_failures": counts.get("connect_failed", 0),
            "app_unlock_errors": app.errors,
        },
        "events_made": _merge(results, "events_made"),
        "app_unlocks": len(app.samples),
        "requests_sent": len(samples["req"]),
    }
    if t_kill is not None and t_c is not None:
        resync = [b - t_kill for a, b in syncs if a >= t_kill]
        t_end = t_all if t_all is not None else t_c
        rep["reconnect"] = {
            "broker_restart_s": round((t_up or t_kill) - t_kill, 2),
            # None: not every case was synced again within reconnect_limit_s
            "all_synced_after_s": round(t_all - t_kill, 1) if t_all is not None else None,
            "limit_s": cfg.reconnect_limit_s,
            "cases_resynced": len(resync),
            "synced_after_p50_s": pct(resync, 50), "synced_after_p90_s": pct(resync, 90),
            "synced_after_p99_s": pct(resync, 99),
            "last_synced_after_s": round(max(resync), 1) if resync else None,
            "request_reply": latency(samples["req"], t_kill, t_end),
            "requests_per_s": round(latency(samples["req"], t_kill, t_end)["n"] / max(0.1, t_end - t_kill), 1),
            "hello_time": latency(samples["hello"], t_kill, t_end),
            "app_unlock_http_ack": latency(app.samples, t_kill, t_end),
            "cpu_s": {k: round(cpu_c[k] - cpu_b[k], 2) for k in cpu_c},
        }
    sim = results
    rep["simulator"] = {"shards": len(sim), "cpu_s_total": round(sum(r["cpu_s"] for r in sim), 1),
                        "peak_rss_kib_per_shard": [r["peak_rss_kib"] for r in sim]}
    rep["load_avg_1m_at_end"] = _loadavg()
    return rep


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def summary(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's headline figures as (name, value) rows."""
    st = rep["steady"]
    rows = [("cases", str(rep["config"]["cases"])), ("workers", str(rep["config"]["workers"])),
            ("initial connect+sync", f"{rep['initial_sync_s']} s ({rep['initial_synced']} synced)"),
            ("requests answered/s (steady)", str(st["requests_per_s"]))]
    for k, v in st["latency"].items():
        rows.append((f"{k} p50/p99 (n)", f"{v['p50_ms']} / {v['p99_ms']} ms ({v['n']}, {v['unanswered']} unanswered)"))
    for k, v in st["cpu_s"].items():
        rows.append((f"cpu {k}", f"{v} s ({st['cpu_util_pct'][k]}%, {st['cpu_s_per_1000_requests'].get(k)} s/1000 req)"))
    for k, v in rep["peak_memory_kib"].items():
        rows.append((f"peak memory {k}", f"{v / 1024:.0f} MiB"))
    if "reconnect" in rep:
        r = rep["reconnect"]
        rows.append(("reconnect: all synced after", f"{r['all_synced_after_s']} s (p50 {r['synced_after_p50_s']} s)"))
        q = r["request_reply"]
        rows.append(("reconnect: request p50/p99", f"{q['p50_ms']} / {q['p99_ms']} ms ({q['n']}, {q['unanswered']} unanswered)"))
    for phase, w in rep.get("database_sessions", {}).items():
        if w.get("samples"):
            rows.append((f"database sessions ({phase})", f"{w['active_mean']} active, {w['lock_waits_mean']} waiting on "
                         f"locks (max {w['lock_waits_max']}), {w['idle_in_transaction_mean']} idle in transaction"))
    rows.append(("errors", json.dumps(rep["errors"])))
    rows.append(("load average (1 min) at end", str(rep["load_avg_1m_at_end"])))
    return rows


def figures(rep: dict[str, Any], prefix: str = "fleet") -> dict[str, object]:
    """The report flattened for build/bench.json (bench/run.py)."""
    st = rep["steady"]
    out: dict[str, object] = {f"{prefix}_cases": rep["config"]["cases"], f"{prefix}_workers": rep["config"]["workers"],
                              f"{prefix}_offered_requests_per_s": rep["config"]["rate"],
                              f"{prefix}_initial_sync_s": rep["initial_sync_s"],
                              f"{prefix}_requests_per_s": st["requests_per_s"]}
    for kind, lat in st["latency"].items():
        for k in ("p50_ms", "p99_ms", "n", "unanswered"):
            out[f"{prefix}_{kind}_{k}"] = lat[k]
    for part, v in st["cpu_s_per_1000_requests"].items():
        out[f"{prefix}_cpu_s_per_1000_requests_{part}"] = v
    for part, v in rep["peak_memory_kib"].items():
        out[f"{prefix}_peak_memory_kib_{part}"] = v
    if "reconnect" in rep:
        rc = rep["reconnect"]
        out[f"{prefix}_reconnect_all_synced_s"] = rc["all_synced_after_s"]
        out[f"{prefix}_reconnect_request_p99_ms"] = rc["request_reply"]["p99_ms"]
        out[f"{prefix}_reconnect_requests_unanswered"] = rc["request_reply"]["unanswered"]
    out[f"{prefix}_errors"] = json.dumps(rep["errors"])
    out[f"{prefix}_load_avg_1m"] = rep["load_avg_1m_at_end"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.fleet", description="The fleet simulator (bench/fleet.py)")
    d = FleetConfig()
    for f in ("cases", "workers", "closed", "shards", "cases_per_store", "seed"):
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(d, f))
    for f in ("rate", "app_rate", "beat_s", "warmup_s", "steady_s", "reconnect_limit_s", "sync_limit_s", "ramp_per_s",
              "req_wait_s"):
        ap.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(d, f))
    ap.add_argument("--events", type=float, default=None, help="event batches/s (default: cases/100)")
    ap.add_argument("--no-restart", action="store_true", help="skip the whole-fleet reconnect")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the processes' logs here")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "fleet.json")
    a = ap.parse_args(argv)
    kw = {k: v for k, v in vars(a).items() if k in FleetConfig.__dataclass_fields__}
    cfg = FleetConfig(**kw, restart=not a.no_restart)
    rep = run(cfg, a.workdir)
    from rich.console import Console
    from rich.table import Table

    t = Table("figure", "value", title=f"LockCase fleet ({cfg.cases} cases, {cfg.workers} workers)")
    for k, v in summary(rep):
        t.add_row(k, v)
    Console().print(t)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rep, indent=1))
    print(f"report: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
