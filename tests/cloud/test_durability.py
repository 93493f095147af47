"""The worker's request path: what a batch costs the database, when its commit reaches the disk,
and what an OS crash that lost the last commits cannot allow (durability.py, docs/cloud.md#durability).

Statements are counted with SQLAlchemy's cursor events (deterministic). The OS crash is played
on SQLite's files: the database as it was on disk at the last WAL sync is put back after a
decision was committed and answered but not synced, and the runtime starts on another boot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, event, func, select

from casecloud import channel, durability, registry
from casecloud.batch import Handler
from casecloud.durability import WalSync
from casecloud.models import Case, Challenge, Event
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.conftest import FakeClock, RecordingNotifier
from tests.cloud.helpers import texted_code
from tests.cloud.test_batch import CARD, Sim


@pytest.fixture
def sims(rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> list[Sim]:
    """Ten synced cases of store s1 (c1 of the shop fixture, c2..c10); a trusted member's card."""
    keys = {"c1": shop["key"]}
    with rt.sessions.begin() as s:
        for n in range(2, 11):
            keys[f"c{n}"] = bytes.fromhex(registry.register_case(s, "s1", f"c{n}", rt.now())[1].key_hex)
        registry.create_member(s, rt.hasher, rt.now(), card=CARD, status="trusted")
    out = [Sim(rt, clock, cid, key) for cid, key in keys.items()]
    h = Handler(rt)
    for sim, outs in zip(out, h.handle_batch([sim.msg("status", {"t": "hello", "fw": "1.0"}) for sim in out]),
                         strict=True):
        assert sim.open(outs)[0]["t"] == "time" and sim.codec.synced
    return out


def _engine(rt: Runtime) -> Engine:
    bind = rt.batch_sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def _statements(rt: Runtime, h: Handler, batch: list[tuple[str, bytes]]) -> tuple[list[str], Any]:
    seen: list[str] = []

    def count(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(_engine(rt), "before_cursor_execute", count)
    try:
        d = h.decide(batch)
    finally:
        event.remove(_engine(rt), "before_cursor_execute", count)
    return seen, d


def _five(rt: Runtime) -> list[str]:
    """A batch's statements; on PostgreSQL its cases' rows locked first (batch.py), one more."""
    lock = ["SELECT"] if rt.engine.dialect.name == "postgresql" else []
    return [*lock, "SELECT", "SELECT", "UPDATE", "INSERT", "INSERT"]


def test_a_card_request_costs_five_statements(rt: Runtime, sims: list[Sim]) -> None:
    h = Handler(rt)
    seen, d = _statements(rt, h, [sims[0].token()])
    assert sims[0].open(d.ready[0])[0]["t"] == "allow"
    # the case, its store and their rate windows; the member with its window; the replay window
    # and seqs; the journal row; the rate counts (before: the member's window apart, six; before
    # that, the case and store, then their windows apart: seven)
    assert seen == _five(rt), seen


def test_a_batch_of_card_requests_costs_what_one_does(rt: Runtime, sims: list[Sim]) -> None:
    h = Handler(rt)
    seen, d = _statements(rt, h, [sim.token() for sim in sims])
    assert [sim.open(r)[0]["t"] for sim, r in zip(sims, d.ready, strict=True)] == ["allow"] * len(sims)
    assert seen == _five(rt), seen


def test_a_batch_of_requests_with_different_cards_costs_what_one_does(rt: Runtime, sims: list[Sim]) -> None:
    with rt.sessions.begin() as s:  # each case's shopper with a card of their own, one unknown
        for n in range(len(sims) - 1):
            registry.create_member(s, rt.hasher, rt.now(), card=f"0c{n:06x}", status="trusted")
    h = Handler(rt)
    seen, d = _statements(rt, h, [sim.token(f"0c{n:06x}") for n, sim in enumerate(sims)])
    assert [sim.open(r)[0]["t"] for sim, r in zip(sims, d.ready, strict=True)] == ["allow"] * 9 + ["deny"]
    # the members of every card looked up at once, with their rate windows (before: two
    # statements a card, then two for all)
    assert seen == _five(rt), seen


# --- when a commit is on disk (SQLite) ------------------------------------------------------------

@pytest.fixture
def sqlite_rt(tmp_path: Path, clock: FakeClock) -> Iterator[Runtime]:
    r = build(Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0ken")), clock=clock,
              notifier=RecordingNotifier())
    yield r
    r.close()


class CountingSync(WalSync):
    def __init__(self, wal: WalSync) -> None:
        super().__init__(Path(str(wal.path).removesuffix("-wal")))
        self.calls = 0

    def sync(self) -> None:
        self.calls += 1
        super().sync()


def _shop(rt: Runtime, clock: FakeClock) -> Sim:
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now(), name="Main St")
        _, sec = registry.register_case(s, "s1", "c1", rt.now())
        registry.create_member(s, rt.hasher, rt.now(), card=CARD, status="trusted")
    sim = Sim(rt, clock, "c1", bytes.fromhex(sec.key_hex))
    assert sim.open(Handler(rt).handle(*sim.msg("status", {"t": "hello", "fw": "1.0"})))[0]["t"] == "time"
    assert sim.codec.synced
    return sim


def test_requests_are_answered_before_the_sync_and_events_after_it(sqlite_rt: Runtime, clock: FakeClock) -> None:
    rt = sqlite_rt
    sim = _shop(rt, clock)
    assert rt.wal is not None
    rt.wal = spy = CountingSync(rt.wal)
    h = Handler(rt)
    d = h.decide([sim.token()])
    assert sim.open(d.ready[0])[0]["t"] == "allow"
    assert (d.synced, spy.calls) == (False, 0)  # answered now; the worker has the WAL synced next
    d = h.decide([sim.msg("evt", {"t": "evts", "evts": [{"i": "e1", "k": "opened", "ts": 1}]})])
    assert sim.open(d.ready[0])[0]["ids"] == ["e1"]
    assert (d.synced, spy.calls) == (True, 1)  # the case deletes what is acknowledged: on disk first


def test_other_databases_commit_synchronously(rt: Runtime) -> None:
    if rt.settings.db_url.startswith("sqlite"):
        assert rt.wal is not None and rt.batch_sessions is not rt.sessions
    else:
        assert rt.wal is None and rt.batch_sessions is rt.sessions


# --- an OS crash after the answer ---------------------------------------------------------------

def _files(data: Path) -> list[Path]:
    return [p for p in data.iterdir() if p.name.startswith("casecloud.db") and not p.name.endswith(".boot")]


def _allows(rt: Runtime) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Event).where(Event.kind == "allow")) or 0)


def test_an_os_crash_after_the_answer_cannot_grant_twice(tmp_path: Path, clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0ken"))
    monkeypatch.setattr(durability, "boot_id", lambda: "boot-1")
    rt = build(settings, clock=clock, notifier=RecordingNotifier())
    sim = _shop(rt, clock)
    h = Handler(rt)
    (challenge,) = sim.open(h.handle(*sim.msg("req", {"t": "phone", "num": "2025550143"})))
    assert challenge["t"] == "challenge"
    sid, code = challenge["sid"], texted_code(rt)
    with rt.sessions() as s:
        tx_before = s.get(Case, "c1").tx_seq  # type: ignore[union-attr]
    assert rt.wal is not None
    rt.wal.sync()
    disk = tmp_path / "disk"  # what is on disk after the last sync
    disk.mkdir()
    for f in _files(settings.data_dir):
        shutil.copy2(f, disk / f.name)

    clock.advance(3)
    otp = sim.msg("req", {"t": "otp", "sid": sid, "code": code})
    (answer,) = sim.open(h.handle(*otp))
    assert answer["t"] == "allow" and _allows(rt) == 1  # committed, answered, not yet synced
    rt.close()

    # Power cut: the commit of the allow (the code used, the window moved) never reached the disk.
    for f in _files(settings.data_dir):
        f.unlink()
    for f in disk.iterdir():
        shutil.copy2(f, settings.data_dir / f.name)
    monkeypatch.setattr(durability, "boot_id", lambda: "boot-2")
    clock.advance(2)  # back within the request's wait, as a fast reboot could be
    rt = build(settings, clock=clock, notifier=RecordingNotifier())
    try:
        assert _allows(rt) == 0  # the allow was lost with its commit
        assert rt.replay_floor == rt.now() + 30 + 5
        h = Handler(rt)
        # The captured answer's request, replayed within its life: the rolled-back window would take it.
        assert h.handle(*otp) == [] and h.rejected["replay"] == 1
        # The code again, in a message the case signs now (past the floor): the code is closed.
        clock.advance(11)
        (again,) = sim.open(h.handle(*sim.msg("req", {"t": "otp", "sid": sid, "code": code})))
        assert (again["t"], again["why"]) == ("deny", "expired")
        assert _allows(rt) == 0
        with rt.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Challenge).where(Challenge.done.is_(False))) == 0
            # the cloud's outgoing seqs moved past any it may have signed before the crash
            assert s.get(Case, "c1").tx_seq >= tx_before + channel.RESYNC_TX_JUMP  # type: ignore[union-attr]
        # and the case takes the cloud's messages: a card opens at once
        assert sim.open(h.handle(*sim.token()))[0]["t"] == "allow"
    finally:
        rt.close()


def test_recovery_runs_once_per_boot(tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0ken"))
    monkeypatch.setattr(durability, "boot_id", lambda: "boot-1")
    rt = build(settings, clock=clock, notifier=RecordingNotifier())
    assert rt.replay_floor == 0  # a new database: nothing to recover
    _shop(rt, clock)
    rt.close()

    def tx() -> int:
        with rt.sessions() as s:
            return s.get(Case, "c1").tx_seq  # type: ignore[union-attr]

    rt = build(settings, clock=clock, notifier=RecordingNotifier())  # the same boot: a restart
    assert rt.replay_floor == 0
    tx0 = tx()
    rt.close()
    monkeypatch.setattr(durability, "boot_id", lambda: "boot-2")
    rt = build(settings, clock=clock, notifier=RecordingNotifier())
    floor, tx1 = rt.replay_floor, tx()
    rt.close()
    assert floor > 0 and tx1 == tx0 + channel.RESYNC_TX_JUMP
    clock.advance(60)
    rt = build(settings, clock=clock, notifier=RecordingNotifier())  # another process, same boot
    try:
        assert (rt.replay_floor, tx()) == (floor, tx1)
    finally:
        rt.close()


def test_an_unreadable_marker_counts_as_another_boot(tmp_path: Path, clock: FakeClock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0ken"))
    monkeypatch.setattr(durability, "boot_id", lambda: "boot-1")
    build(settings, clock=clock, notifier=RecordingNotifier()).close()
    (settings.data_dir / "casecloud.db.boot").write_bytes(b"")  # cut while it was rewritten
    rt = build(settings, clock=clock, notifier=RecordingNotifier())
    try:
        assert rt.replay_floor == rt.now() + 35
    finally:
        rt.close()
