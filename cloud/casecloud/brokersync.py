"""Keeps Mosquitto's password and ACL files in step with the case table (docs/cloud.md, "The broker").

The cloud keeps only a `$7$` hash of each case's broker password, which Mosquitto's password file
takes as it is, so the files can always be rebuilt from the table: at start, after every change
the API makes (register, rotate, delete), every `broker_sync_every_s` for changes made by other
processes, and on `POST /v1/admin/broker/sync`. A file is replaced (write, fsync, rename) only when
its text changes, and Mosquitto is then sent SIGHUP, which rereads both files and drops clients
whose login is gone. `python -m casecloud.brokersync` runs the same loop alone, beside a broker
on a host with no other cloud process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from casecloud.broker import acl_file, passwd_file, service_role
from casecloud.models import Case
from casecloud.settings import Settings

log = logging.getLogger("casecloud.brokersync")

SERVICE_FILE, PASSWD_FILE, ACL_FILE = "service.passwd", "casecloud.passwd", "casecloud.acl"


class BrokerSyncError(RuntimeError):
    pass


@dataclass(frozen=True)
class SyncResult:
    changed: bool
    cases: int
    services: int


def read_service_logins(path: Path) -> list[tuple[str, str]]:
    """(user, hash) from a mosquitto_passwd file; a login whose name gives no role is left out
    (and said), since the ACL would grant it nothing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        user, colon, h = line.strip().partition(":")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not colon or not h:
            log.error("%s line %d: not user:hash, left out", path, n)
        elif service_role(user) is None:
            log.error("%s line %d: login %r is neither worker.<name> nor api.<name>, left out", path, n, user)
        else:
            out.append((user, h))
    return out


def write_if_changed(path: Path, text: str) -> bool:
    """Replace the file whole, so Mosquitto never reads half of it."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)  # Mosquitto's group reads it; password hashes are no one else's business
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def reload_broker(pid_file: Path) -> None:
    try:
        text = pid_file.read_text()
    except FileNotFoundError:
        log.warning("no broker pid in %s: a broker started later reads the files as they are now", pid_file)
        return
    try:
        pid = int(text.strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        raise BrokerSyncError(f"cannot signal the broker through {pid_file}: {e}") from None


class BrokerSync:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        if settings.broker_dir is None:
            raise ValueError("broker_dir is not set")
        self.dir = settings.broker_dir
        self.pid_file = settings.broker_pid_file
        self.prefix = settings.topic_prefix
        self.every_s = settings.broker_sync_every_s
        self.sessions = sessions
        self._lock = threading.Lock()  # API threads and the loop: one rewrite at a time

    def render(self) -> tuple[str, str, int, int]:
        services = read_service_logins(self.dir / SERVICE_FILE)
        with self.sessions() as s:
            cases = [(c.id, c.store_id, c.mqtt_password_hash) for c in s.scalars(select(Case).order_by(Case.id))]
        passwd = passwd_file([*services, *((cid, h) for cid, _, h in cases)])
        acl = acl_file([(store, cid) for cid, store, _ in cases], [u for u, _ in services], self.prefix)
        return passwd, acl, len(cases), len(services)

    def sync(self) -> SyncResult:
        """Raises BrokerSyncError when the files cannot be written or the broker signalled."""
        with self._lock:
            passwd, acl, n_cases, n_services = self.render()
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                changed = write_if_changed(self.dir / PASSWD_FILE, passwd)
                changed = write_if_changed(self.dir / ACL_FILE, acl) or changed
            except OSError as e:
                raise BrokerSyncError(f"cannot write the broker's files in {self.dir}: {e}") from None
            if changed and self.pid_file is not None:
                reload_broker(self.pid_file)
            if changed:
                log.info("broker files rewritten: %d cases, %d service logins", n_cases, n_services)
            return SyncResult(changed, n_cases, n_services)

    def sync_logged(self) -> SyncResult | None:
        """For callers whose own work is done (a committed change): a failure is logged, and the
        loop tries again within broker_sync_every_s."""
        try:
            return self.sync()
        except Exception:
            log.exception("broker sync failed")
            return None

    async def follow(self) -> None:
        """Sync now (the reconcile after a broker lost its files), then every every_s."""
        while True:
            await asyncio.to_thread(self.sync_logged)
            await asyncio.sleep(self.every_s)


def main() -> None:
    from casecloud import db, logs

    settings = Settings()
    logs.setup(settings.log_level)  # the same JSON lines as the service's (docs/operations.md)
    if settings.broker_dir is None:
        raise SystemExit("set CASECLOUD_BROKER_DIR (and CASECLOUD_BROKER_PID_FILE) to the broker's files")
    engine = db.make_engine(settings.db_url)
    try:
        asyncio.run(BrokerSync(settings, db.make_sessions(engine)).follow())
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
