"""When a worker's batch is on disk, and what an OS crash that lost the last commits may not allow.

On SQLite the worker commits its batches with `synchronous=NORMAL` (WAL mode): a commit is in the
operating system's page cache when it returns, so it survives a crash of any process, but the WAL
file reaches the disk only at an `fsync` (`WalSync.sync`). The worker answers a batch of requests
at once and has the WAL synced right after (worker.py, one fsync at a time in a thread: under load
one covers every commit before it); a batch that acknowledges events is synced before its answers
go out (batch.py), because the case deletes what the cloud acknowledged. Only an OS crash or a power cut between a
commit and its sync can lose it, and it takes the machine's boot with it, so the process that
starts next on a new boot (a new `boot_id`) recovers before anything is served (`recover`):

- outgoing seqs jump `channel.RESYNC_TX_JUMP` ahead: seqs signed before the crash are not reused;
- every open challenge is closed: a code used in a lost commit cannot be used again;
- every message that may have been signed before the recovery is refused (its `exp` is at most
  TTL + the clock margin after it was signed: `Runtime.replay_floor`, checked by batch.py beside
  the replay window, which a lost commit rolled back): a request answered in a lost commit cannot
  be replayed, whatever its seq. Cases' messages signed in the first seconds after the recovery
  (up to twice the clock margin) are refused too; they send them again.

What may be lost is at most the last few milliseconds of rate counts, journal rows and presence
(the case keeps its own `granted` record). The argument is in docs/cloud.md#durability.
PostgreSQL keeps synchronous commits: its server's restarts are not visible as a boot here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import cast

from sqlalchemy import Table, false, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from casecloud import channel, codec
from casecloud.models import Case, Challenge

log = logging.getLogger("casecloud.durability")

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CASES = cast(Table, Case.__table__)
_CHALLENGES = cast(Table, Challenge.__table__)


def boot_id(path: Path = BOOT_ID) -> str | None:
    """This boot of the machine (Linux); None where there is none: commits then stay synchronous."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for any other database or an in-memory one."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


class WalSync:
    """fsync of a SQLite database's WAL file: what a `synchronous=FULL` commit does at its end, done
    when the caller chooses. Thread-safe (fsync is); the file is opened once and again only when
    SQLite made a new one (the last connection closed deletes it)."""

    def __init__(self, db_path: Path) -> None:
        self.path = Path(f"{db_path}-wal")
        self._fd: int | None = None
        self._ino = -1
        self.syncs = 0

    def sync(self) -> None:
        """Every commit made so far, on disk."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return  # no WAL: the last connection checkpointed it into the database (synced) and deleted it
        if ino != self._ino:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._ino = os.fstat(self._fd).st_ino
            # a new file's directory entry too, as SQLite does when it syncs a WAL it created
            d = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(d)
            finally:
                os.close(d)
        assert self._fd is not None
        os.fsync(self._fd)
        self.syncs += 1

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._ino = None, -1


def _marker(db_path: Path) -> Path:
    return Path(f"{db_path}.boot")


def recover(sessions: sessionmaker[Session], db_path: Path, now: int, boot: str) -> int:
    """At every start, before anything is served: when the database was last written on another
    boot of this machine, undo what losing its unsynced commits could allow (module docstring).
    Returns the replay floor: a message whose `exp` is at most this may have been signed before
    the recovery (0 when there was none).

    The marker beside the database (`<db>.boot`: the boot id and the floor) is read and written
    under an exclusive lock, so processes starting together recover once and all keep the floor.
    A missing marker is a database never written with unsynced commits (new, or from a version
    that synced every commit); an unreadable one is treated as another boot."""
    path = _marker(db_path)
    try:
        fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), True
    except FileExistsError:
        fd, created = os.open(path, os.O_RDWR | os.O_CLOEXEC), False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 4096)
        seen: dict[str, object] = {}
        with contextlib.suppress(ValueError):
            got = json.loads(raw) if raw else None
            if isinstance(got, dict) and isinstance(got.get("boot"), str):
                seen = got
        if created and not raw:
            seen = {"boot": boot}  # a database never written with unsynced commits
        kept = seen.get("floor", 0)
        floor = kept if type(kept) is int else 0
        if seen.get("boot") == boot and not created:
            return floor
        if seen.get("boot") != boot:  # another boot (or unreadable): its last commits may be lost
            with sessions.begin() as s:
                c = s.connection()
                cases = c.execute(update(_CASES).values(tx_seq=_CASES.c.tx_seq + channel.RESYNC_TX_JUMP)).rowcount
                closed = c.execute(update(_CHALLENGES).where(_CHALLENGES.c.done == false()).values(done=True)).rowcount
            floor = max(floor, now + codec.TTL + codec.RESYNC_MARGIN)
            log.warning("the database was last written on another boot of this machine (an OS crash may have "
                        "lost its last commits): %d cases' outgoing seqs moved ahead, %d open codes closed, "
                        "messages signed before now refused", cases, closed)
        body = json.dumps({"boot": boot, "floor": floor}).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, body)
        os.fsync(fd)
        if created:  # its directory entry too
            d = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(d)
            finally:
                os.close(d)
        return floor
    finally:
        os.close(fd)  # releases the lock
