"""The operator's commands: `python -m casecloud after-restore` after a database restored from a
backup, and `migrate` (an upgrade's first step).

After a restore the cloud's outgoing seq is back where it was at the backup, below what the cases
have seen since: each case refuses the cloud's answers as replays. The command moves every case's
outgoing seq 2^19 ahead and lets its next message re-establish the replay window (the admin
resync of docs/protocol.md, for the whole fleet). Here with real backups taken while the worker
runs (SQLite's online backup, pg_dump), restored with the worker stopped, as docs/operations.md
says; the case is the firmware's codec over Mosquitto."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from casecloud import channel, desired, registry
from casecloud.accounts.audit import AuditEntry
from casecloud.adapters.notify import RecordingNotifier
from casecloud.models import Case
from casecloud.restore import DESIRED_JUMP
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings, sqlite_path
from casecloud.worker import Worker
from tests.cloud.conftest import is_postgres
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, wait_for
from tests.cloud.pgserver import PgServer


class Service:
    """The worker, stopped and started around the restore."""

    def __init__(self, settings: Settings, broker: tuple[str, int]) -> None:
        settings.mqtt_host, settings.mqtt_port = broker
        self.settings = settings
        self.rt: Runtime | None = None
        self.loop: Loop | None = None

    def start(self) -> Runtime:
        self.rt = build(self.settings, notifier=RecordingNotifier())
        w = Worker(self.rt)
        self.loop = Loop()
        self.loop.start(w.run())
        wait_for(w.connected.is_set)
        return self.rt

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        if self.rt is not None:
            self.rt.engine.dispose()
            self.rt = None


@pytest.fixture
def service(settings: Settings, broker: tuple[str, int]) -> Iterator[Service]:
    svc = Service(settings, broker)
    yield svc
    svc.stop()


def evtack(case: FakeCase, timeout: float = 5) -> dict[str, Any]:
    body, _ = case.send("evt", {"t": "evts", "evts": []})
    return case.expect("evtack", re=body["id"], timeout=timeout)


def backup(settings: Settings, request: pytest.FixtureRequest, to: Path) -> None:
    """Online, as an operator does while the service runs."""
    if is_postgres(settings.db_url):
        pg: PgServer = request.getfixturevalue("pg_server")
        u = make_url(settings.db_url)
        subprocess.run([str(pg.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", str(u.username),
                        "-Fc", "-f", str(to), str(u.database)], check=True)
        return
    path = sqlite_path(settings.db_url)
    assert path is not None
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


def restore(settings: Settings, request: pytest.FixtureRequest, frm: Path) -> None:
    """With every process of the service stopped."""
    if is_postgres(settings.db_url):
        pg: PgServer = request.getfixturevalue("pg_server")
        u = make_url(settings.db_url)
        subprocess.run([str(pg.bin_dir / "pg_restore"), "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                        str(u.username), "--clean", "--if-exists", "-d", str(u.database), str(frm)], check=True)
        return
    path = sqlite_path(settings.db_url)
    assert path is not None
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".restoring")
    tmp.write_bytes(frm.read_bytes())
    os.replace(tmp, path)


def test_after_restore_the_cases_take_the_clouds_answers_again(
        service: Service, settings: Settings, broker: tuple[str, int], request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    rt = service.start()
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        _, sec = registry.register_case(s, "s1", "c1", rt.now())
        desired.bump_store(s, "s1")  # a staff change: the case's desired state is managed (v1)
    case = FakeCase(*broker, "s1", "c1", bytes.fromhex(sec.key_hex))
    try:
        case.hello()
        evtack(case)
        backup(settings, request, tmp_path / "backup")
        for _ in range(20):  # the cloud's seq moves on past the case's 16-message window
            evtack(case)
        service.stop()
        restore(settings, request, tmp_path / "backup")
        rt = service.start()
        with pytest.raises(TimeoutError):  # the cloud signs with seqs the case has seen: replays to it
            evtack(case, timeout=2)

        env = dict(os.environ, CASECLOUD_DATA_DIR=str(settings.data_dir), CASECLOUD_ADMIN_TOKEN="unused")
        if is_postgres(settings.db_url):
            env["CASECLOUD_DATABASE_URL"] = settings.db_url
        out = subprocess.run([sys.executable, "-m", "casecloud", "after-restore"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "1 cases resynchronized" in out.stderr

        ack = evtack(case)  # answered, and the case takes it
        assert ack["t"] == "evtack"
        with rt.sessions() as s:
            c = s.get(Case, "c1")
            assert c is not None and c.tx_seq > channel.RESYNC_TX_JUMP and c.rx_mask >= 0  # the window is back
            entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "fleet.resync")).one()
            assert entry.actor == "cli" and entry.detail == {"cases": 1, "desired_moved": 1, "why": "restore"}
            # no version the case applied since the backup can name the restored staff set
            assert c.desired_v == 1 + DESIRED_JUMP
    finally:
        case.close()


def test_migrate_brings_the_database_to_the_head_and_nothing_else(settings: Settings) -> None:
    """An upgrade's first step (docs/operations.md): `python -m casecloud migrate`, alone, twice."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text

    from casecloud import db

    env = dict(os.environ, CASECLOUD_DATA_DIR=str(settings.data_dir), CASECLOUD_ADMIN_TOKEN="unused")
    if is_postgres(settings.db_url):
        env["CASECLOUD_DATABASE_URL"] = settings.db_url
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "casecloud", "migrate"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
    head = ScriptDirectory.from_config(db.alembic_config(settings.db_url)).get_current_head()
    engine = create_engine(settings.db_url)
    try:
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
            assert c.execute(text("SELECT count(*) FROM cases")).scalar_one() == 0
    finally:
        engine.dispose()
    assert not (settings.data_dir / "admin_token").exists()  # nothing else was set up or started
