"""The worker's batches: many messages checked and decided in one transaction (batch.py).

Batches are driven through `Handler.handle_batch` / `Handler.decide` with cases signing with the
firmware codec, against a real database (SQLite, PostgreSQL); no broker is needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, func, select, text

from casecloud import batch, channel, codec, db, metrics, ratelimit, registry
from casecloud.batch import Handler, Out
from casecloud.models import Alert, Case, Event, Member, RateCount
from casecloud.runtime import Runtime
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock
from tests.cloud.rowlocks import meanwhile, until_waiting

CARD = "04AABBCC"


class Sim:
    """One case's side of the conversation: signs with the firmware codec, opens our replies."""

    def __init__(self, rt: Runtime, clock: FakeClock, case: str, key: bytes, store: str = "s1") -> None:
        self.topics = P.topics("lockcase/v1", store, case)
        self.codec = P.Codec(case, key, P.MemorySeqs(), clock=clock)

    def msg(self, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        return self.topics[kind], self.codec.sign(self.topics[kind], body)

    def token(self, tok: str = CARD) -> tuple[str, bytes]:
        return self.msg("req", {"t": "token", "tok": tok, "src": "nfc"})

    def open(self, outs: list[Out]) -> list[dict[str, Any]]:
        return [self.codec.open(o.topic, o.payload) for o in outs]


@pytest.fixture
def cases(rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> dict[str, Sim]:
    """c1 (of the shop fixture) and c2, both synced with the cloud; a trusted member's card."""
    with rt.sessions.begin() as s:
        _, sec2 = registry.register_case(s, "s1", "c2", rt.now())
        registry.create_member(s, rt.hasher, rt.now(), card=CARD, status="trusted")
    sims = {"c1": Sim(rt, clock, "c1", shop["key"]), "c2": Sim(rt, clock, "c2", bytes.fromhex(sec2.key_hex))}
    h = Handler(rt)
    for sim in sims.values():
        (out,) = h.handle(*sim.msg("status", {"t": "hello", "fw": "1.0"}))
        assert sim.open([out])[0]["t"] == "time" and sim.codec.synced
    return sims


def count(rt: Runtime, stmt: Any) -> int:
    with rt.sessions() as s:
        return int(s.scalar(stmt) or 0)


def allows(rt: Runtime) -> int:
    return count(rt, select(func.count()).select_from(Event).where(Event.kind == "allow"))


def rate(rt: Runtime, scope: str, key: str) -> int:
    return count(rt, select(func.sum(RateCount.n)).where(RateCount.scope == scope, RateCount.key == key))


def test_batch_keeps_per_message_results_and_order(rt: Runtime, cases: dict[str, Sim]) -> None:
    c1, c2 = cases["c1"], cases["c2"]
    tok = c1.token()
    forged = P.Codec("c1", bytes(32), P.MemorySeqs(500, 500), clock=c1.codec.clock)
    forged.synced, forged.offset = True, 0
    batch = [
        tok,                                                                     # 0 allow
        (c1.topics["req"], forged.sign(c1.topics["req"], {"t": "help"})),         # 1 bad_sig
        tok,                                                                     # 2 replay of 0
        c2.msg("evt", {"t": "evts", "evts": [{"i": "e1", "k": "opened", "ts": 1}]}),  # 3 evtack
        c1.msg("status", {"t": "beat", "up": 5, "door": "closed"}),              # 4 nothing
        ("lockcase/v1/s1/c2/presence", b"offline"),                              # 5 nothing
        ("lockcase/v1/s1/ghost/req", tok[1]),                                    # 6 unknown_case
        c2.msg("req", {"t": "help", "why": "assist"}),                           # 7 ok, after staff are told
        c1.msg("req", {"t": "phone", "num": "2025554567"}),                      # 8 challenge, after the text
        c1.token(),                                                              # 9 allow
        c2.token(),                                                              # 10 allow
    ]
    outs = Handler(rt).handle_batch(batch)
    assert len(outs) == len(batch)
    assert [len(o) for o in outs] == [1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]
    sim_of = {i: (c2 if i in (3, 7, 10) else c1) for i in range(len(batch))}
    bodies = {i: sim_of[i].open(o)[0] for i, o in enumerate(outs) if o}
    assert {i: b["t"] for i, b in bodies.items()} == {0: "allow", 3: "evtack", 7: "ok", 8: "challenge", 9: "allow",
                                                     10: "allow"}
    for i, b in bodies.items():
        assert b["re"] == P.verify(sim_of[i].codec.key, batch[i][0], batch[i][1])[1]["id"]  # answers its request
    # replies decided in the batch carry the seqs reserved for it, in message order
    assert bodies[0]["seq"] < bodies[9]["seq"]
    with rt.sessions() as s:
        case1, case2 = s.get(Case, "c1"), s.get(Case, "c2")
        assert case1 is not None and case2 is not None
        assert case1.last_status == {"up": 5, "door": "closed"} and not case2.online
        assert case1.rx_seq == c1.codec.tx and case2.rx_seq == c2.codec.tx


def test_replay_state_of_a_batch_survives_a_restart(rt: Runtime, cases: dict[str, Sim]) -> None:
    c1 = cases["c1"]
    batch = [c1.token() for _ in range(3)]
    assert all(len(o) == 1 for o in Handler(rt).handle_batch(batch))
    fresh = Handler(rt)  # a new process: only the database
    assert fresh.handle_batch(batch) == [[], [], []]
    assert fresh.rejected == {"replay": 3}


def test_rate_limit_reached_inside_a_batch(rt: Runtime, cases: dict[str, Sim], notifier: Any) -> None:
    rt.settings.rate_case = 3
    c1 = cases["c1"]
    outs = Handler(rt).handle_batch([c1.token() for _ in range(7)])
    got = [b["t"] if b["t"] != "deny" else b["why"] for o in outs for b in c1.open(o)]
    assert got == ["allow"] * 3 + ["rate_limited"] * 4
    assert rate(rt, "case", "c1") == 7 and rate(rt, "abuse:case", "c1") == 4
    # escalation: one alert for the case, delivered after the commit
    assert count(rt, select(func.count()).select_from(Alert).where(Alert.kind == "abuse")) == 1
    assert [m["kind"] for _, m in notifier.sent] == ["abuse"]
    # the counters carry over to the next batch, and the alert is not repeated
    (out,) = Handler(rt).handle_batch([c1.token()])
    assert c1.open(out)[0]["why"] == "rate_limited"
    assert count(rt, select(func.count()).select_from(Alert).where(Alert.kind == "abuse")) == 1


def test_store_limit_spans_the_cases_of_a_batch(rt: Runtime, cases: dict[str, Sim]) -> None:
    rt.settings.rate_store = 3
    c1, c2 = cases["c1"], cases["c2"]
    batch = [c1.token(), c2.token(), c1.token(), c2.token()]
    outs = Handler(rt).handle_batch(batch)
    got = [(c1 if i % 2 == 0 else c2).open(o)[0] for i, o in enumerate(outs)]
    assert [b["t"] for b in got] == ["allow", "allow", "allow", "deny"]
    assert rate(rt, "store", "s1") == 4


def test_member_windows_read_with_their_members_are_exact(rt: Runtime, cases: dict[str, Sim],
                                                         clock: FakeClock) -> None:
    """Each member's rate window comes with the member, in the statement that looks the batch's
    cards up (batch.py _prefetch): attempts of earlier batches and other cases count, those of a
    window that has passed do not, and two members of one batch each have their own."""
    rt.settings.rate_member = 3
    with rt.sessions.begin() as s:
        registry.create_member(s, rt.hasher, rt.now(), card="04DDEEFF", status="trusted")
    c1, c2 = cases["c1"], cases["c2"]

    def why(outs: list[list[Out]], sims: list[Sim]) -> list[str]:
        return [b.get("why", b["t"]) for sim, o in zip(sims, outs, strict=True) for b in sim.open(o)]

    h = Handler(rt)
    assert why(h.handle_batch([c1.token(), c2.token()]), [c1, c2]) == ["allow", "allow"]
    clock.advance(300)
    assert why(h.handle_batch([c2.token("04DDEEFF"), c1.token(), c2.token()]), [c2, c1, c2]) == [
        "allow", "allow", "rate_limited"]
    assert rate(rt, "member", member_id(rt, CARD)) == 4 and rate(rt, "member", member_id(rt, "04DDEEFF")) == 1
    # the first batch's two attempts out of the window, the second's two in it (refused ones count)
    clock.advance(rt.settings.rate_window_s - 300 + 1)
    assert why(h.handle_batch([c1.token(), c2.token(), c1.token("04DDEEFF")]), [c1, c2, c1]) == [
        "allow", "rate_limited", "allow"]


def test_one_case_and_one_card_looked_up_as_many_are(rt: Runtime, cases: dict[str, Sim], clock: FakeClock) -> None:
    """A batch of one case, or one card, reads them with an equality, a larger one with an IN list
    (batch.py, loyalty prefetch): the answers are the same either way."""
    with rt.sessions.begin() as s:
        registry.create_member(s, rt.hasher, rt.now(), card="04F1A66E", status="flagged")
    c1, c2 = cases["c1"], cases["c2"]
    h = Handler(rt)
    want = ["allow", "unknown", "flagged"]
    alone = [c1.open(h.handle_batch([c1.token(card)])[0])[0] for card in (CARD, "04000000", "04F1A66E")]
    assert [b.get("why", b["t"]) for b in alone] == want
    one_case = h.handle_batch([c1.token(card) for card in (CARD, "04000000", "04F1A66E")])
    assert [b.get("why", b["t"]) for o in one_case for b in c1.open(o)] == want
    two_cases = h.handle_batch([c1.token(CARD), c2.token("04000000"), c2.token("04F1A66E")])
    assert [b.get("why", b["t"]) for sim, o in zip((c1, c2, c2), two_cases, strict=True) for b in sim.open(o)] == want
    unknown = Sim(rt, clock, "c9", bytes(32))  # no such case, alone in its batch
    assert h.handle_batch([unknown.token()]) == [[]] and h.rejected["unknown_case"] == 1


@pytest.mark.parametrize("flagged_first", [True, False])
def test_a_card_held_by_a_flagged_and_a_trusted_member_is_refused(rt: Runtime, cases: dict[str, Sim],
                                                                   flagged_first: bool) -> None:
    """Nothing unique in the members table keeps a card from being given twice: whichever order
    the rows come in, a flagged holder decides, alone and in a batch, in the worker and in the API's
    lookup (a reviewer found the trusted one opened the case, 2026-12-02)."""
    card = "04D0B1E5"
    with rt.sessions.begin() as s:
        for status in (("flagged", "trusted") if flagged_first else ("trusted", "flagged")):
            registry.create_member(s, rt.hasher, rt.now(), card=card, status=status)
    c1 = cases["c1"]
    h = Handler(rt)
    alone = c1.open(h.handle_batch([c1.token(card)])[0])
    assert [b.get("why", b["t"]) for b in alone] == ["flagged"]
    both = h.handle_batch([c1.token(card), c1.token(card)])
    assert [b.get("why", b["t"]) for o in both for b in c1.open(o)] == ["flagged", "flagged"]
    with rt.sessions() as s:
        m = rt.policy.loyalty.by_token(s, card, "nfc")
        assert m is not None and m.status == "flagged"


def test_the_deadlines_the_worker_asked_for_are_not_computed_again(rt: Runtime, cases: dict[str, Sim],
                                                                   clock: FakeClock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker asks a batch's deadlines (to shed what is late), then has the rest decided without
    them: each payload is parsed for its deadline once, and the kept deadline is the one obeyed."""
    parsed: list[str] = []
    real = batch.deadline

    def counted(topic: str, payload: bytes, wait_s: float, margin_s: float) -> float | None:
        parsed.append(topic)
        return real(topic, payload, wait_s, margin_s)

    monkeypatch.setattr(batch, "deadline", counted)
    c1, c2 = cases["c1"], cases["c2"]
    h = Handler(rt)
    items = [c1.token(), c2.token(), c1.msg("status", {"t": "beat", "up": 1})]
    dl = h.deadlines(items)
    assert len(parsed) == 3 and dl[0] is not None and dl[2] is None
    d = h.decide(items[1:])  # what the worker did not shed, in order
    assert len(parsed) == 3 and c2.open(d.ready[0])[0]["t"] == "allow"
    late = c1.token()
    h.deadlines([late])
    clock.advance(rt.settings.req_wait_s)  # past its deadline, not its expiry
    assert h.decide([late]).ready == [[]] and len(parsed) == 4  # journaled late, as its kept deadline says
    with rt.sessions() as s:
        assert s.scalars(select(Event.kind).where(Event.source == "cloud").order_by(Event.id.desc())).first() == "late"
    h.decide([c1.token()])  # never asked: computed
    assert len(parsed) == 5


def member_id(rt: Runtime, card: str) -> str:
    with rt.sessions() as s:
        m = s.scalars(select(Member).where(Member.card_hash == rt.hasher.token(card))).one()
        return m.id


def test_each_store_window_of_a_batch_is_its_own(rt: Runtime, cases: dict[str, Sim], clock: FakeClock) -> None:
    """With two stores in one batch (their windows read with the cases, batch.py `_CASES`), each
    case is limited by its own store's attempts, earlier batches' included."""
    rt.settings.rate_store = 3
    with rt.sessions.begin() as s:
        registry.create_store(s, "s2", rt.now())
        _, sec = registry.register_case(s, "s2", "c3", rt.now())
    c1, c2 = cases["c1"], cases["c2"]
    c3 = Sim(rt, clock, "c3", bytes.fromhex(sec.key_hex), store="s2")
    h = Handler(rt)
    (out,) = h.handle_batch([c3.msg("status", {"t": "hello", "fw": "1.0"})])
    assert c3.open(out)[0]["t"] == "time"
    assert [c1.open(o)[0]["t"] for o in h.handle_batch([c1.token(), c1.token()])] == ["allow", "allow"]
    outs = h.handle_batch([c2.token(), c3.token(), c1.token(), c3.token()])
    got = [sim.open(o)[0] for sim, o in zip((c2, c3, c1, c3), outs, strict=True)]
    assert [b.get("why", b["t"]) for b in got] == ["allow", "allow", "rate_limited", "allow"]
    assert rate(rt, "store", "s1") == 4 and rate(rt, "store", "s2") == 2


def test_events_deduplicated_within_and_across_batches(rt: Runtime, cases: dict[str, Sim]) -> None:
    c1, c2 = cases["c1"], cases["c2"]
    e = [{"i": f"b-{n}", "k": "opened", "ts": n} for n in range(4)]
    batch = [c1.msg("evt", {"t": "evts", "evts": e[:3]}), c1.msg("evt", {"t": "evts", "evts": e[1:]}),
             c2.msg("evt", {"t": "evts", "evts": e[:1]})]  # same event id, another case: its own event
    outs = Handler(rt).handle_batch(batch)
    assert [c1.open(outs[0])[0]["ids"], c1.open(outs[1])[0]["ids"], c2.open(outs[2])[0]["ids"]] == [
        ["b-0", "b-1", "b-2"], ["b-1", "b-2", "b-3"], ["b-0"]]
    (again,) = Handler(rt).handle_batch([c1.msg("evt", {"t": "evts", "evts": e})])
    assert c1.open(again)[0]["ids"] == ["b-0", "b-1", "b-2", "b-3"]
    with rt.sessions() as s:
        rows = s.execute(select(Event.case_id, Event.event_id).where(Event.source == "case")).all()
    assert sorted(rows) == [("c1", "b-0"), ("c1", "b-1"), ("c1", "b-2"), ("c1", "b-3"), ("c2", "b-0")]


def test_batch_redone_when_another_worker_moved_the_window(rt: Runtime, cases: dict[str, Sim],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared subscriptions spread one case's messages over the workers. SQLite: the other
    worker's batch commits while ours is decided, and the compare-and-set on the window sends ours
    back to the start. PostgreSQL: ours holds the case's row, the other waits for our commit
    (rowlocks.py). Either way nothing is done twice."""
    c1 = cases["c1"]
    mine = [c1.token(), c1.token()]
    theirs = c1.token()  # signed last, handled first (SQLite) or after ours (PostgreSQL)
    other = Handler(rt)
    real = channel.advance
    calls = 0
    joins: list[Any] = []

    def their_batch() -> None:
        (out,) = other.handle(*theirs)
        assert c1.open([out])[0]["t"] == "allow"

    def racing(s: Any, moves: Any, now: int) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            joins.append(meanwhile(rt, their_batch))
        return real(s, moves, now)

    monkeypatch.setattr(channel, "advance", racing)
    outs = Handler(rt).handle_batch(mine)
    joins[0]()
    # SQLite: ours (lost), the other worker's (inside it), ours again; PostgreSQL: ours, theirs
    assert calls == (3 if rt.engine.dialect.name == "sqlite" else 2)
    assert [c1.open(o)[0]["t"] for o in outs] == ["allow", "allow"]
    assert allows(rt) == 3 and rate(rt, "case", "c1") == 3  # decisions of a lost attempt rolled back


def test_seq_taken_by_a_command_meanwhile_redoes_the_batch(rt: Runtime, cases: dict[str, Sim],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    c1 = cases["c1"]
    real = channel.advance
    taken: list[int] = []

    joins: list[Any] = []

    def seal() -> None:
        with rt.sessions.begin() as other:
            case = other.get(Case, "c1")
            assert case is not None
            taken.append(channel.seal(other, case, "cmd", {"t": "relock"}, rt.now())[1]["seq"])

    def api_sends_a_command(s: Any, moves: Any, now: int) -> bool:
        if not joins:  # SQLite: sealed now (the batch is redone); PostgreSQL: after our commit
            joins.append(meanwhile(rt, seal))
        return real(s, moves, now)

    monkeypatch.setattr(channel, "advance", api_sends_a_command)
    (out,) = Handler(rt).handle_batch([c1.token()])
    joins[0]()
    (rep,) = c1.open(out)
    assert rep["t"] == "allow"
    assert rep["seq"] == (taken[0] + 1 if rt.engine.dialect.name == "sqlite" else taken[0] - 1)  # none twice


class Crash(BaseException):
    """The process dying: not an error the handler may catch."""


@pytest.mark.parametrize("where", ["advance", "commit"])
def test_crash_mid_batch_loses_no_acknowledged_state(rt: Runtime, cases: dict[str, Sim],
                                                     monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    c1, c2 = cases["c1"], cases["c2"]
    first = [c1.token(), c2.msg("evt", {"t": "evts", "evts": [{"i": "k-1", "k": "opened", "ts": 1}]})]
    acked = Handler(rt).handle_batch(first)
    assert all(acked)  # answered: the case was told, so this must survive whatever comes next
    second = [c1.token(), c2.msg("evt", {"t": "evts", "evts": [{"i": "k-2", "k": "closed", "ts": 2}]})]

    def crash(*_a: Any, **_k: Any) -> Any:
        raise Crash()

    if where == "advance":  # decided, not yet committed
        monkeypatch.setattr(channel, "advance", crash)
    else:  # inside the commit, once the counters are written
        real = ratelimit.RateBook.flush

        def dying_flush(book: Any, s: Any) -> None:
            real(book, s)
            crash()

        monkeypatch.setattr(ratelimit.RateBook, "flush", dying_flush)
    with pytest.raises(Crash):
        Handler(rt).handle_batch(second)
    monkeypatch.undo()
    # the crashed batch left nothing; the acknowledged one is all there
    assert allows(rt) == 1 and rate(rt, "case", "c1") == 1
    with rt.sessions() as s:
        assert [e for (e,) in s.execute(select(Event.event_id).where(Event.source == "case"))] == ["k-1"]
    # after the restart the broker delivers the unanswered batch again: it is handled normally,
    # while the answered one is a replay
    fresh = Handler(rt)
    assert fresh.handle_batch(first) == [[], []] and fresh.rejected == {"replay": 2}
    outs = fresh.handle_batch(second)
    assert c1.open(outs[0])[0]["t"] == "allow" and c2.open(outs[1])[0]["ids"] == ["k-2"]


def test_a_failing_message_costs_only_its_own_answer(rt: Runtime, cases: dict[str, Sim],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    c1, c2 = cases["c1"], cases["c2"]
    h = Handler(rt)
    real: Callable[..., Any] = h._decide

    def buggy(s: Any, store: Any, case: Any, body: dict[str, Any]) -> Any:
        if case.id == "c2":
            raise RuntimeError("bug")
        return real(s, store, case, body)

    monkeypatch.setattr(h, "_decide", buggy)
    outs = h.handle_batch([c1.token(), c2.token(), c1.token()])
    assert [len(o) for o in outs] == [1, 0, 1]
    assert [c1.open(o)[0]["t"] for o in (outs[0], outs[2])] == ["allow", "allow"]
    assert allows(rt) == 2


def test_rate_hits_carried_into_counters_by_the_migration(database_url: str) -> None:
    url = database_url
    cfg = db.alembic_config(url)
    command.upgrade(cfg, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        for scope, key, at in [("phone", "h1", 10), ("phone", "h1", 10), ("phone", "h1", 11), ("case", "c1", 10)]:
            conn.execute(text("INSERT INTO rate_hits (scope, key, at) VALUES (:s, :k, :a)"),
                         {"s": scope, "k": key, "a": at})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT scope, key, at, n FROM rate_counts ORDER BY scope, key, at")).all()
    assert [tuple(r) for r in rows] == [("case", "c1", 10, 1), ("phone", "h1", 10, 2), ("phone", "h1", 11, 1)]
    command.downgrade(cfg, "0001")
    command.upgrade(cfg, "head")
    engine.dispose()


def test_a_reply_that_cannot_be_signed_loses_only_itself(rt: Runtime, cases: dict[str, Sim],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """After the commit a batch cannot be redone (its messages would be replays): a reply that
    fails to sign must not take the others with it."""
    c1, c2 = cases["c1"], cases["c2"]
    real = channel.sign

    def failing(key: bytes, store: str, case: str, kind: str, *a: Any, **k: Any) -> Any:
        if kind == "evtack":
            raise ValueError("too_large")
        return real(key, store, case, kind, *a, **k)

    monkeypatch.setattr(channel, "sign", failing)
    batch = [c2.token(), c1.msg("evt", {"t": "evts", "evts": [{"i": "x", "k": "k", "ts": 1}]}), c1.token()]
    outs = Handler(rt).handle_batch(batch)
    assert outs[1] == []
    assert [c2.open(outs[0])[0]["t"], c1.open(outs[2])[0]["t"]] == ["allow", "allow"]


def test_nul_characters_from_a_case_are_kept_replaced(rt: Runtime, cases: dict[str, Sim]) -> None:
    """PostgreSQL refuses a NUL in text (SQLite keeps it): text a case sends for a text column or
    a lookup has it replaced, and the message is answered as on any database."""
    c1 = cases["c1"]
    h = Handler(rt)
    (out,) = h.handle(*c1.msg("status", {"t": "hello", "fw": "1.0\x00x"}))
    assert c1.open([out])[0]["t"] == "time"
    evts = [{"i": "n\x001", "k": "op\x00ened", "ts": 1, "d": {"x": "\x00"}}]
    for _ in range(2):  # and again: still one event
        (out,) = h.handle(*c1.msg("evt", {"t": "evts", "evts": evts}))
        assert c1.open([out])[0]["ids"] == ["n\x001"]  # acknowledged as the case named it
    for body in ({"t": "otp", "sid": "x\x00", "code": "123456"}, {"t": "phone", "num": "2025554567", "sid": "x\x00"}):
        (out,) = h.handle(*c1.msg("req", body))
        assert c1.open([out])[0]["t"] in ("deny", "challenge")
    assert h.rejected == {}
    with rt.sessions() as s:
        case = s.get(Case, "c1")
        assert case is not None and case.fw == "1.0\ufffdx"
        e = s.scalars(select(Event).where(Event.source == "case")).one()
        assert (e.event_id, e.kind, e.data) == ("n\ufffd1", "op\ufffdened", {"x": "\x00"})


def test_lone_surrogates_from_a_case_are_rejected_not_crashed_on(rt: Runtime, cases: dict[str, Sim]) -> None:
    """No firmware can send a lone surrogate (MicroPython strings are UTF-8), and no database can
    store one: such a message is rejected as bad JSON, and the rest of its batch is answered."""
    c1, c2 = cases["c1"], cases["c2"]
    h = Handler(rt)
    bad = c1.msg("evt", {"t": "evts", "evts": [{"i": "s\ud8001", "k": "opened", "ts": 1, "d": {}}]})
    good = c2.msg("status", {"t": "hello", "fw": "1.0"})
    out = h.handle_batch([bad, good])
    assert out[0] == [] and c2.open(out[1])[0]["t"] == "time"
    assert h.rejected == {"bad_json": 1}
    with rt.sessions() as s:
        assert s.scalars(select(Event).where(Event.source == "case")).all() == []


def test_escaped_text_from_a_case_is_taken_when_it_is_not_a_lone_surrogate(rt: Runtime,
                                                                           cases: dict[str, Sim]) -> None:
    """The surrogate check runs on bodies with a \\u escape (codec.verify): a proper one is kept,
    beside a lone surrogate refused in the same batch."""
    c1, c2 = cases["c1"], cases["c2"]
    h = Handler(rt)
    good = c1.msg("status", {"t": "hello", "fw": "1.0-\u00e9\U0001f512"})  # escaped: the codec's JSON is ASCII
    assert b"\\u00e9" in good[1] and b"\\ud83d" in good[1]
    bad = c2.msg("status", {"t": "hello", "fw": "1.0-\udc00"})
    out = h.handle_batch([good, bad])
    assert c1.open(out[0])[0]["t"] == "time" and out[1] == []
    assert h.rejected == {"bad_json": 1}
    with rt.sessions() as s:
        case = s.get(Case, "c1")
        assert case is not None and case.fw == "1.0-\u00e9\U0001f512"


def _rows(rt: Runtime, case_id: str) -> tuple[int, int]:
    with rt.sessions() as s:
        case = s.get(Case, case_id)
        assert case is not None
        return case.rx_seq, case.rx_mask


def test_only_the_newest_hello_of_a_case_in_a_batch_is_answered(rt: Runtime, cases: dict[str, Sim]) -> None:
    """A case repeats its hello until a time answers its last one, and refuses the answer to any
    earlier one: with both in one batch (an overloaded worker's queue), only the newest is
    answered. The older one is still checked (its seq slides the window) and acknowledged to the
    broker (the worker acknowledges every message of a batch); another case's hello is answered."""
    c1, c2 = cases["c1"], cases["c2"]
    rx0, m0 = _rows(rt, "c1")
    older = c1.msg("status", {"t": "hello", "fw": "1.0"})
    beat = c1.msg("status", {"t": "beat", "up": 1, "synced": False})
    other = c2.msg("status", {"t": "hello", "fw": "1.0"})
    newest = c1.msg("status", {"t": "hello", "fw": "1.1"})  # the one c1's codec waits for
    seqs = [json.loads(json.loads(m[1])["p"])["seq"] for m in (older, beat, newest)]
    skipped = metrics.SUPERSEDED._value.get()
    h = Handler(rt)
    out = h.handle_batch([older, beat, other, newest])
    assert out[0] == [] and out[1] == []
    assert [b["t"] for b in c2.open(out[2])] == ["time"]
    (answer,) = c1.open(out[3])  # taken: it answers the hello c1 sent last
    assert answer["t"] == "time" and c1.codec.synced
    assert metrics.SUPERSEDED._value.get() == skipped + 1 and h.rejected == {}
    rx, m = rx0, m0
    for seq in seqs:
        rx, m = codec.window(rx, m, seq)
    assert _rows(rt, "c1") == (rx, m) and answer["rx"] == rx  # every seq of the batch seen
    with rt.sessions() as s:
        case = s.get(Case, "c1")
        assert case is not None and case.fw == "1.1"


def test_a_later_copy_of_an_older_hello_supersedes_nothing(rt: Runtime, cases: dict[str, Sim]) -> None:
    """Only a later hello signed after (a higher seq) supersedes: a copy of an older one coming
    after the newest (replayed by someone, or a case whose seq file was lost) leaves the newest
    answered, and is answered itself as before (the case refuses that answer)."""
    c1 = cases["c1"]
    older = c1.msg("status", {"t": "hello", "fw": "1.0"})
    newest = c1.msg("status", {"t": "hello", "fw": "1.0"})
    out = Handler(rt).handle_batch([newest, older])
    (answer,) = c1.open(out[0])
    assert answer["t"] == "time" and c1.codec.synced
    (late,) = out[1]
    with pytest.raises(P.Rejected):
        c1.open([late])


def test_two_workers_deciding_the_same_cases_at_once_queue_instead_of_deadlocking(
        rt: Runtime, cases: dict[str, Sim], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on a shared subscription get batches with the same cases, and each batch
    writes its cases' rows as its messages reach them: one worker c2's beat then c1's request,
    the other c1's beat then c2's request. Each request is decided once the batch has written
    its beat's row; then each batch's last write (its windows) needs the row the other holds.
    On PostgreSQL, batches that lock their cases in id order first queue for them instead:
    the hook below lets a batch go on once the other has reached the same point or waits on a
    lock (rowlocks.py), so the deadlock, when the code allows one, happens every time (and
    PostgreSQL breaks it by failing one batch, redone one message at a time). SQLite has one
    writer at a time: the batches run at once, the hook does not wait, and the outcome is
    checked the same. Every message is decided once, and no batch fails."""
    c1, c2 = cases["c1"], cases["c2"]
    pg = rt.engine.dialect.name == "postgresql"
    batches = {"A": [c2.msg("status", {"t": "beat", "up": 1, "synced": True}), c1.token()],
               "B": [c1.msg("status", {"t": "beat", "up": 1, "synced": True}), c2.token()]}
    reached = {k: threading.Event() for k in batches}
    real = Handler._decide

    def decide(self: Handler, s: Any, store: Any, case: Any, body: dict[str, Any]) -> Any:
        r = real(self, s, store, case, body)
        s.flush()  # the beat's row written now, as any query of the decision would (autoflush)
        me = threading.current_thread().name
        reached[me].set()
        if pg:
            other = reached["B" if me == "A" else "A"]
            until_waiting(rt.engine, other.is_set)
        return r

    failed: list[int] = []
    one_by_one = Handler._one_by_one

    def spy(self: Handler, msgs: Any, dl: Any) -> Any:
        failed.append(len(msgs))
        return one_by_one(self, msgs, dl)

    monkeypatch.setattr(Handler, "_decide", decide)
    monkeypatch.setattr(Handler, "_one_by_one", spy)
    outs: dict[str, list[list[Out]]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            outs[name] = Handler(rt).handle_batch(batches[name])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,), name=k) for k in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and failed == []  # no batch failed (a deadlock fails one)
    assert outs["A"][0] == [] and outs["B"][0] == []  # beats: no answer
    assert [b["t"] for b in c1.open(outs["A"][1])] == ["allow"]
    assert [b["t"] for b in c2.open(outs["B"][1])] == ["allow"]
    assert allows(rt) == 2 and rate(rt, "case", "c1") == 1 and rate(rt, "case", "c2") == 1
