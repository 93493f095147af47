"""Fixtures for the casectl tests: the real CLI in a subprocess, the sim board on a pty (socat +
the MicroPython Unix port, driven by the real mpremote), and the real cloud API under uvicorn."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casectl.build import compile_board
from casectl.deploy import deploy
from casectl.device import Device
from sim.device import SimDevice
from sim.process import free_port
from tests.cloud.helpers import seed_hq

REPO = Path(__file__).resolve().parents[2]
CASECTL = str(Path(sys.executable).parent / "casectl")
TOKEN = "casectl-test-admin-token-0123456789"
# The worker's and the API's broker logins (service.passwd in the broker's dir)
WORKER_USER, WORKER_PASSWORD = "worker.casectl", "worker-secret-for-casectl-tests"
API_USER, API_PASSWORD = "api.casectl", "api-secret-for-casectl-tests"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 120, cwd: Path | None = None) -> Result:
    """Run the installed `casectl` entry point, as a technician's shell would."""
    e = dict(os.environ, CASECTL_TOKEN=TOKEN, COLUMNS="200", NO_COLOR="1")
    e.pop("CASECTL_CLOUD", None)
    e.update(env or {})
    p = subprocess.run([CASECTL, *map(str, args)], capture_output=True, text=True, env=e, input=input,
                       timeout=timeout, cwd=cwd)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="session")
def fw_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """firmware/ as it was when the session started: builds compared with each other in a test
    must come from one tree, whatever is being edited in the checkout meanwhile."""
    dst = tmp_path_factory.mktemp("fw") / "firmware"
    shutil.copytree(REPO / "firmware", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture(scope="session")
def sim_build(tmp_path_factory: pytest.TempPathFactory, fw_snapshot: Path) -> Path:
    out = tmp_path_factory.mktemp("builds") / "sim"
    compile_board("sim", out, firmware=fw_snapshot)
    return out


@pytest.fixture
def device(tmp_path: Path) -> Iterator[SimDevice]:
    d = tmp_path / "dev"
    with SimDevice(d) as sd:
        yield sd
        # shown with a failing test's report: every restart of the board and its cause
        print("sim device boots:", *sd.history, sep="\n  ")


def deploy_now(sd: SimDevice, build_dir: Path) -> None:
    boots = sd.boots
    with Device(sd.port) as dev:
        deploy(dev, build_dir)
    sd.wait_boot(boots)
    sd.wait_firmware()


@pytest.fixture
def deployed(device: SimDevice, sim_build: Path) -> SimDevice:
    """A sim board with the firmware on it, running (not provisioned)."""
    deploy_now(device, sim_build)
    return device


class CloudServer:
    """The cloud's HTTP API (and, with a broker, its command sender and MQTT worker) on a free
    port, in a thread with its own event loop."""

    def __init__(self, workdir: Path, broker: tuple[str, int] | None = None, broker_dir: Path | None = None) -> None:
        """broker_dir: the broker's files, which the API keeps in step with its case table."""
        kw: dict[str, Any] = {}
        if broker:
            kw = {"mqtt_host": broker[0], "mqtt_port": broker[1], "mqtt_username": WORKER_USER,
                  "mqtt_password": SecretStr(WORKER_PASSWORD), "mqtt_api_username": API_USER,
                  "mqtt_api_password": SecretStr(API_PASSWORD)}
        if broker_dir:
            kw.update(broker_dir=broker_dir, broker_pid_file=broker_dir / "mosquitto.pid")
        self.port = free_port()
        self.settings = Settings(data_dir=workdir, admin_token=SecretStr("casectl-test-bootstrap"), cmd_timeout_s=5,
                                 **kw)
        self.rt: Runtime = build(self.settings)
        seed_hq(self.rt, TOKEN)  # casectl's token is an hq API token (the admin token only bootstraps)
        self.url = f"http://127.0.0.1:{self.port}"
        self.broker = broker
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(self.rt, Commander(self.rt) if broker else None), host="127.0.0.1", port=self.port,
            log_level="warning", lifespan="on"))
        self.worker: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        async def main() -> None:
            tasks = []
            if self.broker:
                from casecloud.worker import Worker

                self.worker = Worker(self.rt)
                tasks.append(asyncio.create_task(self.worker.run()))
            try:
                await self.server.serve()
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

        asyncio.run(main())

    def start(self) -> CloudServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the cloud API did not start")
            time.sleep(0.02)
        if self.broker:
            while self.worker is None or not self.worker.connected.is_set():
                if time.monotonic() > deadline:
                    raise RuntimeError("the cloud worker did not connect to the broker")
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.rt.engine.dispose()


@contextlib.contextmanager
def synced_broker(broker_dir: Path) -> Iterator[tuple[str, int]]:
    """Mosquitto from the shipped config on files the cloud keeps (CloudServer(broker_dir=...)):
    to start with, only the cloud's own logins, as an operator sets them up (docs/cloud.md)."""
    from casecloud import broker as brokerfiles
    from casecloud.brokersync import ACL_FILE, PASSWD_FILE, SERVICE_FILE
    from tests.cloud.conftest import start_mosquitto

    broker_dir.mkdir(parents=True, exist_ok=True)
    services = [(WORKER_USER, brokerfiles.password_hash(WORKER_PASSWORD)),
                (API_USER, brokerfiles.password_hash(API_PASSWORD))]
    (broker_dir / SERVICE_FILE).write_text(brokerfiles.passwd_file(services))
    (broker_dir / PASSWD_FILE).write_text(brokerfiles.passwd_file(services))
    (broker_dir / ACL_FILE).write_text(brokerfiles.acl_file([], [u for u, _ in services]))
    with start_mosquitto(broker_dir, files_dir=broker_dir) as hp:
        yield hp


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudServer]:
    c = CloudServer(tmp_path / "cloud").start()
    from casecloud import registry

    with c.rt.sessions.begin() as s:
        registry.create_store(s, "s1", c.rt.now(), name="Main St")
    yield c
    c.stop()


def socat_exe() -> str:
    found = shutil.which("socat")
    if not found:
        pytest.fail("socat is not installed: run `make sysdeps`")
    return found


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real mpremote CLI, the way the issue describes: `mpremote connect <pty> resume ...`."""
    exe = str(Path(sys.executable).parent / "mpremote")
    return subprocess.run([exe, "connect", port, "resume", *args], capture_output=True, text=True, timeout=timeout)
