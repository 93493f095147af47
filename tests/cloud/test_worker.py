"""The worker end to end: a real Mosquitto, a real database (SQLite, PostgreSQL), and a case signing
with the firmware codec."""

from __future__ import annotations

import json
import threading
from typing import Any

from sqlalchemy import select

from casecloud import codec, registry
from casecloud.batch import Handler
from casecloud.models import Case, Event
from casecloud.runtime import Runtime
from casecloud.worker import Worker
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import texted_code, wait_for

PHONE = "2025554567"


def test_phone_code_allow(rt: Runtime, case: FakeCase) -> None:
    req, _ = case.send("req", {"t": "phone", "num": PHONE})
    ch = case.expect("rep", re=req["id"])
    assert ch["t"] == "challenge" and ch["need"] == "code" and ch["last2"] == "67"
    req2, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": texted_code(rt)})
    allow = case.expect("rep", re=req2["id"])
    assert allow["t"] == "allow" and allow["grant"].startswith("g_")


def test_wrong_code_denied_with_tries_left(rt: Runtime, case: FakeCase) -> None:
    req, _ = case.send("req", {"t": "phone", "num": PHONE})
    ch = case.expect("rep", re=req["id"])
    wrong = f"{(int(texted_code(rt)) + 1) % 10**6:06d}"
    req2, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": wrong})
    assert case.expect("rep", re=req2["id"]) | {"re": 0, "id": 0, "seq": 0, "exp": 0} == {
        "v": 1, "case": "c1", "t": "deny", "why": "bad_code", "left": 2, "re": 0, "id": 0, "seq": 0, "exp": 0}


def test_replayed_request_rejected(worker: Worker, case: FakeCase) -> None:
    req, payload = case.send("req", {"t": "help", "why": "assist"})
    assert case.expect("rep", re=req["id"])["t"] == "ok"
    case.publish_raw("req", payload)
    wait_for(lambda: worker.handler.rejected["replay"] == 1)
    assert case.quiet(0.3) == []


def test_forged_and_foreign_messages_rejected(rt: Runtime, worker: Worker, case: FakeCase,
                                              broker: tuple[str, int]) -> None:
    forger = P.Codec("c1", bytes(32), P.MemorySeqs(100, 100))
    forger.synced, forger.offset = True, case.codec.offset
    case.publish_raw("req", forger.sign(case.topics["req"], {"t": "token", "tok": "x", "src": "nfc"}))
    wait_for(lambda: worker.handler.rejected["bad_sig"] == 1)
    # a second case in the same store may not speak for c1 (wrong_case), nor move c1's message
    with rt.sessions.begin() as s:
        _, sec = registry.register_case(s, "s1", "c2", rt.now())
    key2 = bytes.fromhex(sec.key_hex)
    t2 = "lockcase/v1/s1/c2/req"
    body = {"v": 1, "case": "c1", "id": "x1", "seq": 1, "exp": rt.now() + 30, "t": "help"}
    case.client.publish(t2, codec.seal(key2, t2, json.dumps(body)), qos=1).wait_for_publish(5)
    wait_for(lambda: worker.handler.rejected["wrong_case"] == 1)
    _, payload = case.send("req", {"t": "help"})
    case.expect("rep")
    case.client.publish(t2, payload, qos=1).wait_for_publish(5)
    wait_for(lambda: worker.handler.rejected["bad_sig"] == 2)
    # a case nobody registered, and a registered case under the wrong store
    for topic in ("lockcase/v1/s1/ghost/req", "lockcase/v1/s9/c1/req"):
        case.client.publish(topic, payload, qos=1).wait_for_publish(5)
    wait_for(lambda: worker.handler.rejected["unknown_case"] == 2)


def test_expired_rejected(rt: Runtime, worker: Worker, case: FakeCase, clock: FakeClock) -> None:
    clock.advance(P.TTL + 5)  # the cloud's clock moves on; the case still signs with the old time
    case.send("req", {"t": "help"})
    wait_for(lambda: worker.load.shed["expired"] == 1)  # a request: shed unread (test_load.py)
    case.send("status", {"t": "beat", "up": 5})
    wait_for(lambda: worker.handler.rejected["expired"] == 1)
    assert case.quiet(0.3) == []


def test_junk_does_not_stop_the_worker(worker: Worker, case: FakeCase) -> None:
    # 1900 bytes: over the protocol's 1024, under the shipped broker's packet cap (2048), which
    # would otherwise close the sender's connection before the worker saw it (test_broker.py)
    for junk in (b"", b"not json", b"[]", b'{"p":1,"s":"x"}', b"x" * 1900, b"\xff\xfe"):
        case.publish_raw("req", junk)
    case.client.publish("lockcase/v1/s1/c1/rep", b"{}", qos=1)  # a kind the worker does not read
    req, _ = case.send("req", {"t": "help"})
    assert case.expect("rep", re=req["id"])["t"] == "ok"
    assert worker.handler.rejected["bad_json"] == 5 and worker.handler.rejected["too_large"] == 1


def test_events_acked_and_deduplicated(rt: Runtime, case: FakeCase) -> None:
    evts = [{"i": "b1-1", "k": "opened", "ts": 1749999000}, {"i": "b1-2", "k": "closed", "ts": 1749999010,
                                                            "d": {"held_s": 10}}]
    b, _ = case.send("evt", {"t": "evts", "evts": evts})
    ack = case.expect("evtack", re=b["id"])
    assert ack["ids"] == ["b1-1", "b1-2"]
    # the case did not get the ack in time and sends them again with a newer one
    b2, _ = case.send("evt", {"t": "evts", "evts": [*evts, {"i": "b1-3", "k": "relocked", "ts": 1749999020},
                                                      {"k": "no id"}, {"i": "b1-4", "k": "bad ts", "ts": "x"}]})
    assert case.expect("evtack", re=b2["id"])["ids"] == ["b1-1", "b1-2", "b1-3", "b1-4"]
    with rt.sessions() as s:
        rows = s.scalars(select(Event).where(Event.source == "case").order_by(Event.ts)).all()
        assert [(e.event_id, e.kind) for e in rows] == [("b1-1", "opened"), ("b1-2", "closed"), ("b1-3", "relocked")]
        assert rows[1].data == {"held_s": 10}


def test_event_data_scrubbed_of_numbers(rt: Runtime, case: FakeCase) -> None:
    b, _ = case.send("evt", {"t": "evts", "evts": [{"i": "e1", "k": "denied", "ts": 1, "d": {"typed": PHONE}}]})
    case.expect("evtack", re=b["id"])
    with rt.sessions() as s:
        e = s.scalars(select(Event).where(Event.event_id == "e1")).one()
        assert PHONE not in json.dumps(e.data)


def test_status_and_presence(rt: Runtime, case: FakeCase) -> None:
    case.send("status", {"t": "beat", "up": 42, "door": "closed", "junk": "x"})
    def seen() -> bool:
        with rt.sessions() as s:
            c = s.get(Case, "c1")
            return bool(c and c.last_status == {"up": 42, "door": "closed"} and c.online and c.fw == "0.1.0")
    wait_for(seen)
    case.client.publish(case.topics["presence"], b"offline", qos=1, retain=True).wait_for_publish(5)
    def offline() -> bool:
        with rt.sessions() as s:
            c = s.get(Case, "c1")
            return bool(c and not c.online)
    wait_for(offline)


def test_case_that_lost_its_seq_file_resyncs(broker: tuple[str, int], shop: dict[str, Any], worker: Worker) -> None:
    first = FakeCase(*broker, "s1", "c1", shop["key"])
    first.hello()
    for _ in range(3):
        r, _ = first.send("req", {"t": "help"})
        first.expect("rep", re=r["id"])
    first.close()
    # reflashed: empty seq store, seqs start at 1 again
    again = FakeCase(*broker, "s1", "c1", shop["key"])
    try:
        t = again.hello()
        assert t["rx"] == 4
        r, _ = again.send("req", {"t": "help"})
        assert r["seq"] == 5
        assert again.expect("rep", re=r["id"])["t"] == "ok"
    finally:
        again.close()


def test_replay_state_survives_a_worker_restart(rt: Runtime, case: FakeCase) -> None:
    r, payload = case.send("req", {"t": "help"})
    case.expect("rep", re=r["id"])
    fresh = Handler(rt)  # a new process: nothing in memory, only the database
    assert fresh.handle(case.topics["req"], payload) == []
    assert fresh.rejected == {"replay": 1}
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and c.rx_seq == r["seq"]


def test_messages_that_arrive_together_are_decided_in_one_batch(rt: Runtime, worker: Worker, case: FakeCase,
                                                                 broker: tuple[str, int]) -> None:
    with rt.sessions.begin() as s:
        registry.create_member(s, rt.hasher, rt.now(), card="0badge01", status="trusted")
    sizes: list[int] = []
    hold = threading.Event()
    real = worker.handler.decide

    def decide(msgs: Any) -> Any:
        hold.wait(10)  # the first batch stays busy until everything below is queued
        sizes.append(len(msgs))
        return real(msgs)

    worker.handler.decide = decide  # type: ignore[method-assign]
    reqs = [case.send("req", {"t": "token", "tok": "0badge01", "src": "nfc"})[0] for _ in range(20)]
    hold.set()
    got = [case.expect("rep")["re"] for _ in reqs]
    assert sorted(got) == sorted(r["id"] for r in reqs)
    assert case.quiet(0.3) == []  # each answered once
    assert sum(sizes) == 20 and max(sizes) > 1, sizes

