"""A typed phone number through the worker's batch (batch.py, policy.on_phone): what it costs the
database, and that the reply signed after the commit (the text is sent first: Decided.finish)
uses the case's key and seq as they are then, not as the batch read them.

Statements are counted with SQLAlchemy's cursor events on the batch's engine and the runtime's
(on SQLite they differ: durability.py), so the count covers the batch and its finish.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select

from casecloud import registry
from casecloud.batch import Handler
from casecloud.models import Case, Challenge, SmsOutbox
from casecloud.runtime import Runtime
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock
from tests.cloud.test_batch import Sim

NUMBER = "2025550123"


@pytest.fixture
def sim(rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> Sim:
    out = Sim(rt, clock, "c1", shop["key"])
    assert out.open(Handler(rt).handle(*out.msg("status", {"t": "hello", "fw": "1.0"})))[0]["t"] == "time"
    return out


def _engines(rt: Runtime) -> list[Engine]:
    bind = rt.batch_sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return list({id(e): e for e in (bind, rt.engine)}.values())


@pytest.fixture
def statements(rt: Runtime) -> Iterator[list[str]]:
    """Every statement the runtime's engines run meanwhile: its verb, and for a SELECT the first
    of cases, members, rate_counts it reads from (a query of cases reads their rate windows in
    subqueries)."""
    seen: list[str] = []

    def count(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb == "SELECT":
            verb += " " + next((t for t in ("cases", "members", "rate_counts") if f"FROM {t}" in statement), "?")
        seen.append(verb)

    engines = _engines(rt)
    for e in engines:
        event.listen(e, "before_cursor_execute", count)
    yield seen
    for e in engines:
        event.remove(e, "before_cursor_execute", count)


def _phone(sim: Sim) -> tuple[str, bytes]:
    return sim.msg("req", {"t": "phone", "num": NUMBER})


def test_a_typed_number_reads_its_rate_windows_at_once(rt: Runtime, sim: Sim, statements: list[str]) -> None:
    d = Handler(rt).decide([_phone(sim)])
    assert d.ready == [[]] and len(d.later) == 1  # answered once the code is texted
    batch = list(statements)
    (rep,) = sim.open(d.finish()[0])
    assert rep["t"] == "challenge" and rep["last2"] == "23"
    lock = ["SELECT cases"] if rt.engine.dialect.name == "postgresql" else []
    # the case with its store and windows; the member who has the number; the windows of the
    # number, its member and the wrong-code limits, in one statement (before: one each, five);
    # the replay window and seqs; the challenge, the journal row and the rate counts
    assert batch == [*lock, "SELECT cases", "SELECT members", "SELECT rate_counts", "UPDATE", "INSERT", "INSERT",
                     "INSERT"], batch
    # after the commit: the text in the dev outbox, in its transaction; the reply's seq taken
    # with what signing needs, in its own (before: the case read first, then the seq)
    assert statements[len(batch):] == ["INSERT", "UPDATE"], statements[len(batch):]


def test_the_reply_after_a_key_rotation_is_signed_with_the_new_key(rt: Runtime, clock: FakeClock, sim: Sim) -> None:
    """The handler keeps opened keys by their sealed value: a key rotated between the batch and
    the reply's signing is read with the seq, and the reply is signed with it."""
    h = Handler(rt)
    d = h.decide([_phone(sim)])
    with rt.sessions.begin() as s:
        _, sec = registry.rotate_case(s, "c1")
    (out,) = d.finish()[0]
    with pytest.raises(P.Rejected):
        sim.open([out])  # not the old key's
    rotated = Sim(rt, clock, "c1", bytes.fromhex(sec.key_hex))
    rotated.codec.synced, rotated.codec.offset = True, sim.codec.offset  # the same board, its clock set
    assert rotated.open([out])[0]["t"] == "challenge"
    # and the next batch checks with the new key too: the old one's message is refused
    assert h.handle(*sim.msg("req", {"t": "help"})) == []
    assert h.rejected["bad_sig"] == 1


def test_the_reply_takes_the_seq_after_those_sent_meanwhile(rt: Runtime, sim: Sim) -> None:
    h = Handler(rt)
    d = h.decide([_phone(sim)])
    with rt.sessions() as s:
        before = s.scalar(select(Case.tx_seq).where(Case.id == "c1"))
    # the API sends the case a command meanwhile (its own seq: channel.seal)
    (other,) = h.handle(*sim.msg("status", {"t": "hello", "fw": "1.0"}))
    (out,) = d.finish()[0]
    with rt.sessions() as s:
        after = s.scalar(select(Case.tx_seq).where(Case.id == "c1"))
    assert after == (before or 0) + 2
    assert sim.open([other])[0]["t"] == "time" and sim.open([out])[0]["t"] == "challenge"


def test_a_case_deleted_before_its_reply_is_signed_gets_none(rt: Runtime, sim: Sim,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    h = Handler(rt)
    d = h.decide([_phone(sim)])
    with rt.sessions.begin() as s:
        s.execute(delete(Challenge))
        case = s.get(Case, "c1")
        assert case is not None
        s.delete(case)
    assert d.finish() == [[]]
    assert "failed to finish a request of case c1" in caplog.text
    with rt.sessions() as s:  # the text went out before (the code's shopper was standing there)
        assert s.scalar(select(func.count()).select_from(SmsOutbox)) == 1
