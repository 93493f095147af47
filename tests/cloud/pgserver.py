"""A real PostgreSQL server for the cloud tests: one per test session, a fresh database per test.

    with PgServer.start() as pg:
        name = pg.create_database()
        url = pg.url(name)  # postgresql+psycopg://postgres@127.0.0.1:PORT/NAME
        ...
        pg.drop_database(name)

The server runs from a throwaway cluster (initdb -A trust, fsync off) on a free loopback port,
with its socket in the same private directory. initdb refuses to run as root, so as root the
cluster belongs to the `postgres` system user and its programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sim.process import free_port

SERVER_USER = "postgres"  # the system user the server runs as when we are root
SUPERUSER = "postgres"  # the cluster's superuser (initdb -U)


class PgError(RuntimeError):
    pass


def bindir() -> Path | None:
    """The newest PostgreSQL server's bin directory: Debian's /usr/lib/postgresql/N/bin, else PATH."""

    def version(initdb: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", Path(initdb).parent.parent.name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    return None


class PgServer:
    def __init__(self, bin_dir: Path, root: Path, port: int, user: pwd.struct_passwd | None) -> None:
        self.bin_dir = bin_dir
        self.root = root  # private directory: data/, the socket, the server's log
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.user = user  # run the server's programs as this user (we are root), else as ourselves

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(cls, attempts: int = 3) -> Iterator[PgServer]:
        """initdb and start a server; stop it (immediate) and remove its files on the way out.
        A loopback port someone took meanwhile is retried on another."""
        bin_dir = bindir()
        if bin_dir is None:
            raise PgError("PostgreSQL server programs (initdb, pg_ctl) not found: run `make sysdeps` "
                          "(tools/sysdeps.sh installs the postgresql package)")
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PgError(f"running as root, and there is no {SERVER_USER!r} system user to run "
                              "PostgreSQL as (the postgresql package creates it)") from None
        # Not under pytest's tmp_path: its parents are private to us, and the server's user must
        # be able to reach its directory. Short, too: a Unix socket path has a length limit.
        root = Path(tempfile.mkdtemp(prefix="casecloud-pg-"))
        server = cls(bin_dir, root, 0, user)
        try:
            if user is not None:
                os.chown(root, user.pw_uid, user.pw_gid)
            server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", SUPERUSER, "--no-sync",
                        "-E", "UTF8", "--locale=C")
            for attempt in range(attempts):
                server.port = free_port()
                try:
                    server._start()
                    break
                except PgError:
                    if attempt == attempts - 1 or "could not bind" not in server.log_text():
                        raise
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    def _start(self) -> None:
        opts = " ".join([
            f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=200",
        ])
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.data.exists() and self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, prog: str, *args: str) -> None:
        kw: dict[str, Any] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        # pg_ctl's daemon inherits our stdout/stderr: hand it /dev/null so nothing waits on a pipe
        # the server keeps open; what it says goes to its log file.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run([str(self.bin_dir / prog), *args], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, cwd=self.root, timeout=120, check=False, **kw)
            out.seek(0)
            said = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise PgError(f"{prog} exited {proc.returncode}:\n{said}\n--- server log ---\n{self.log_text()}")

    # --- databases ---------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True)

    def create_database(self) -> str:
        name = "casecloud_" + secrets.token_hex(6)
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:  # FORCE: a test may leave connections open (an undisposed engine)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def database_files(self, name: str) -> list[Path]:
        """The files holding what was created in database `name` (tables, their TOAST tables,
        indexes, sequences: every fork and segment), flushed to disk first. Not the system
        catalogs copied from the template, whose binary contents are not ours to search."""
        with self.connect() as conn:
            conn.execute("CHECKPOINT")
        with self.connect(name) as conn:
            rels = [r[0] for r in conn.execute(
                "SELECT pg_relation_filepath(oid) FROM pg_class"
                " WHERE oid >= 16384 AND pg_relation_filepath(oid) IS NOT NULL")]  # FirstNormalObjectId
        files: list[Path] = []
        for rel in rels:
            main = self.data / rel
            files += [p for p in main.parent.glob(main.name + "*")
                      if p.name == main.name or p.name[len(main.name)] in "._"]
        return sorted(set(files))
