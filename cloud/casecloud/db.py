"""Engine, sessions and migrations. SQLite by default; any SQLAlchemy URL (PostgreSQL) works.

Also small pieces the hot path needs:

- `scratch(s)`: a dict that lives as long as the session's current transaction (per-batch caches,
  pending counters), with `before_commit` / `after_commit` hooks run by the sessions made here
  (`prepare_commit` runs the former, and the flush, ahead of the commit);
- `insert_ignore` and `upsert_add`: multi-row INSERT ... ON CONFLICT DO NOTHING / DO UPDATE for
  SQLite and PostgreSQL (one statement per batch), with a portable fallback;
- `lock_in_order`: a transaction's rows locked in one order before it writes them (no deadlock
  between two workers' batches on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Engine, Table, bindparam, create_engine, event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from casecloud.keyring import INFO as KEYRING
from casecloud.keyring import Keyring

MIGRATIONS = Path(__file__).with_name("migrations")
_SCRATCH = "casecloud.txn"


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """synchronous (SQLite): NORMAL only for the worker's batches, whose WAL is synced by
    durability.WalSync (docs/cloud.md#durability); everything else commits FULL."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous={synchronous!r}")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            # WAL lets the API read while the worker writes; both may be separate processes.
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL (the default, stated here on purpose): a commit is on disk when it returns, so
            # whatever the API answered survives a power cut. The worker's batches use NORMAL and
            # sync the WAL themselves: before answering what must survive one (acknowledged
            # events), right after answering the rest (durability.py).
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # Deleted member data must not linger in free pages of the file.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessions(engine: Engine, keyring: Keyring | None = None) -> sessionmaker[Session]:
    """keyring: seals and opens case keys for whatever holds one of these sessions (keyring.py)."""
    info = {KEYRING: keyring} if keyring is not None else None
    return sessionmaker(engine, expire_on_commit=False, info=info)


# --- per-transaction scratch space -----------------------------------------------------------

def scratch(s: Session) -> dict[str, Any]:
    """A dict for the session's current transaction; dropped when it ends (commit or rollback)."""
    d: dict[str, Any] = s.info.setdefault(_SCRATCH, {})
    return d


def before_commit(s: Session, fn: Callable[[Session], None]) -> None:
    """Run `fn(s)` inside the transaction just before it commits (not on rollback)."""
    scratch(s).setdefault("before_commit", []).append(fn)


def after_commit(s: Session, fn: Callable[[], None]) -> None:
    """Run `fn()` once the transaction has committed (never on rollback)."""
    scratch(s).setdefault("after_commit", []).append(fn)


def _before_commit(s: Session) -> None:
    while hooks := scratch(s).pop("before_commit", None):  # and any a hook adds
        for fn in hooks:
            fn(s)


def prepare_commit(s: Session) -> None:
    """Do now what committing would do first: run the before-commit hooks and flush. Whatever the
    caller checks after this still holds at `s.commit()`, which has only the database's own commit
    (the fsync) left to do; the hooks are not run again."""
    _before_commit(s)
    s.flush()


def _after_commit(s: Session) -> None:
    for fn in scratch(s).pop("after_commit", []):
        fn()


def _transaction_end(s: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        s.info.pop(_SCRATCH, None)


# On every Session (not only those of make_sessions): work left in a scratch must never be
# dropped silently because a caller made its session some other way.
event.listen(Session, "before_commit", _before_commit)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_transaction_end", _transaction_end)


def case_text(value: str, n: int) -> str:
    """Text from a case for a text column or a query parameter: at most `n` characters, any NUL
    replaced (PostgreSQL refuses NUL in text, even to compare; SQLite would keep it)."""
    return value[:n].replace("\x00", "\ufffd")


# --- multi-row writes ---------------------------------------------------------------------------

def dialect_insert(s: Session) -> Any:
    """The dialect's own `insert` (it has ON CONFLICT) for SQLite and PostgreSQL; None otherwise."""
    name = s.get_bind().dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        return insert
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        return insert
    return None


_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _on_conflict(s: Session, table: Table, keys: Sequence[str], col: str | None) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING (col None) or DO UPDATE SET col = col + new col,
    built once per dialect and table; None for a database that has neither."""
    name = s.get_bind().dialect.name
    k = (name, table.name, *keys, col or "")
    if k not in _STATEMENTS:
        insert = dialect_insert(s)
        stmt = None
        if insert is not None:
            stmt = insert(table)
            if col is None:
                stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
            else:
                stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                                  set_={col: table.c[col] + stmt.excluded[col]})
        _STATEMENTS[k] = stmt
    return _STATEMENTS[k]


def insert_ignore(s: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """Insert rows, skipping any whose unique `keys` already exist (or repeat within `rows`)."""
    if not rows:
        return
    stmt = _on_conflict(s, table, keys, None)
    if stmt is not None:
        s.connection().execute(stmt, list(rows))
        return
    for row in rows:  # any other database: one savepoint per row
        try:
            with s.begin_nested():
                s.execute(table.insert(), row)
        except IntegrityError:
            pass


# (id(column), one key) -> (the statement, the column, kept alive so that no other takes its id)
_LOCKS: dict[tuple[int, bool], tuple[Any, ColumnElement[str]]] = {}


def lock_in_order(s: Session, column: ColumnElement[str], keys: Iterable[str]) -> None:
    """Lock the rows of `column`'s table whose `column` is one of `keys`, in the order of `column`,
    for the rest of the transaction (PostgreSQL: SELECT ... ORDER BY ... FOR NO KEY UPDATE, the
    lock an UPDATE takes, so foreign-key checks of others' inserts are not held up). Two
    transactions that lock their rows this way before writing any of them queue for the rows
    they share, where writing them in the order their work reaches them could deadlock. A no-op
    on SQLite, which has one writer at a time (the database is locked at the first write)."""
    wanted = sorted(set(keys))
    if not wanted or s.get_bind().dialect.name == "sqlite":
        return
    # Built once per column: building it cost as much as running it. One key (a lone request's
    # case) by equality: an IN list is rendered anew at every execution.
    one = len(wanted) == 1
    k = (id(column), one)
    if k not in _LOCKS:
        where = column == bindparam("key") if one else column.in_(bindparam("keys", expanding=True))
        _LOCKS[k] = (select(column).where(where).order_by(column).with_for_update(key_share=True), column)
    s.connection().execute(_LOCKS[k][0], {"key": wanted[0]} if one else {"keys": wanted}).all()


def upsert_add(s: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str], col: str) -> None:
    """Insert rows; where the unique `keys` exist already, add the row's `col` to the stored one.
    Rows must not repeat a key."""
    if not rows:
        return
    stmt = _on_conflict(s, table, keys, col)
    if stmt is not None:
        s.connection().execute(stmt, list(rows))
        return
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        if s.execute(select(table.c[keys[0]]).where(*where).with_for_update()).first() is None:
            s.execute(table.insert(), row)
        else:
            s.execute(update(table).where(*where).values({col: table.c[col] + row[col]}))


# --- migrations -------------------------------------------------------------------------------

def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (run at every start; a no-op when current)."""
    command.upgrade(alembic_config(url), "head")
