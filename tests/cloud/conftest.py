"""Fixtures for the cloud tests, and a Mosquitto launcher other end-to-end tests can reuse:

    from tests.cloud.conftest import start_mosquitto
    with start_mosquitto(tmp_path, passwd=..., acl=...) as (host, port): ...

Every test that takes `settings` (so `rt`, and everything built on it) or `database_url` runs
twice: on SQLite (the default, a file under the data dir) and on a real PostgreSQL, one server per
session (pgserver.py) with a fresh database per test. Ids: test_x[sqlite], test_x[pg].
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from casecloud import registry
from casecloud.adapters.notify import RecordingNotifier
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.worker import Worker
from sim.process import free_port
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, seed_hq, stop, wait_for, wait_listening
from tests.cloud.pgserver import PgError, PgServer


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        pytest.fail("mosquitto is not installed: run `make sysdeps`")
    return found


SHIPPED_CONF = Path(__file__).resolve().parents[2] / "cloud" / "broker" / "casecloud.conf"
_AUTH_LINES = ("allow_anonymous ", "password_file ", "acl_file ", "use_username_as_clientid ")


def shipped_conf(workdir: Path, *, passwd_file: Path | None, acl_file: Path | None) -> str:
    """cloud/broker/casecloud.conf as shipped, its file paths moved into the test's dirs. Without a
    password file its login lines give way to anonymous access (use_username_as_clientid drops
    clients that have no login); every other line (sizes, queues, persistence) is kept."""
    out = []
    for line in SHIPPED_CONF.read_text().splitlines():
        if passwd_file is None and line.startswith(_AUTH_LINES):
            continue
        if line.startswith("password_file ") and passwd_file is not None:
            line = f"password_file {passwd_file}"
        elif line.startswith("acl_file "):
            if acl_file is None:
                continue  # a test of logins alone: every topic allowed
            line = f"acl_file {acl_file}"
        out.append(line)
    if passwd_file is None:
        out.append("allow_anonymous true")
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def start_mosquitto(
    workdir: Path, *, passwd: str | None = None, acl: str | None = None, extra: str = "",
    port: int | None = None, files_dir: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """Run a real Mosquitto with the shipped configuration on a free loopback port; yields (host, port).

    passwd/acl: file contents (mosquitto_passwd format, ACL syntax); files_dir: a dir that already
    holds casecloud.passwd and casecloud.acl (written by casecloud.brokersync). With neither,
    anonymous clients are allowed. The broker's log is at workdir/mosquitto.log, its pid in
    workdir/mosquitto.pid (SIGHUP rereads the files).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()  # a given port: restart a broker where its clients expect it
    lines = [f"listener {port} 127.0.0.1", f"log_dest file {workdir / 'mosquitto.log'}", "log_type all",
             f"pid_file {workdir / 'mosquitto.pid'}"]
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to 'mosquitto' and cannot read our files
    passwd_path = acl_path = None
    if files_dir is not None:
        passwd_path, acl_path = files_dir / "casecloud.passwd", files_dir / "casecloud.acl"
    if passwd is not None:
        passwd_path = workdir / "passwd"
        passwd_path.write_text(passwd)
    if acl is not None:
        acl_path = workdir / "acl"
        acl_path.write_text(acl)
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n" + shipped_conf(workdir, passwd_file=passwd_path, acl_file=acl_path)
                    + extra)
    # cwd: a persistence file (were the shipped config ever to turn persistence on) lands here,
    # where the privacy tests search, and not in pytest's working directory.
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=workdir)
    try:
        wait_listening(proc, port, 10, lambda: f"mosquitto exited {proc.returncode}: "
                       + (proc.stdout.read().decode(errors="replace") if proc.stdout else ""))
        yield "127.0.0.1", port
    finally:
        stop(proc, 5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with start_mosquitto(tmp_path / "broker") as hp:
        yield hp


class FakeClock:
    def __init__(self, t: float = 1_750_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session, started by the first test that runs on it."""
    try:
        with PgServer.start() as server:
            yield server
    except PgError as e:
        pytest.fail(f"cannot run the PostgreSQL tests: {e}", pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "pg"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The service's database: SQLite at its default place under the `settings` data dir, or a
    new, empty database on the session's PostgreSQL server (dropped after the test)."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{tmp_path / 'data' / 'casecloud.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # SQLite: the default URL, as a service with no configuration has it
    return Settings(data_dir=tmp_path / "data", admin_token=SecretStr("test-bootstrap-token"),
                    database_url=database_url if is_postgres(database_url) else None)


@pytest.fixture
def stored_files(request: pytest.FixtureRequest, settings: Settings) -> Any:
    """`stored_files()`: the files the database keeps its data in (flushed first), to search for
    what must not be at rest. Call it with the service's engines disposed."""

    def files() -> list[Path]:
        if is_postgres(settings.db_url):
            server: PgServer = request.getfixturevalue("pg_server")
            return server.database_files(str(make_url(settings.db_url).database))
        return [p for p in settings.data_dir.iterdir() if p.name.startswith("casecloud.db")]

    return files


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def rt(settings: Settings, clock: FakeClock, notifier: RecordingNotifier) -> Iterator[Runtime]:
    """The service's runtime, with an HQ user and the hq API token `test-admin-token` the admin
    API tests send (seed_hq). tests/cloud/test_accounts.py builds its own, without them."""
    r = build(settings, clock=clock, notifier=notifier)
    seed_hq(r)
    yield r
    r.engine.dispose()


@pytest.fixture
def shop(rt: Runtime) -> dict[str, Any]:
    """One store (US) with one case; returns ids and the case's secrets."""
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now(), name="Main St", notify_url="http://staff.invalid/hook")
        _, sec = registry.register_case(s, "s1", "c1", rt.now(), name="Fragrances")
    return {"store": "s1", "case": "c1", "key": bytes.fromhex(sec.key_hex), "secrets": sec}


# A worker on the test's broker, and one fake case greeted by it (test_worker, test_load; a
# module with a `case` of another kind defines its own).
@pytest.fixture
def worker(rt: Runtime, broker: tuple[str, int], shop: dict[str, Any]) -> Iterator[Worker]:
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    w = Worker(rt)
    loop = Loop()
    loop.start(w.run())
    wait_for(w.connected.is_set)
    yield w
    loop.close()


@pytest.fixture
def case(broker: tuple[str, int], shop: dict[str, Any], worker: Worker) -> Iterator[FakeCase]:
    c = FakeCase(*broker, "s1", "c1", shop["key"])
    c.hello()
    yield c
    c.close()
