"""The worker under load and faults (backpressure.py, outage.py): requests past their deadline are
shed unread, a request whose deadline passes while it is decided is journaled late (neither
allowed nor rate-counted), and a database outage holds messages unacknowledged until the database
is back. A real Mosquitto, SQLite and a real PostgreSQL (stopped and started for the outage)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casecloud import ratelimit, registry
from casecloud.adapters.loyalty import Holder
from casecloud.adapters.notify import RecordingNotifier
from casecloud.backpressure import Load, deadline
from casecloud.models import Case, Event, Member, RateCount
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.worker import Worker
from tests.cloud.conftest import FakeClock
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, wait_for
from tests.cloud.pgserver import PgServer

CARD = "0badge01"
TAP = {"t": "token", "tok": CARD, "src": "nfc"}


def _trusted_member(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        registry.create_member(s, rt.hasher, rt.now(), card=CARD, status="trusted")


def _pg_shop(rt: Runtime) -> registry.CaseSecrets:
    """Store s1 with case c1 and the trusted member, on a runtime made without the `shop` fixture."""
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now(), name="Main St")
        _, sec = registry.register_case(s, "s1", "c1", rt.now())
    _trusted_member(rt)
    return sec


def _kinds(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return sorted(s.scalars(select(Event.kind).where(Event.source == "cloud")))


def _counted(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.coalesce(func.sum(RateCount.n), 0))) or 0)


def test_request_past_its_deadline_is_shed_unread(rt: Runtime, worker: Worker, case: FakeCase,
                                                 clock: FakeClock) -> None:
    _trusted_member(rt)
    # Its signed exp is 30 s away, but the case stopped waiting after req_wait_s (8 s): an allow
    # now would open nothing and still be journaled and counted.
    clock.advance(rt.settings.req_wait_s + 1)
    case.send("req", dict(TAP))
    wait_for(lambda: worker.load.shed["expired"] == 1)
    assert case.quiet(0.3) == []
    assert _kinds(rt) == [] and _counted(rt) == 0  # no decision, no journal row, no rate count
    clock.advance(-(rt.settings.req_wait_s + 1))  # in time: decided, answered and counted
    req, _ = case.send("req", dict(TAP))
    assert case.expect("rep", re=req["id"])["t"] == "allow"
    assert _kinds(rt) == ["allow"] and _counted(rt) > 0
    # Not shed: a heartbeat from the same moment (status messages are never shed by deadline).
    clock.advance(rt.settings.req_wait_s + 1)
    case.send("status", {"t": "beat", "up": 7, "door": "open"})
    wait_for(lambda: _status(rt).get("door") == "open")
    assert worker.load.shed["expired"] == 1


def _status(rt: Runtime) -> dict[str, Any]:
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        return dict(c.last_status or {}) if c else {}


class _SlowLoyalty:
    """The built-in member table behind a lookup that takes `seconds` of the (fake) clock, as a
    slow loyalty webhook would: the request's deadline passes while it is being decided."""

    def __init__(self, inner: Any, clock: FakeClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def by_phone(self, s: Session, e164: str) -> Member | None:
        return self.inner.by_phone(s, e164)

    def by_token(self, s: Session, token: str, src: str) -> Holder | None:
        self.clock.advance(self.seconds)
        return self.inner.by_token(s, token, src)


def test_request_that_expires_mid_decision_is_late_not_allowed(rt: Runtime, worker: Worker, case: FakeCase,
                                                               clock: FakeClock) -> None:
    _trusted_member(rt)
    rt.policy.loyalty = _SlowLoyalty(rt.policy.loyalty, clock, rt.settings.req_wait_s)
    req, _ = case.send("req", dict(TAP))
    wait_for(lambda: worker.load.late == 1)
    assert case.quiet(0.3) == []  # the case is not told to open for a tap it gave up on
    with rt.sessions() as s:
        rows = list(s.scalars(select(Event).where(Event.source == "cloud")))
    assert [(e.kind, e.data["t"]) for e in rows] == [("late", "token")]
    assert rows[0].data["late_ms"] >= 0 and rows[0].member_id is None
    assert _counted(rt) == 0  # not counted against any limit
    assert worker.load.shed.total() == 0


def test_request_that_expires_in_the_commits_own_work_is_late_not_allowed(
        rt: Runtime, worker: Worker, case: FakeCase, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline passes in the work a commit does first (here the rate upsert; as well the
    # journal insert, or the alerts' flush waiting on another worker's lock), after every check of
    # the decision itself: the last check must come after that work, not before it.
    _trusted_member(rt)
    flush = ratelimit.RateBook.flush
    slow = [rt.settings.req_wait_s]

    def slow_flush(book: Any, s: Session) -> None:
        if slow:
            clock.advance(slow.pop())
        flush(book, s)

    monkeypatch.setattr(ratelimit.RateBook, "flush", slow_flush)
    case.send("req", dict(TAP))
    wait_for(lambda: worker.load.late == 1)
    assert case.quiet(0.3) == []
    assert _cloud_rows(rt) == [("late", "token")]
    assert _counted(rt) == 0


def _cloud_rows(rt: Runtime) -> list[tuple[str, str | None]]:
    with rt.sessions() as s:
        return [(e.kind, e.data.get("t")) for e in s.scalars(select(Event).where(Event.source == "cloud"))]


# --- database outage -------------------------------------------------------------------------


@pytest.fixture
def pg_rt(tmp_path: Path, pg_server: PgServer, clock: FakeClock) -> Iterator[Runtime]:
    """A runtime on a database of the session's PostgreSQL server, which the test stops: started
    again at the end whatever happens, so the tests after it still have it."""
    name = pg_server.create_database()
    st = Settings(data_dir=tmp_path / "data", admin_token=SecretStr("test-admin-token"),
                  database_url=pg_server.url(name))
    r = build(st, clock=clock, notifier=RecordingNotifier())
    try:
        yield r
    finally:
        if not pg_server.running():
            pg_server._start()
        r.engine.dispose()
        pg_server.drop_database(name)


def test_database_outage_holds_messages_and_answers_them_after(
        pg_rt: Runtime, pg_server: PgServer, broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    rt = pg_rt
    sec = _pg_shop(rt)
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    caplog.set_level(logging.INFO, logger="casecloud")
    loop, w = Loop(), Worker(rt)
    loop.start(w.run())
    case = FakeCase(*broker, "s1", "c1", bytes.fromhex(sec.key_hex))
    try:
        wait_for(w.connected.is_set)
        case.hello()
        with pg_server.connect() as c:  # the server runs with synchronous_commit off: on disk first
            c.execute("CHECKPOINT")
        pg_server.stop()
        evts = [{"i": f"o-{n}", "k": "opened", "ts": 1749999000 + n} for n in range(3)]
        b, _ = case.send("evt", {"t": "evts", "evts": evts})
        req, _ = case.send("req", dict(TAP))
        wait_for(lambda: any("database unavailable" in r.getMessage() for r in caplog.records), 20)
        assert case.quiet(1.0) == []  # held: nothing answered, nothing dropped
        assert w.load.held >= 1

        # The worker stops and a new one takes over its session while the database is still
        # away: what the first held was never acknowledged, so the broker hands it over.
        loop.close()
        loop, w = Loop(), Worker(rt)
        loop.start(w.run())
        wait_for(lambda: sum("database unavailable" in r.getMessage() for r in caplog.records) == 2, 30)

        pg_server._start()
        assert case.expect("evtack", re=b["id"], timeout=30)["ids"] == [e["i"] for e in evts]
        assert case.expect("rep", re=req["id"], timeout=30)["t"] == "allow"
    finally:
        case.close()
        loop.close()
    with rt.sessions() as s:
        assert sorted(s.scalars(select(Event.event_id).where(Event.source == "case"))) == ["o-0", "o-1", "o-2"]
    said = [r for r in caplog.records if r.name.startswith("casecloud")]
    down = [r.getMessage() for r in said if "database unavailable" in r.getMessage()]
    back = [r.getMessage() for r in said if "database back" in r.getMessage()]
    assert len(down) == 2 and all(re.fullmatch(r"database unavailable \(\d+ messages held\)", m) for m in down)
    assert len(back) == 1 and re.fullmatch(r"database back after [\d.]+ s \(\d+ messages held\)", back[0])
    assert not [r for r in said if r.exc_info], "no traceback for an outage"


class _Link:
    """A TCP relay between the worker and the broker that the test cuts (and then refuses new
    connections through): the worker loses its broker connection while the broker, and the
    worker's persistent session in it, live on."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.up = target, True
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.addr: tuple[str, int] = ("127.0.0.1", self.srv.getsockname()[1])
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            if not self.up:
                a.close()
                continue
            b = socket.create_connection(self.target)
            self.socks += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(x: socket.socket, y: socket.socket) -> None:
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        for sock in (x, y):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        socks, self.socks = self.socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        self.srv.close()


def test_broker_link_lost_during_an_outage_decides_nothing_until_redelivered(
        pg_rt: Runtime, pg_server: PgServer, broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    """The worker's broker connection drops while it holds a batch through a database outage.
    Deciding the batch once the database is back would commit an `allow` whose reply cannot be
    sent (the connection is gone), and the broker's redelivery would then be refused as a replay:
    an allow journaled for a tap that showed "No answer". Instead nothing is decided until the
    worker has reconnected and the broker has delivered the batch again: answered once."""
    rt = pg_rt
    sec = _pg_shop(rt)
    link = _Link(broker)
    rt.settings.mqtt_host, rt.settings.mqtt_port = link.addr
    caplog.set_level(logging.INFO, logger="casecloud")
    loop, w = Loop(), Worker(rt)
    loop.start(w.run())
    case = FakeCase(*broker, "s1", "c1", bytes.fromhex(sec.key_hex))
    try:
        wait_for(w.connected.is_set)
        case.hello()
        with pg_server.connect() as c:
            c.execute("CHECKPOINT")
        pg_server.stop()
        req, _ = case.send("req", dict(TAP))
        wait_for(lambda: any("database unavailable" in r.getMessage() for r in caplog.records), 20)
        link.cut()  # the broker sees the worker gone; its session keeps the unacknowledged request
        time.sleep(0.5)
        pg_server._start()
        wait_for(lambda: any("database back" in r.getMessage() for r in caplog.records), 30)
        link.up = True
        assert case.expect("rep", re=req["id"], timeout=30)["t"] == "allow"
        assert [m for m in case.quiet(1.0) if m.get("re") == req["id"]] == []  # once
    finally:
        case.close()
        loop.close()
        link.close()
    assert _kinds(rt) == ["allow"]  # the one answered: none without a reply
    assert w.handler.rejected["replay"] == 0


# --- the deadline and the shedding rule, without a broker ------------------------------------


def test_deadline_is_the_cases_wait_or_exp_less_the_margin() -> None:
    def env(exp: Any) -> bytes:
        return json.dumps({"p": json.dumps({"exp": exp}), "s": "00"}).encode()

    req = "lockcase/v1/s1/c1/req"
    assert deadline(req, env(1000), 8, 0.5) == 1000 - 30 + 8 - 0.5  # the case gave up first
    assert deadline(req, env(1000), 40, 0.5) == 1000 - 0.5  # the signed expiry first
    assert deadline("lockcase/v1/s1/c1/evt", env(1000), 8, 0.5) is None  # events are never shed
    assert deadline("lockcase/v1/s1/c1/status", env(1000), 8, 0.5) is None
    for junk in (b"", b"[]", b'{"p":"[]","s":""}', env("1000"), env(True), b"x" * 5000):
        assert deadline(req, junk, 8, 0.5) is None  # left to the batch's checks to refuse


def test_shed_when_past_or_when_the_batch_would_take_longer() -> None:
    load = Load()
    load.timed(0.02, 4)  # 5 ms a message, 20 ms a batch
    now = 1000.0
    got = load.sift([None, now - 0.001, now + 0.01, now + 0.5, None], now)
    # 5 messages at 5 ms each: 25 ms ahead, so a request due in 10 ms cannot be answered in time
    assert got == [None, "expired", "no_time", None, None]
    assert load.shed == {"expired": 1, "no_time": 1}
