"""Liveness and readiness that mean something: `python -m casecloud` processes (an API and a
`--worker-only` worker, and one process with both) with their database and their broker actually
taken away and given back: /readyz (and /healthz) say 503 with the reason while either is gone and
200 after, /livez stays 200 (the process's loops are alive: restarting it would not help); /livez
says 503 once a supervisor loop has ended."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from casecloud.api.ops import ops_app
from casecloud.batch import Handler
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised
from casecloud.worker import Worker
from sim.process import free_port
from tests.cloud.conftest import start_mosquitto
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, wait_for
from tests.cloud.pgserver import PgError, PgServer
from tests.cloud.procs import casecloud, service_env, wait_status


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, to stop and start (the session's serves others)."""
    try:
        with PgServer.start() as server:
            yield server
    except PgError as e:
        pytest.fail(f"cannot run the PostgreSQL tests: {e}", pytrace=False)


def test_ready_follows_postgresql_and_the_broker(tmp_path: Path, own_pg: PgServer) -> None:
    api_port, ops_port, mqtt_port = free_port(), free_port(), free_port()
    db = own_pg.create_database()
    with contextlib.ExitStack() as running, contextlib.ExitStack() as broker_up:
        broker = broker_up.enter_context(start_mosquitto(tmp_path / "broker", port=mqtt_port))
        env = service_env(tmp_path / "data", broker, api_port=api_port, ops_port=ops_port,
                          database_url=own_pg.url(db), ready_timeout_s=2)
        api, wrk = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
        logs = {api: tmp_path / "api.log", wrk: tmp_path / "worker.log"}
        procs = {api: running.enter_context(casecloud(logs[api], env, "--no-worker"))}
        wait_status(api + "/readyz", 200, procs[api], logs[api])  # migrated: now the worker
        procs[wrk] = running.enter_context(casecloud(logs[wrk], env, "--worker-only"))
        for base in procs:
            wait_status(base + "/readyz", 200, procs[base], logs[base])

        own_pg.stop()  # the database goes away
        for base in procs:
            r = wait_status(base + "/readyz", 503, procs[base], logs[base])
            assert r.json()["ready"] is False and "database unreachable" in r.json()["detail"], r.text
            h = wait_status(base + "/healthz", 503, procs[base], logs[base]).json()
            assert h["database"] is False and "database unreachable" in h["detail"]
            # anyone who reaches a probe reads it: the driver's text (host, port, user) is the log's
            port = str(own_pg.port)
            assert port not in r.text and port not in str(h), (r.text, h)
            assert [ln for ln in logs[base].read_text().splitlines() if "database unreachable" in ln and port in ln]
            assert wait_status(base + "/livez", 200, procs[base], logs[base]).json()["live"] is True
        own_pg._start()  # pyright: ignore[reportPrivateUsage]
        for base in procs:
            assert wait_status(base + "/readyz", 200, procs[base], logs[base]).json() == {"ready": True}

        broker_up.close()  # the broker goes away: each process says so, and stays live
        for base, what in ((api, "command sender: broker link down"), (wrk, "worker: broker link down")):
            r = wait_status(base + "/readyz", 503, procs[base], logs[base])
            assert what in r.json()["detail"], r.text
            assert wait_status(base + "/livez", 200, procs[base], logs[base]).status_code == 200
        with start_mosquitto(tmp_path / "broker2", port=mqtt_port):  # back where the processes expect it
            for base in procs:
                wait_status(base + "/readyz", 200, procs[base], logs[base], timeout=60)


def test_ready_follows_the_sqlite_file(tmp_path: Path, broker: tuple[str, int]) -> None:
    """The SQLite database's directory taken away (moved: as root a chmod would not stop us) and
    put back, under one process that runs both the API and the worker."""
    port = free_port()
    data = tmp_path / "data"
    env = service_env(data, broker, api_port=port)
    base, log = f"http://127.0.0.1:{port}", tmp_path / "svc.log"
    with casecloud(log, env) as proc:
        wait_status(base + "/readyz", 200, proc, log)
        data.rename(tmp_path / "elsewhere")
        r = wait_status(base + "/readyz", 503, proc, log)
        assert r.json()["detail"].startswith("database unreachable"), r.text
        assert wait_status(base + "/livez", 200, proc, log).json()["live"] is True
        (tmp_path / "elsewhere").rename(data)
        assert wait_status(base + "/readyz", 200, proc, log).json() == {"ready": True}


def test_live_is_503_once_a_supervisor_loop_has_ended(rt: Runtime) -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def main() -> Supervised:
        sup = Supervised("offline", forever)
        task = asyncio.create_task(sup.run())
        await asyncio.sleep(0.05)
        assert sup.supervising
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sup

    ended = asyncio.run(main())
    alive = Supervised("retention", forever)
    alive.supervising = True  # as while its run() loops
    with TestClient(ops_app(rt, [alive])) as client:
        assert client.get("/livez").json() == {"live": True, "version": client.get("/livez").json()["version"]}
    with TestClient(ops_app(rt, [alive, ended])) as client:
        r = client.get("/livez")
        assert r.status_code == 503 and r.json()["detail"] == "offline: supervisor ended"


def test_live_is_503_while_a_batch_hangs_in_the_database_thread(
        rt: Runtime, broker: tuple[str, int], shop: dict[str, Any]) -> None:
    """A query on a dead connection can block the worker's thread for good; only a restart frees
    it. Here the batch's decision blocks until released: past `stall_s` /livez says so."""
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    rt.settings.stall_s = 0.5
    release = threading.Event()

    class Hung(Handler):
        def decide(self, msgs: Any, deadlines: Any = None) -> Any:
            if any(t.endswith("/evt") for t, _ in msgs):
                release.wait(30)
            return super().decide(msgs, deadlines)

    w = Worker(rt, Hung(rt))
    sup = Supervised("worker", w.run, link=w.connected, stalled=lambda: w.load.stalled(rt.settings.stall_s))
    loop = Loop()
    loop.start(sup.run())
    case = FakeCase(*broker, "s1", "c1", shop["key"])
    try:
        wait_for(w.connected.is_set)
        with TestClient(ops_app(rt, [sup])) as client:
            case.hello()
            assert client.get("/livez").status_code == 200
            body, _ = case.send("evt", {"t": "evts", "evts": []})
            wait_for(lambda: client.get("/livez").status_code == 503)
            assert client.get("/livez").json()["detail"].startswith("worker: a batch has been deciding for")
            release.set()
            assert case.expect("evtack", re=body["id"])["t"] == "evtack"
            assert client.get("/livez").status_code == 200
    finally:
        release.set()
        case.close()
        loop.close()
