"""End to end: the firmware on the sim case (MicroPython), the cloud worker and a real Mosquitto
with per-case credentials and the ACL the cloud generates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from casecloud import broker as brokerfiles
from casecloud import registry
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.worker import Worker
from sim.demo import DEMO_PIN, demo_config
from sim.process import SimCase, SimClient
from tests.cloud.conftest import start_mosquitto
from tests.cloud.helpers import Loop, wait_for

# The worker's and the API's logins, and one for the tests' own clients (which publish and spy
# anywhere): on the shipped broker a login is its client id, so each connection needs its own.
WORKER_USER, WORKER_PASSWORD = "worker.tests", "worker-secret-for-tests"
API_USER, API_PASSWORD = "api.tests", "api-secret-for-tests"
SERVICE_USER, SERVICE_PASSWORD = "tests.spy", "service-secret-for-tests"


@dataclass
class Env:
    rt: Runtime
    workdir: Path
    host: str
    port: int
    secrets: dict[str, Any]
    loop: Loop
    worker: Worker
    broker_ctx: Any
    broker_extra: str = ""  # more Mosquitto settings (a TLS listener), kept across restarts

    def case_config(self, case_id: str = "c1", **over: Any) -> dict[str, Any]:
        sec = self.secrets[case_id]
        cfg = demo_config()
        cfg.update(store_id="s1", case_id=case_id, unlock_ms=1500, pull_in_ms=200)
        cfg["cloud"] = {"host": self.host, "port": self.port, "user": sec.mqtt_username,
                        "password": sec.mqtt_password, "key": sec.key_hex, "keepalive": 5,
                        "request_timeout_s": 4}
        cfg.update(over)
        return cfg

    def start_worker(self) -> None:
        """The worker, when cloud_env was entered without it (start_worker=False)."""
        self.loop.start(self.worker.run())
        wait_for(self.worker.connected.is_set)

    def stop_broker(self) -> None:
        self.broker_ctx.__exit__(None, None, None)

    def start_broker(self) -> None:
        """Mosquitto again, on the same port with the same files (after stop_broker)."""
        self.broker_ctx = broker_files_ctx(self.workdir, self.secrets, port=self.port, extra=self.broker_extra)
        self.broker_ctx.__enter__()

    def restart_broker(self) -> None:
        self.stop_broker()
        self.start_broker()


def broker_files_ctx(workdir: Path, secrets: dict[str, Any], port: int | None = None, extra: str = "") -> Any:
    entries = [(u, brokerfiles.password_hash(pw)) for u, pw in
               ((SERVICE_USER, SERVICE_PASSWORD), (WORKER_USER, WORKER_PASSWORD), (API_USER, API_PASSWORD))]
    entries += [(s.mqtt_username, brokerfiles.password_hash(s.mqtt_password)) for s in secrets.values()]
    acl = brokerfiles.acl_file([("s1", c) for c in secrets], [WORKER_USER, API_USER])
    acl += f"\nuser {SERVICE_USER}\ntopic readwrite lockcase/v1/#\n"
    return start_mosquitto(workdir / "broker", passwd=brokerfiles.passwd_file(entries), acl=acl, port=port,
                           extra=extra)


def register_shop(rt: Runtime, cases: tuple[str, ...]) -> dict[str, registry.CaseSecrets]:
    """Store s1 ("Main St") with these cases: their secrets by case id."""
    secrets = {}
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now(), name="Main St")
        for c in cases:
            _, secrets[c] = registry.register_case(s, "s1", c, rt.now())
    return secrets


@contextlib.contextmanager
def cloud_env(workdir: Path, cases: tuple[str, ...] = ("c1", "c2"), start_worker: bool = True,
              broker: str = "", **settings: Any) -> Iterator[Env]:
    """Mosquitto with the cloud's passwd/ACL for these cases, and the worker, on SQLite.
    start_worker=False: the worker is not running (nor subscribed) until `Env.start_worker()`.
    broker: more Mosquitto settings (e.g. a TLS listener)."""
    st = Settings(data_dir=workdir / "data", admin_token=SecretStr("t0ken"), mqtt_username=WORKER_USER,
                  mqtt_password=SecretStr(WORKER_PASSWORD), mqtt_api_username=API_USER,
                  mqtt_api_password=SecretStr(API_PASSWORD), **settings)
    rt = build(st)
    secrets = register_shop(rt, cases)
    ctx = broker_files_ctx(workdir, secrets, extra=broker)
    host, port = ctx.__enter__()
    rt.settings.mqtt_host, rt.settings.mqtt_port = host, port
    loop = Loop()
    worker = Worker(rt)
    e = Env(rt, workdir, host, port, secrets, loop, worker, ctx, broker)
    if start_worker:
        e.start_worker()
    try:
        yield e
    finally:
        loop.close()
        with contextlib.suppress(Exception):
            e.broker_ctx.__exit__(None, None, None)
        rt.engine.dispose()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with cloud_env(tmp_path) as e:
        yield e


@pytest.fixture
def case(env: Env) -> Iterator[SimCase]:
    """The sim case (the real firmware) provisioned for c1, running against env's broker."""
    with SimCase(env.workdir / "case1", env.case_config(), heap="512k") as c:
        yield c


@pytest.fixture
def ctl(case: SimCase) -> Iterator[SimClient]:
    """The case's control socket, once its cloud link is up and its clock synced."""
    cl = case.client()
    cl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="cloud link synced")
    yield cl
    cl.close()


__all__ = ["DEMO_PIN", "Env", "SimCase", "wait_for"]
