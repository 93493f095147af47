"""Desired state (desired.py): staff and config changes bump a version per case in their own
transaction; the case reports what it applied (hello, beats); the cloud sends the whole state at
once on a hello and re-sends it with backoff on beats until the versions agree; the API shows
desired, applied and pending. Driven through `Handler.handle` with a case signing with the
firmware codec (no broker), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from casecloud import codec, desired, registry
from casecloud.api import create_app
from casecloud.batch import Handler, Out
from casecloud.models import Case, Staff
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock
from tests.cloud.pgserver import PgServer
from tests.cloud.rowlocks import lock_waits, meanwhile

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}


class Device:
    """A case's codec: what it sends, and what it makes of the cloud's answers."""

    def __init__(self, key: bytes, clock: FakeClock, case: str = "c1") -> None:
        self.topics = P.topics("lockcase/v1", "s1", case)
        # its own clock is unset (it says 2000) but runs: the cloud's time sets its offset
        self.codec = P.Codec(case, key, P.MemorySeqs(), clock=lambda: clock() - 803_315_200)

    def msg(self, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        return self.topics[kind], self.codec.sign(self.topics[kind], body)

    def read(self, outs: list[Out]) -> list[dict[str, Any]]:
        return [self.codec.open(o.topic, o.payload) for o in outs]


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as c:
        yield c


def row(rt: Runtime, case_id: str = "c1") -> Case:
    with rt.sessions() as s:
        c = s.get(Case, case_id)
        assert c is not None
        return c


def register(rt: Runtime, store: str, case: str) -> bytes:
    with rt.sessions.begin() as s:
        if s.get(registry.Store, store) is None:  # type: ignore[attr-defined]
            registry.create_store(s, store, rt.now())
        _, sec = registry.register_case(s, store, case, rt.now())
    return bytes.fromhex(sec.key_hex)


def add_pin(api: TestClient, n: int, store: str = "s1") -> dict[str, Any]:
    r = api.post(f"/v1/admin/stores/{store}/staff", json={"kind": "pin", "hash": f"{n:064x}"}, headers=H)
    assert r.status_code == 201, r.text
    return r.json()


def synced(h: Handler, dev: Device) -> list[dict[str, Any]]:
    """Greets (as after a reconnect); returns what the cloud answered, time first."""
    return dev.read(h.handle(*dev.msg("status", {"t": "hello", "fw": "1", "sv": 0})))


def test_a_staff_change_makes_every_case_of_the_store_pending(rt: Runtime, shop: dict[str, Any],
                                                              api: TestClient, clock: FakeClock) -> None:
    register(rt, "s1", "c2")
    register(rt, "s2", "c3")
    assert not desired.pending(row(rt))  # 0/0: nothing managed yet
    ann = add_pin(api, 1)
    assert ann["pending"] == ["c1", "c2"]  # not `pushed_to`: who has not got it
    cases = {c["id"]: c for c in api.get("/v1/admin/cases", headers=H).json()}
    assert (cases["c1"]["desired_v"], cases["c1"]["applied_v"], cases["c1"]["pending"]) == (1, 0, True)
    assert (cases["c3"]["desired_v"], cases["c3"]["pending"]) == (0, False)  # another store
    assert [c["id"] for c in api.get("/v1/admin/stores/s1/pending", headers=H).json()] == ["c1", "c2"]
    assert api.get("/v1/admin/stores/s2/pending", headers=H).json() == []
    assert api.get("/v1/admin/stores/nope/pending", headers=H).status_code == 404
    gone = api.delete(f"/v1/admin/staff/{ann['id']}", headers=H).json()
    assert gone["pending"] == ["c1", "c2"] and row(rt).desired_v == 2
    assert api.delete(f"/v1/admin/staff/{ann['id']}", headers=H).status_code == 404
    assert row(rt).desired_v == 2  # a refused change bumps nothing


def test_a_hello_gets_the_whole_state_first_and_a_beat_records_it_applied(
        rt: Runtime, shop: dict[str, Any], api: TestClient, clock: FakeClock) -> None:
    a, b = add_pin(api, 1), add_pin(api, 2)
    api.delete(f"/v1/admin/staff/{a['id']}", headers=H)  # revoked while the case was away
    api.post("/v1/admin/cases/c1/config", json={"set": {"unlock_ms": 4000}}, headers=H)
    assert row(rt).desired_v == 4
    h, dev = Handler(rt), Device(shop["key"], clock)
    time_, state = synced(h, dev)
    assert time_["t"] == "time" and time_["sv"] == 4
    assert state == {**state, "t": "state", "sv": 4, "i": 0, "n": 1, "set": {"unlock_ms": 4000},
                     "staff": [["pin", b["id"], f"{2:064x}"]]}
    assert desired.pending(row(rt))  # sent is not applied
    assert api.get("/v1/admin/cases/c1", headers=H).json()["pending"] is True
    # the case applies it and says so in its next beat
    assert h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": True, "sv": 4})) == []
    got = api.get("/v1/admin/cases/c1", headers=H).json()
    assert (got["desired_v"], got["applied_v"], got["pending"]) == (4, 4, False)
    # in step: a new connection is only answered with the time
    assert [m["t"] for m in dev.read(h.handle(*dev.msg("status", {"t": "hello", "fw": "1", "sv": 4})))] == ["time"]


def test_beats_resend_with_backoff_until_applied(rt: Runtime, shop: dict[str, Any], api: TestClient,
                                                 clock: FakeClock) -> None:
    add_pin(api, 1)
    h, dev = Handler(rt), Device(shop["key"], clock)
    synced(h, dev)  # sent once on the hello
    sent = [int(clock.t)]
    for _ in range(60):  # one beat a minute for an hour, the case never applying it
        clock.advance(60)
        out = dev.read(h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": True, "sv": 0})))
        if out:
            sent.append(int(clock.t))
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert gaps[:5] == [60, 120, 240, 480, 900] and set(gaps[5:]) == {900}, gaps
    # a hello re-sends at once, and restarts the backoff
    assert [m["t"] for m in synced(h, dev)] == ["time", "state"]
    clock.advance(60)
    assert dev.read(h.handle(*dev.msg("status", {"t": "beat", "up": 2, "synced": True, "sv": 0})))


def test_an_unsynced_beat_gets_no_state(rt: Runtime, shop: dict[str, Any], api: TestClient, clock: FakeClock) -> None:
    add_pin(api, 1)
    h, dev = Handler(rt), Device(shop["key"], clock)
    assert h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": False, "sv": 0})) == []
    assert row(rt).state_sent_at is None


def test_a_replayed_hello_does_not_undo_what_a_beat_reported(rt: Runtime, shop: dict[str, Any],
                                                            api: TestClient, clock: FakeClock) -> None:
    add_pin(api, 1)
    h, dev = Handler(rt), Device(shop["key"], clock)
    old_hello = dev.msg("status", {"t": "hello", "fw": "1", "sv": 0})
    dev.read(h.handle(*old_hello))
    h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": True, "sv": 1}))
    assert row(rt).applied_v == 1
    h.handle(*old_hello)  # answered (a hello always is) but not believed
    assert row(rt).applied_v == 1 and not desired.pending(row(rt))


def test_the_whole_set_is_paged_to_fit_and_bounded(rt: Runtime, shop: dict[str, Any], api: TestClient, clock: FakeClock) -> None:
    api.post("/v1/admin/cases/c1/config", json={"set": {"unlock_ms": 4000, "held_open_s": 60, "name": "x" * 100}},
             headers=H)
    ids = {add_pin(api, n)["id"] for n in range(desired.MAX_STAFF)}
    r = api.post("/v1/admin/stores/s1/staff", json={"kind": "badge", "hash": "ab" * 32}, headers=H)
    assert r.status_code == 422 and "at most 32" in r.json()["detail"]
    h, dev = Handler(rt), Device(shop["key"], clock)
    outs = h.handle(*dev.msg("status", {"t": "hello", "fw": "1", "sv": 0}))
    assert all(len(o.payload) <= codec.MAX_BYTES for o in outs)
    parts = dev.read(outs)[1:]
    assert len(parts) > 1 and [p["i"] for p in parts] == list(range(len(parts)))
    assert {p["n"] for p in parts} == {len(parts)} and {p["sv"] for p in parts} == {row(rt).desired_v}
    assert {e[1] for p in parts for e in p["staff"]} == ids
    assert parts[0]["set"]["name"] == "x" * 100 and all("set" not in p for p in parts[1:])


def test_config_is_desired_state_too(rt: Runtime, shop: dict[str, Any], api: TestClient, clock: FakeClock) -> None:
    r = api.post("/v1/admin/cases/c1/config", json={"set": {"unlock_ms": 4000}}, headers=H)
    assert r.status_code == 200 and r.json() == {"ok": None, "err": None, "pending": ["c1"]}  # no broker here
    api.post("/v1/admin/cases/c1/config", json={"set": {"held_open_s": 60}}, headers=H)
    c = row(rt)
    assert c.desired_v == 2 and c.config_set == {"unlock_ms": 4000, "held_open_s": 60}
    for bad in ({"cloud": {}}, {"staff": {}}, {"name": "x" * 1000}):
        assert api.post("/v1/admin/cases/c1/config", json={"set": bad}, headers=H).status_code == 422, bad
    assert row(rt).desired_v == 2
    assert api.post("/v1/admin/cases/zz/config", json={"set": {}}, headers=H).status_code == 404


def test_a_refused_config_does_not_hold_the_staff_set_back(rt: Runtime, shop: dict[str, Any], api: TestClient,
                                                          clock: FakeClock) -> None:
    h, dev = Handler(rt), Device(shop["key"], clock)
    api.post("/v1/admin/cases/c1/config", json={"set": {"unlock_ms": 4000}}, headers=H)
    synced(h, dev)
    h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": True, "sv": 1}))  # applied
    # a value the case's validator refuses (the cloud does not know the case's other keys)
    api.post("/v1/admin/cases/c1/config", json={"set": {"pull_in_ms": 4500}}, headers=H)
    ann = add_pin(api, 1)  # then a staff change: version 3 carries both
    assert row(rt).desired_v == 3
    refused = dev.msg("ack", {"t": "ack", "re": "abc123abc123", "ok": False, "sv": 3,
                              "err": "bad_config: config: pull_in_ms must not exceed unlock_ms"})
    (state,) = dev.read(h.handle(*refused))  # the next version, at once, as the ack's answer
    assert state["sv"] == 4 and state["set"] == {"unlock_ms": 4000}  # back to what it applied
    assert state["staff"] == [["pin", ann["id"], f"{1:064x}"]]  # the staff set goes through
    h.handle(*dev.msg("status", {"t": "beat", "up": 2, "synced": True, "sv": 4}))
    assert not desired.pending(row(rt)) and row(rt).config_set == {"unlock_ms": 4000}
    # refused again with nothing left to take back (another cause): no loop, only its event
    api.delete(f"/v1/admin/staff/{ann['id']}", headers=H)
    again = dev.msg("ack", {"t": "ack", "re": "abc123abc124", "ok": False, "sv": 5, "err": "bad_config: x"})
    assert h.handle(*again) == [] and row(rt).desired_v == 5
    # a refusal of an older version changes nothing either
    assert h.handle(*dev.msg("ack", {"t": "ack", "re": "abc123abc125", "ok": False, "sv": 2, "err": "x"})) == []


# --- concurrent changes: one version number, one content -------------------------------------

State = dict[int, tuple[Any, list[Any]]]


def sent_as(states: State, parts: list[dict[str, Any]]) -> None:
    """Records what went out under which version; the same version twice must be the same state."""
    if not parts:
        return
    v = parts[0]["sv"]
    got = (parts[0].get("set"), sorted(e for p in parts for e in p["staff"]))
    assert states.setdefault(v, got) == got, f"version {v} sent as two different states"


def revoke(rt: Runtime, staff_id: str, states: State) -> None:
    """The API deleting a credential, in its own committed transaction (api.staff_changed)."""
    with rt.sessions.begin() as s:
        st = s.get(Staff, staff_id)
        assert st is not None
        s.delete(st)
        desired.bump_store(s, "s1")
        c = s.get(Case, "c1")
        assert c is not None
        sent_as(states, desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set))


def current(rt: Runtime) -> tuple[int, list[dict[str, Any]]]:
    """The desired version and the state a hello would be sent now."""
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None
        return c.desired_v, desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set)


@pytest.mark.parametrize("other", ["revoke", "config"])
def test_a_change_committed_between_a_read_and_its_bump_gets_its_own_version(
        rt: Runtime, shop: dict[str, Any], api: TestClient, other: str) -> None:
    """Two transactions each bumping a version read before the other committed must not send two
    states under one number (the case would report the one it got as applied and never get the
    other: a revoked PIN kept, a config lost)."""
    pin = add_pin(api, 1)
    v0 = row(rt).desired_v
    states: State = {}
    with rt.sessions.begin() as s:
        c = s.get(Case, "c1")  # read without a lock, as push_config does
        assert c is not None
        if other == "revoke":
            revoke(rt, pin["id"], states)
        else:
            with rt.sessions.begin() as o:
                oc = o.get(Case, "c1")
                assert oc is not None
                desired.set_config(o, oc, {"held_open_s": 60})
                sent_as(states, desired.parts(o, oc.store_id, oc.id, oc.desired_v, oc.config_set))
        desired.set_config(s, c, {"unlock_ms": 4000})
        sent_as(states, desired.parts(s, c.store_id, c.id, c.desired_v, c.config_set))
    v, last = current(rt)
    assert v == v0 + 2 and sorted(states) == [v0 + 1, v0 + 2]
    sent_as(states, last)
    want = {"unlock_ms": 4000} if other == "revoke" else {"unlock_ms": 4000, "held_open_s": 60}
    assert last[0]["set"] == want  # neither change lost
    assert [e for p in last for e in p["staff"]] == ([] if other == "revoke" else [["pin", pin["id"], f"{1:064x}"]])


@pytest.mark.parametrize("msg", ["refusal", "hello"])
def test_a_revocation_committed_while_the_worker_decides_is_not_lost(
        rt: Runtime, shop: dict[str, Any], api: TestClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
        msg: str) -> None:
    """The worker reads the case, then the API revokes a PIN (and bumps) before the worker's own
    bump for a refused config (refusal) or before it commits the state it read (hello): the
    worker's state must not go out under a number that labels another state. (On PostgreSQL the
    batch holds the case's row from its start: the revocation waits for its commit, rowlocks.py.)"""
    h, dev = Handler(rt), Device(shop["key"], clock)
    api.post("/v1/admin/cases/c1/config", json={"set": {"unlock_ms": 4000}}, headers=H)
    synced(h, dev)
    h.handle(*dev.msg("status", {"t": "beat", "up": 1, "synced": True, "sv": 1}))  # applied
    api.post("/v1/admin/cases/c1/config", json={"set": {"pull_in_ms": 4500}}, headers=H)  # to be refused
    pin = add_pin(api, 1)
    assert row(rt).desired_v == 3
    states: State = {}
    sent_as(states, current(rt)[1])  # version 3, as sent before
    real = Handler._key
    joins: list[Any] = []

    def api_revokes_meanwhile(self: Handler, s: Any, case: Case) -> bytes:  # right after the batch read its cases
        if not joins:
            joins.append(meanwhile(rt, lambda: revoke(rt, pin["id"], states)))
        return real(self, s, case)

    monkeypatch.setattr(Handler, "_key", api_revokes_meanwhile)
    if msg == "refusal":
        m = dev.msg("ack", {"t": "ack", "re": "abc123abc123", "ok": False, "sv": 3, "err": "bad_config: x"})
    else:
        m = dev.msg("status", {"t": "hello", "fw": "1", "sv": 1})
    outs = h.handle(*m)
    joins[0]()
    after = 0 if rt.engine.dialect.name == "sqlite" else 1  # PostgreSQL: the revocation's bump came after
    for part in dev.read(outs):
        if part["t"] == "time":
            assert part["sv"] == row(rt).desired_v - after  # the version the state after it is sent as
        else:
            sent_as(states, [part])
    v, last = current(rt)
    sent_as(states, last)
    assert v == max(states)  # the newest state sent is the one desired
    assert all(p["staff"] == [] for p in last)  # the revoked PIN is in no state at that version
    # the case applies what it got and says so: the cloud only believes it for the version it is
    h.handle(*dev.msg("status", {"t": "beat", "up": 2, "synced": True, "sv": v}))
    assert not desired.pending(row(rt)) and row(rt).config_set == last[0]["set"]


@pytest.fixture
def pg_rt(tmp_path: Path, pg_server: PgServer, clock: FakeClock) -> Iterator[Runtime]:
    """A runtime on PostgreSQL alone: what the test stages (a third session holding a row lock)
    has no SQLite counterpart, whose writers lock the whole database."""
    name = pg_server.create_database()
    r = build(Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0ken"), database_url=pg_server.url(name)),
              clock=clock)
    try:
        yield r
    finally:
        r.engine.dispose()
        pg_server.drop_database(name)


def test_a_staff_change_and_a_worker_batch_on_the_same_cases_queue_instead_of_deadlocking(
        pg_rt: Runtime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staff change bumps every case of its store in one UPDATE, which takes their rows in the
    table's order; a worker's batch takes its cases' rows in id order (batch.py). Staged: x2 is
    stored before x1; another session holds x1; the batch (x1, x2) queues for x1 first, then the
    staff change takes x2 and queues for x1 too. Once x1 is free the batch has it and wants x2:
    a deadlock, unless the staff change also takes the rows in id order (it then waits for x1
    holding nothing). No batch fails, the change commits, both hellos are answered."""
    rt = pg_rt
    devs = {c: Device(register(rt, "s1", c), clock, c) for c in ("x2", "x1")}  # x2's row first
    failed: list[int] = []
    one_by_one = Handler._one_by_one

    def spy(self: Handler, msgs: Any, dl: Any) -> Any:
        failed.append(len(msgs))
        return one_by_one(self, msgs, dl)

    monkeypatch.setattr(Handler, "_one_by_one", spy)
    out: dict[str, Any] = {}

    def batch() -> None:
        out["batch"] = Handler(rt).handle_batch([devs[c].msg("status", {"t": "hello", "fw": "1"}) for c in ("x1", "x2")])

    def staff_change() -> None:
        with rt.sessions.begin() as s:
            out["bumped"] = desired.bump_store(s, "s1")

    with rt.engine.connect() as holder:
        holder.execute(text("SELECT id FROM cases WHERE id = 'x1' FOR NO KEY UPDATE"))
        threads = []
        for n, fn in enumerate((batch, staff_change), 1):
            errors: list[BaseException] = []
            t = threading.Thread(target=lambda fn=fn, errors=errors: _catch(fn, errors))
            t.start()
            threads.append((t, errors))
            _until(lambda n=n: lock_waits(rt.engine) >= n, t)  # queued, in this order
        holder.rollback()
    for t, errors in threads:
        t.join()
        assert errors == []
    assert failed == []  # the batch was not failed by a deadlock and redone one by one
    assert out["bumped"] == ["x1", "x2"]
    for c, outs in zip(("x1", "x2"), out["batch"], strict=True):
        assert devs[c].read(outs)[0]["t"] == "time" and devs[c].codec.synced


def _catch(fn: Any, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as e:
        errors.append(e)


def _until(cond: Any, t: threading.Thread) -> None:
    """Until `cond()`; AssertionError if thread `t` ended first (it did not queue)."""
    while not cond():
        assert t.is_alive(), "it finished without waiting for the held row"
        time.sleep(0.005)
