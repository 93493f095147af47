"""Rate counters for the policy's limits, shared by every worker and the API.

Counters live in the database (`rate_counts`: scope, key, second, count), so every process sees
the same windows. Within one transaction (a worker's batch) each key's window is summed once; the
attempts made in the transaction are added in memory and written with one upsert just before it
commits (`db.before_commit`), in one key order for every writer, so concurrent writers cannot
deadlock on the counter rows. What the limits are and what hitting one means is policy.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from sqlalchemy import ColumnElement, ScalarSelect, Table, bindparam, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from casecloud import db
from casecloud.models import RateCount
from casecloud.settings import Settings

_RATES = cast(Table, RateCount.__table__)
_SUM = (select(func.coalesce(func.sum(_RATES.c.n), 0))
        .where(_RATES.c.scope == bindparam("scope"), _RATES.c.key == bindparam("key"), _RATES.c.at > bindparam("since")))
_SUMS = (select(_RATES.c.scope, _RATES.c.key, func.sum(_RATES.c.n))
         .where(_RATES.c.scope.in_(bindparam("scopes", expanding=True)),
                _RATES.c.key.in_(bindparam("keys", expanding=True)),
                _RATES.c.at > bindparam("since"))
         .group_by(_RATES.c.scope, _RATES.c.key))


class RateBook:
    """One transaction's view of the rate counters: window sums read, attempts not yet written."""

    def __init__(self) -> None:
        self.base: dict[tuple[str, str], int] = {}
        self.added: dict[tuple[str, str], int] = {}
        self.pending: dict[tuple[str, str, int], int] = {}

    def add(self, scope: str, key: str, at: int) -> None:
        self.added[(scope, key)] = self.added.get((scope, key), 0) + 1
        self.pending[(scope, key, at)] = self.pending.get((scope, key, at), 0) + 1

    def flush(self, s: Session) -> None:
        # sorted: concurrent writers take the counter rows' locks in one order (no deadlock)
        rows = [{"scope": sc, "key": k, "at": at, "n": n} for (sc, k, at), n in sorted(self.pending.items())]
        self.pending = {}
        db.upsert_add(s, _RATES, rows, ("scope", "key", "at"), "n")


class RateLimits:
    def __init__(self, settings: Settings, now: Callable[[], int]) -> None:
        self.settings = settings
        self.now = now

    def book(self, s: Session) -> RateBook:
        """This transaction's view of the counters (created on first use, flushed before commit)."""
        sc = db.scratch(s)
        book: RateBook | None = sc.get("rates")
        if book is None:
            book = sc["rates"] = RateBook()
            db.before_commit(s, book.flush)
        return book

    def count(self, s: Session, scope: str, key: str) -> int:
        """Attempts on (scope, key) within the window, this transaction's included."""
        book = self.book(s)
        base = book.base.get((scope, key))
        if base is None:
            since = self.now() - self.settings.rate_window_s
            row = s.connection().execute(_SUM, {"scope": scope, "key": key, "since": since}).first()
            base = book.base[(scope, key)] = int(row[0]) if row else 0
        return base + book.added.get((scope, key), 0)

    @staticmethod
    def window_sum(scope: str, key: ColumnElement[str] | InstrumentedAttribute[str]) -> ScalarSelect[int]:
        """A column for a query of cases, stores or members: the `scope` window's sum for the
        row's `key` (bind `since` to `since(now)`), so a batch reads its cases, and its cards'
        members, with their windows in one statement each (batch.py); the sums go to `seed`."""
        return (select(func.coalesce(func.sum(_RATES.c.n), 0))
                .where(_RATES.c.scope == scope, _RATES.c.key == key, _RATES.c.at > bindparam("since"))
                .scalar_subquery())

    def since(self) -> int:
        return self.now() - self.settings.rate_window_s

    def seed(self, s: Session, sums: Iterable[tuple[str, str, int]]) -> None:
        """Window sums read with `window_sum`, as (scope, key, sum), for this transaction's book."""
        base = self.book(s).base
        for scope, key, n in sums:
            base.setdefault((scope, key), int(n))

    def prefetch(self, s: Session, stores: Iterable[str], cases: Iterable[str]) -> None:
        """Sum the store and case windows of a batch in one query instead of one per key."""
        book = self.book(s)
        wanted = {("store", k) for k in stores} | {("case", k) for k in cases}
        wanted -= book.base.keys()
        if not wanted:
            return
        for pair in wanted:
            book.base[pair] = 0
        since = self.now() - self.settings.rate_window_s
        params = {"scopes": ["case", "store"], "keys": sorted({k for _, k in wanted}), "since": since}
        for scope, key, n in s.connection().execute(_SUMS, params):
            if (scope, key) in wanted:  # a store and a case may share an id
                book.base[(scope, key)] = int(n)

    def want(self, s: Session, pairs: Iterable[tuple[str, str]]) -> None:
        """Sum the windows of these (scope, key) pairs that this transaction has not read yet, in
        one query: a typed phone number names five windows of its own (its number, its member,
        and the wrong-code windows), each a statement of its own before."""
        book = self.book(s)
        wanted = set(pairs) - book.base.keys()
        if not wanted:
            return
        for pair in wanted:
            book.base[pair] = 0
        params = {"scopes": sorted({sc for sc, _ in wanted}), "keys": sorted({k for _, k in wanted}),
                  "since": self.since()}
        for scope, key, n in s.connection().execute(_SUMS, params):
            if (scope, key) in wanted:  # the IN lists cross: another pair's scope with this key
                book.base[(scope, key)] = int(n)

    def record(self, s: Session, scope: str, key: str) -> None:
        self.book(s).add(scope, key, self.now())

    def hit(self, s: Session, scope: str, key: str, limit: int) -> bool:
        """Count one attempt (allowed or not, so hammering stays limited); True while within limit."""
        self.record(s, scope, key)
        return self.count(s, scope, key) <= limit
