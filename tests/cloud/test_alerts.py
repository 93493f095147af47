"""Alerts (alerts.py): from case events, presence and policy to one open alert per case and kind,
acknowledged and resolved through the API, delivered to a real local HTTP server with retries and
a signature; and the case status updated from events (status.py). Every test that touches the
database runs on SQLite and PostgreSQL (conftest.py)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from casecloud import registry
from casecloud.adapters.notify import SIGNATURE, TIMESTAMP, RecordingNotifier, WebhookNotifier
from casecloud.api import create_app
from casecloud.batch import Handler
from casecloud.models import Alert, Case, Event, Staff
from casecloud.privacy import scrub
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}


class Sim:
    """One case: signs with the firmware codec; its journal's events go out as `evts` batches."""

    def __init__(self, rt: Runtime, clock: FakeClock, key: bytes, store: str = "s1", case: str = "c1") -> None:
        self.rt, self.clock = rt, clock
        self.topics = P.topics("lockcase/v1", store, case)
        self.codec = P.Codec(case, key, P.MemorySeqs(), clock=clock)
        self.h = Handler(rt)
        self.next_id = 1
        (out,) = self.h.handle(*self.msg("status", {"t": "hello", "fw": "1.0"}))
        assert self.codec.open(out.topic, out.payload)["t"] == "time" and self.codec.synced

    def msg(self, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        return self.topics[kind], self.codec.sign(self.topics[kind], body)

    def evt(self, k: str, ago: int = 0, **d: Any) -> dict[str, Any]:
        e: dict[str, Any] = {"i": str(self.next_id), "k": k, "ts": int(self.clock()) - ago}
        self.next_id += 1
        if d:
            e["d"] = d
        return e

    def send(self, *evts: dict[str, Any]) -> list[str]:
        (out,) = self.h.handle(*self.msg("evt", {"t": "evts", "evts": list(evts)}))
        return self.codec.open(out.topic, out.payload)["ids"]

    def beat(self, **fields: Any) -> None:
        assert self.h.handle(*self.msg("status", {"t": "beat", "up": 5, **fields})) == []

    def presence(self, what: bytes) -> None:
        self.h.handle(self.topics["presence"], what)

    def help(self) -> None:
        (out,) = self.h.handle(*self.msg("req", {"t": "help", "why": "keypad"}))
        assert self.codec.open(out.topic, out.payload)["t"] == "ok"


@pytest.fixture
def case(rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> Sim:
    return Sim(rt, clock, shop["key"])


def alerts(rt: Runtime, kind: str | None = None) -> list[Alert]:
    with rt.sessions() as s:
        q = select(Alert).order_by(Alert.id)
        if kind:
            q = q.where(Alert.kind == kind)
        return list(s.scalars(q))


def one(rt: Runtime, kind: str) -> Alert:
    (a,) = alerts(rt, kind)
    return a


def shown(rt: Runtime) -> dict[str, Any]:
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and c.last_status is not None
        return c.last_status


# --- each kind ----------------------------------------------------------------------------------

def test_forced_entry_is_critical_and_shown_before_any_beat(rt: Runtime, case: Sim, notifier: RecordingNotifier
                                                           ) -> None:
    case.beat(door="closed", lock="locked")
    case.send(case.evt("forced"))
    a = one(rt, "forced")
    assert (a.severity, a.state, a.count, a.late, a.delivered) == ("critical", "open", 1, False, True)
    assert [(m["kind"], m["severity"], m["case"]) for _, m in notifier.sent] == [("forced", "critical", "c1")]
    # the door reads open at once, not at the next beat
    assert shown(rt) == {"up": 5, "door": "open", "lock": "forced", "alarms": ["forced"]}
    # closing the door clears the alarm shown, but a forced entry waits for staff
    case.send(case.evt("closed", after="forced"))
    assert shown(rt)["door"] == "closed" and "alarms" not in shown(rt)
    assert one(rt, "forced").state == "open"


def test_held_open_resolves_when_the_door_closes(rt: Runtime, case: Sim, clock: FakeClock) -> None:
    case.send(case.evt("granted", source="phone", ms=5000), case.evt("opened", source="phone"))
    assert shown(rt)["lock"] == "open"
    clock.advance(60)
    case.send(case.evt("held_open", s=60))
    a = one(rt, "held_open")
    assert (a.severity, a.state, a.detail) == ("high", "open", "door held open (60 s)")
    assert shown(rt)["alarms"] == ["held_open"]
    # a close older than the alarm (a late journal) resolves nothing
    case.send(case.evt("closed", ago=30, after="open"))
    assert one(rt, "held_open").state == "open"
    clock.advance(5)
    case.send(case.evt("closed", after="open"))
    a = one(rt, "held_open")
    assert (a.state, a.resolved_by, a.resolved_at) == ("resolved", "case: closed", rt.now())
    assert "alarms" not in shown(rt)
    # in one batch, the events' order decides: closed after the alarm resolves it, before it not
    clock.advance(60)
    case.send(case.evt("held_open", ago=1, s=60), case.evt("closed"))
    assert [x.state for x in alerts(rt, "held_open")] == ["resolved", "resolved"]
    case.send(case.evt("closed", ago=1), case.evt("held_open", s=60))
    assert [x.state for x in alerts(rt, "held_open")] == ["resolved", "resolved", "open"]
    assert shown(rt)["alarms"] == ["held_open"]


def test_tamper_resolves_on_reset_not_when_the_switch_closes(rt: Runtime, case: Sim) -> None:
    case.send(case.evt("tamper"))
    assert (one(rt, "tamper").severity, shown(rt)["alarms"]) == ("critical", ["tamper"])
    case.send(case.evt("tamper_cleared"))
    assert one(rt, "tamper").state == "open" and shown(rt)["alarms"] == ["tamper"]
    case.send(case.evt("tamper_cleared", latched=True))
    assert one(rt, "tamper").state == "open" and shown(rt)["alarms"] == ["tamper"]
    case.send(case.evt("tamper_reset", by="staff"))
    assert one(rt, "tamper").state == "resolved" and "alarms" not in shown(rt)


def test_tamper_ends_when_the_switch_closes_on_a_case_that_does_not_latch(rt: Runtime, case: Sim) -> None:
    """tamper_blocks_shoppers off: nothing latches, so the switch closing is the end of it."""
    case.send(case.evt("tamper"))
    case.send(case.evt("tamper_cleared", latched=False))
    assert one(rt, "tamper").state == "resolved" and "alarms" not in shown(rt)


def test_fault_and_config_error(rt: Runtime, case: Sim) -> None:
    case.send(case.evt("fault", part="nfc", error="no answer", retry_ms=2000),
              case.evt("config_error", error="keypad: bad value"))
    f, c = one(rt, "fault"), one(rt, "config_error")
    assert (f.severity, f.detail) == ("high", "fault in nfc: no answer")
    assert (c.severity, c.detail) == ("high", "config error: keypad: bad value")
    # whatever a case puts in its event is stored (PostgreSQL takes no NUL in text) and cut to fit
    assert case.send(case.evt("fault", part="x\x00y", error="e" * 400)) == [str(case.next_id - 1)]
    f = one(rt, "fault")
    assert f.count == 2 and f.detail.startswith("fault in x\ufffdy: eee") and len(f.detail) == 300


def test_staff_credentials_used_offline_are_reviewed_and_a_revoked_one_is_critical(rt: Runtime, case: Sim) -> None:
    """docs/safety.md: an offline case honours its staff set and journals each use it could not
    confirm; the cloud tells a still-valid credential from one revoked meanwhile."""
    with rt.sessions.begin() as s:
        kept = registry.add_staff(s, "s1", "pin", "ab" * 32, rt.now(), "Ana").id
    case.send(case.evt("staff_unconfirmed", ago=5, who=kept), case.evt("staff_unconfirmed", who="s_90ne0ab1cd2e"),
              case.evt("staff_unconfirmed", who="local-1"))
    used = one(rt, "staff_offline")
    assert (used.severity, used.count) == ("normal", 2)  # the valid one and the case's own
    # the newest use describes the alert; the older one is on record among the events
    assert used.detail == "staff credential local-1 used while the case could not confirm its staff set"
    with rt.sessions() as s:
        whos = [e.data["who"] for e in s.scalars(select(Event).where(Event.kind == "staff_unconfirmed")
                                                 .order_by(Event.id))]
    assert whos == [kept, "s_90ne0ab1cd2e", "local-1"]
    bad = one(rt, "revoked_used")
    assert bad.severity == "critical" and "s_90ne0ab1cd2e" in bad.detail


def test_a_staff_id_with_a_long_digit_run_is_still_checked(rt: Runtime, case: Sim) -> None:
    """Ids are "s_" + 12 hex digits, about 1 in 9 with 7+ digits in a row: the event scrubber,
    which blanks such runs (phone numbers), keeps a value of exactly that form."""
    with rt.sessions.begin() as s:
        s.add(Staff(id="s_7654321fedcb", store_id="s1", kind="pin", hash="ab" * 32, label="Bo", created_at=rt.now()))
    case.send(case.evt("staff_unconfirmed", who="s_1234567abcde"))  # revoked (not the store's any more)
    bad = one(rt, "revoked_used")
    assert bad.severity == "critical" and "s_1234567abcde" in bad.detail
    case.send(case.evt("staff_unconfirmed", who="s_7654321fedcb"))  # still valid
    assert "s_7654321fedcb" in one(rt, "staff_offline").detail
    # anything else with a long digit run is still blanked
    assert scrub({"who": "s_12345678901234", "n": "s_1234567abcde ", "l": ["tel 5551234567"]}) == {
        "who": "s_#", "n": "s_#abcde ", "l": ["tel #"]}


def test_journal_overflow_raises_an_alert(rt: Runtime, case: Sim, clock: FakeClock) -> None:
    # the record the firmware's journal writes (firmware/lockcase/journal.py, OVERFLOW)
    case.send(case.evt("journal_overflow", ago=3600, first=11, last=210, lost=200))
    a = one(rt, "journal_overflow")
    assert a.severity == "high" and a.detail == "journal overflowed while offline: 200 events lost (ids 11-210)"
    assert a.first_at == rt.now() - 3600


def test_help_made_offline_arrives_late_from_the_journal(rt: Runtime, case: Sim, notifier: RecordingNotifier
                                                        ) -> None:
    case.send(case.evt("help", ago=900, source="keypad"))
    a = one(rt, "help")
    assert (a.severity, a.late, a.first_at, a.count) == ("normal", True, rt.now() - 900, 1)
    assert a.detail == "help requested at case Fragrances"
    assert notifier.sent[-1][1]["late"] is True


def test_help_made_online_is_one_alert_with_its_journaled_event(rt: Runtime, case: Sim, clock: FakeClock) -> None:
    case.help()  # the request, then its journal event a moment later
    clock.advance(2)
    case.send(case.evt("help", ago=2, source="keypad"))
    a = one(rt, "help")
    assert (a.count, a.late) == (1, False)


# --- one open alert per case and kind -------------------------------------------------------------

def test_repeats_update_the_open_alert(rt: Runtime, case: Sim, clock: FakeClock, notifier: RecordingNotifier,
                                       settings: Settings) -> None:
    first = case.evt("forced")
    case.send(first)
    clock.advance(10)
    case.send(case.evt("closed"), case.evt("forced"))
    case.send(first)  # the case did not get the evtack and sends it again: not a repeat
    a = one(rt, "forced")
    assert (a.count, a.first_at, a.last_at) == (2, rt.now() - 10, rt.now())
    assert len(notifier.sent) == 1  # repeated to the store at most every alert_repeat_s
    clock.advance(settings.alert_repeat_s)
    case.send(case.evt("forced"))
    assert one(rt, "forced").count == 3 and len(notifier.sent) == 2
    # the database holds the rule too (two workers cannot both open one)
    with pytest.raises(IntegrityError), rt.sessions.begin() as s:
        s.add(Alert(store_id="s1", case_id="c1", kind="forced", created_at=rt.now()))
    # once resolved, the next one is a new alert
    with rt.sessions.begin() as s:
        got = s.get(Alert, a.id)
        assert got is not None
        got.state = "resolved"
    case.send(case.evt("forced"))
    assert [(x.state, x.count) for x in alerts(rt, "forced")] == [("resolved", 3), ("open", 1)]


def test_offline_after_its_timeout_and_resolved_when_back(rt: Runtime, case: Sim, clock: FakeClock,
                                                          notifier: RecordingNotifier) -> None:
    case.presence(b"offline")
    alerts_ = rt.policy.alerts

    def scan() -> None:
        with rt.sessions.begin() as s:
            alerts_.scan_offline(s)
        rt.policy.flush_alerts(rt.sessions)

    clock.advance(rt.settings.offline_alert_s - 1)
    scan()
    assert alerts(rt, "offline") == []
    clock.advance(1)
    scan()
    clock.advance(120)
    scan()  # still offline: the same alert, not a repeat
    a = one(rt, "offline")
    assert (a.severity, a.state, a.count, a.first_at) == ("high", "open", 1, rt.now() - 120 - rt.settings.offline_alert_s)
    assert [m["kind"] for _, m in notifier.sent] == ["offline"]
    case.presence(b"online")
    assert one(rt, "offline").state == "resolved"
    # back by its messages only (no presence seen): the next scan resolves it
    case.presence(b"offline")
    clock.advance(rt.settings.offline_alert_s)
    scan()
    assert [x.state for x in alerts(rt, "offline")] == ["resolved", "open"]
    case.beat(door="closed", lock="locked")
    scan()
    assert [x.state for x in alerts(rt, "offline")] == ["resolved", "resolved"]


def _scan(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        rt.policy.alerts.scan_offline(s)
    rt.policy.flush_alerts(rt.sessions)


def test_a_silent_case_still_shown_online_is_offline(rt: Runtime, case: Sim, clock: FakeClock) -> None:
    """A broker restarted without persistence loses the retained presence and may publish no Last
    Will: a dead case stays `online`. Not heard from for offline_alert_s (5 beats: the firmware
    beats every 60 s) is offline."""
    from lockcase.uplink import client

    assert rt.settings.offline_alert_s >= 4 * client._BEAT_MS // 1000
    case.beat(door="closed", lock="locked")
    clock.advance(rt.settings.offline_alert_s - 1)
    _scan(rt)
    assert alerts(rt, "offline") == []
    clock.advance(1)
    _scan(rt)
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and c.online  # what the presence still says
    a = one(rt, "offline")
    assert (a.state, a.first_at) == ("open", rt.now() - rt.settings.offline_alert_s)
    clock.advance(60)
    _scan(rt)
    assert one(rt, "offline").state == "open"  # not resolved because the presence says online
    case.beat(door="closed", lock="locked")  # heard from again
    _scan(rt)
    assert one(rt, "offline").state == "resolved"


def test_an_offline_alert_resolved_by_staff_stays_resolved_while_the_case_is_away(
        rt: Runtime, case: Sim, clock: FakeClock) -> None:
    from casecloud import alerts as alerts_mod

    case.presence(b"offline")
    clock.advance(rt.settings.offline_alert_s)
    _scan(rt)
    with rt.sessions.begin() as s:
        assert alerts_mod.resolve(s, one(rt, "offline").id, "ana", rt.now()) is not None
    for _ in range(3):  # still away: the absence is known and dealt with
        clock.advance(rt.settings.offline_check_every_s)
        _scan(rt)
    assert [x.state for x in alerts(rt, "offline")] == ["resolved"]
    # back, then gone again: a new absence, a new alert
    case.beat(door="closed", lock="locked")
    clock.advance(10)
    case.presence(b"offline")
    clock.advance(rt.settings.offline_alert_s)
    _scan(rt)
    assert [x.state for x in alerts(rt, "offline")] == ["resolved", "open"]
    # the same after an alert the case resolved itself (presence online, then a dead case)
    case.presence(b"online")
    assert [x.state for x in alerts(rt, "offline")] == ["resolved", "resolved"]
    clock.advance(rt.settings.offline_alert_s)
    _scan(rt)
    assert [x.state for x in alerts(rt, "offline")] == ["resolved", "resolved", "open"]


# --- status from events ---------------------------------------------------------------------------

def test_older_journal_events_do_not_override_a_newer_beat(rt: Runtime, case: Sim, clock: FakeClock) -> None:
    case.beat(door="closed", lock="locked")
    case.send(case.evt("opened", ago=100, source="phone"), case.evt("forced", ago=90))
    assert shown(rt) == {"up": 5, "door": "closed", "lock": "locked"}
    # within a batch, in the case's order: the last word counts
    clock.advance(5)
    case.send(case.evt("granted", source="app", ms=5000), case.evt("opened", source="app"), case.evt("closed"))
    assert shown(rt) == {"up": 5, "door": "closed", "lock": "locked"}
    case.send(case.evt("granted", source="app", ms=5000))
    assert shown(rt)["lock"] == "released"


# --- the API --------------------------------------------------------------------------------------

@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as c:
        yield c


def test_list_acknowledge_resolve(api: TestClient, rt: Runtime, case: Sim) -> None:
    case.send(case.evt("forced"), case.evt("fault", part="nfc", error="x"))
    case.help()
    r = api.get("/v1/admin/alerts", params={"severity": ["critical", "normal"]}, headers=H)
    assert r.status_code == 200 and [a["kind"] for a in r.json()] == ["help", "forced"]
    forced = r.json()[1]
    assert api.get("/v1/admin/alerts", params={"kind": "fault", "case": "c1", "store": "s1"},
                   headers=H).json()[0]["detail"] == "fault in nfc: x"
    assert len(api.get("/v1/admin/alerts", params={"limit": 1, "offset": 1}, headers=H).json()) == 1
    for bad in ({"state": "gone"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}, {"severity": "low"}):
        assert api.get("/v1/admin/alerts", params=bad, headers=H).status_code == 422, bad

    r = api.post(f"/v1/admin/alerts/{forced['id']}/ack", json={"by": "ana"}, headers=H)
    assert r.status_code == 200 and (r.json()["state"], r.json()["acked_by"], r.json()["acked_at"]) == (
        "acknowledged", "ana", rt.now())
    # the first to acknowledge stays on record; a repeat still updates the acknowledged alert
    assert api.post(f"/v1/admin/alerts/{forced['id']}/ack", json={"by": "bob"}, headers=H).json()["acked_by"] == "ana"
    case.send(case.evt("forced"))
    assert one(rt, "forced").count == 2 and one(rt, "forced").state == "acknowledged"
    assert [a["kind"] for a in api.get("/v1/admin/alerts", params={"state": "acknowledged"}, headers=H).json()] == [
        "forced"]

    r = api.post(f"/v1/admin/alerts/{forced['id']}/resolve", json={"by": "ana"}, headers=H)
    assert r.status_code == 200 and (r.json()["state"], r.json()["resolved_by"]) == ("resolved", "ana")
    assert api.post(f"/v1/admin/alerts/{forced['id']}/ack", json={"by": "bob"}, headers=H).status_code == 409
    assert api.post(f"/v1/admin/alerts/{forced['id']}/resolve", json={}, headers=H).status_code == 200
    assert api.post("/v1/admin/alerts/999999/ack", json={"by": "x"}, headers=H).status_code == 404
    assert api.post("/v1/admin/alerts/999999/resolve", json={}, headers=H).status_code == 404
    assert api.post(f"/v1/admin/alerts/{2**63}/resolve", json={}, headers=H).status_code == 422
    for body in ({}, {"by": ""}, {"by": "x" * 101}, {"by": "a\x00b"}):
        assert api.post(f"/v1/admin/alerts/{forced['id']}/ack", json=body, headers=H).status_code == 422, body
    assert api.post(f"/v1/admin/alerts/{forced['id']}/ack", json={"by": "x"}).status_code == 401


# --- delivery: a real HTTP server -----------------------------------------------------------------

class Hook:
    """A store's receiver on a loopback port: answers `codes` in turn (then 200), records what
    came, checks the signature as docs/cloud.md tells a receiver to; `gate` holds every answer."""

    def __init__(self, secret: bytes, codes: list[int]) -> None:
        self.secret, self.codes = secret, list(codes)
        self.got: list[tuple[dict[str, Any], bool]] = []
        self.gate = threading.Event()
        self.gate.set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                ts = self.headers[TIMESTAMP]
                want = "sha256=" + hmac.new(hook.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                hook.got.append((json.loads(body), hmac.compare_digest(want, self.headers[SIGNATURE])))
                hook.gate.wait(30)
                self.send_response(hook.codes.pop(0) if hook.codes else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


SECRET = b"store-shares-this"


@pytest.fixture
def webhook_rt(settings: Settings, clock: FakeClock) -> Iterator[Runtime]:
    # the real notifier, with short waits between tries (the backoff itself is tenacity's)
    r = build(settings, clock=clock, notifier=WebhookNotifier(SECRET, attempts=4, backoff_s=0.01, max_s=10))
    yield r
    r.engine.dispose()


def hooked(rt: Runtime, clock: FakeClock, shop: dict[str, Any], hook: Hook) -> Sim:
    from casecloud.models import Store

    with rt.sessions.begin() as s:
        st = s.get(Store, "s1")
        assert st is not None
        st.notify_url = hook.url
    return Sim(rt, clock, shop["key"])


def test_webhook_retries_then_delivers_signed(webhook_rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> None:
    hook = Hook(SECRET, [500, 503])
    try:
        case = hooked(webhook_rt, clock, shop, hook)
        case.send(case.evt("tamper"))
        a = one(webhook_rt, "tamper")
        assert (a.delivered, a.attempts, a.last_error) == (True, 3, None)
        assert len(hook.got) == 3 and all(ok for _, ok in hook.got)
        msg = hook.got[-1][0]
        assert (msg["kind"], msg["severity"], msg["case"], msg["state"], msg["id"]) == (
            "tamper", "critical", "c1", "open", a.id)
    finally:
        hook.close()


def test_webhook_gives_up_bounded_and_says_why(webhook_rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> None:
    hook = Hook(SECRET, [500] * 10)
    try:
        case = hooked(webhook_rt, clock, shop, hook)
        case.send(case.evt("forced"))
        a = one(webhook_rt, "forced")
        assert (a.delivered, a.attempts, a.last_error) == (False, 4, "HTTP 500")
        # the periodic check POSTs it again once alert_redeliver_s has passed, not before
        hook.codes = []

        def periodic() -> None:
            with webhook_rt.sessions.begin() as s:
                webhook_rt.policy.alerts.redeliver(s)
            webhook_rt.policy.flush_alerts(webhook_rt.sessions)

        periodic()
        assert one(webhook_rt, "forced").attempts == 4
        clock.advance(webhook_rt.settings.alert_redeliver_s)
        periodic()
        a = one(webhook_rt, "forced")
        assert (a.delivered, a.attempts, a.last_error) == (True, 5, None)
        hook.codes = [404]  # refused: not retried
        case.send(case.evt("tamper"))
        a = one(webhook_rt, "tamper")
        assert (a.delivered, a.attempts, a.last_error) == (False, 1, "HTTP 404")
    finally:
        hook.close()


def test_a_slow_webhook_does_not_hold_the_batch(webhook_rt: Runtime, clock: FakeClock, shop: dict[str, Any]) -> None:
    hook = Hook(SECRET, [])
    hook.gate.clear()  # the store's receiver hangs until released
    try:
        case = hooked(webhook_rt, clock, shop, hook)
        h = case.h
        # what the worker does: decide and commit, then finish without waiting for deliveries
        d = h.decide([case.msg("evt", {"t": "evts", "evts": [case.evt("forced")]})])
        assert d.ready[0]  # the evtack is ready before the store answered
        d.finish()
        d2 = h.decide([case.msg("req", {"t": "help"})])
        outs = d2.finish()  # the help call is answered while the forced alert's delivery hangs
        assert case.codec.open(outs[0][0].topic, outs[0][0].payload)["t"] == "ok"
        assert not one(webhook_rt, "forced").delivered
        hook.gate.set()
        webhook_rt.policy.wait_alerts(30)
        assert one(webhook_rt, "forced").delivered and one(webhook_rt, "help").delivered
    finally:
        hook.close()


def test_one_stores_dead_webhook_holds_up_only_its_own_alerts(webhook_rt: Runtime, clock: FakeClock,
                                                               shop: dict[str, Any]) -> None:
    """A store's deliveries run one at a time on a thread of their own: store A's hanging webhook
    keeps A's next alerts waiting (and dropped for redelivery once it fails), never store B's."""
    from tests.cloud.helpers import wait_for

    # a delivery may take a minute (4 tries of up to 5 s each, here): A's stays under way meanwhile
    rt = build(webhook_rt.settings, clock=clock, notifier=WebhookNotifier(SECRET, attempts=4, backoff_s=0.01,
                                                                          max_s=60))
    hook_a, hook_b = Hook(SECRET, []), Hook(SECRET, [])
    hook_a.gate.clear()  # A's receiver hangs until released
    try:
        case_a = hooked(rt, clock, shop, hook_a)
        with rt.sessions.begin() as s:
            registry.create_store(s, "s2", rt.now(), name="High St", notify_url=hook_b.url)
            _, sec = registry.register_case(s, "s2", "c2", rt.now(), name="Watches")
        case_b = Sim(rt, clock, bytes.fromhex(sec.key_hex), "s2", "c2")

        def send(c: Sim, *kinds: str) -> None:  # what the worker does: no waiting for deliveries
            c.h.decide([c.msg("evt", {"t": "evts", "evts": [c.evt(k) for k in kinds]})]).finish()

        send(case_a, "forced", "tamper", "fault")
        wait_for(lambda: len(hook_a.got) == 1)  # A's first delivery is under way, hanging
        send(case_b, "forced")
        wait_for(lambda: _delivered(rt, "c2", "forced"))
        # B's alert got through while A's first delivery was still hanging, A's others waiting
        assert [m["kind"] for m, _ in hook_b.got] == ["forced"] and all(ok for _, ok in hook_b.got)
        first = hook_a.got[0][0]["kind"]  # a try timed out meanwhile may have been repeated: the same
        assert {m["kind"] for m, _ in hook_a.got} == {first}
        a_rows = {a.kind: a for a in alerts(rt) if a.case_id == "c1"}
        assert [(a.delivered, a.attempts) for a in a_rows.values()] == [(False, 0)] * 3  # none done yet
        assert "s1" in rt.policy.delivery.busy()
        # the periodic check does not queue again a store whose delivery is under way
        clock.advance(rt.settings.alert_redeliver_s)
        with rt.sessions.begin() as s:
            rt.policy.alerts.redeliver(s)
        assert {a.notified_at for a in alerts(rt) if a.case_id == "c1"} == {rt.now() - rt.settings.alert_redeliver_s}
        # A's receiver fails: its next alerts are not each tried for a minute, but left for redelivery
        hook_a.codes = [503] * 10
        hook_a.gate.set()
        rt.policy.wait_alerts(60)
        assert {m["kind"] for m, _ in hook_a.got} == {first}
        a_rows = {a.kind: a for a in alerts(rt) if a.case_id == "c1"}
        rest = sorted(a_rows.keys() - {first})
        assert (a_rows[first].delivered, a_rows[first].attempts) == (False, 4)
        assert [(a_rows[k].delivered, a_rows[k].attempts) for k in rest] == [(False, 0)] * 2
        # back: the periodic check sends the backlog, a few per store per round
        hook_a.codes = []
        with rt.sessions.begin() as s:
            rt.policy.alerts.redeliver(s, per_store=2)
        rt.policy.flush_alerts(rt.sessions)
        a_rows = {a.kind: a for a in alerts(rt) if a.case_id == "c1"}
        # the oldest two (by id: in the order raised)
        assert [a.delivered for a in sorted(a_rows.values(), key=lambda a: a.id)] == [True, True, False]
    finally:
        hook_a.close()
        hook_b.close()
        rt.engine.dispose()


def _delivered(rt: Runtime, case_id: str, kind: str) -> bool:
    return any(a.delivered for a in alerts(rt, kind) if a.case_id == case_id)


# --- through the broker, and the periodic check ------------------------------------------------

def test_forced_through_the_broker_shown_and_alerted(rt: Runtime, broker: tuple[str, int], shop: dict[str, Any],
                                                    notifier: RecordingNotifier) -> None:
    from casecloud.worker import Worker
    from tests.cloud.fakecase import FakeCase
    from tests.cloud.helpers import Loop, wait_for

    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    w = Worker(rt)
    loop = Loop()
    loop.start(w.run())
    try:
        wait_for(w.connected.is_set)
        c = FakeCase(*broker, "s1", "c1", shop["key"])
        try:
            c.hello()
            c.send("status", {"t": "beat", "up": 1, "door": "closed", "lock": "locked"})
            b, _ = c.send("evt", {"t": "evts", "evts": [{"i": "7", "k": "forced", "ts": rt.now()}]})
            assert c.expect("evtack", re=b["id"])["ids"] == ["7"]
            # acknowledged means committed: the alert and the door are there, the webhook follows
            assert shown(rt) == {"up": 1, "door": "open", "lock": "forced", "alarms": ["forced"]}
            assert one(rt, "forced").severity == "critical"
            wait_for(lambda: [m["kind"] for _, m in notifier.sent] == ["forced"])
        finally:
            c.close()
    finally:
        loop.close()


def test_offline_loop_keeps_checking(rt: Runtime, case: Sim, clock: FakeClock, notifier: RecordingNotifier) -> None:
    from casecloud.jobs import offline_loop
    from tests.cloud.helpers import Loop, wait_for

    rt.settings.offline_check_every_s = 0
    case.presence(b"offline")
    clock.advance(rt.settings.offline_alert_s)
    real, calls = rt.policy.alerts.scan_offline, []

    def flaky(s: Any) -> None:  # the first check fails (say the database was away): the next ones run
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database away")
        real(s)

    rt.policy.alerts.scan_offline = flaky  # type: ignore[method-assign]
    loop = Loop()
    loop.start(offline_loop(rt.policy.alerts, rt.sessions, lambda: rt.policy.flush_alerts(rt.sessions, wait=False)))
    try:
        wait_for(lambda: [m["kind"] for _, m in notifier.sent] == ["offline"])
        assert one(rt, "offline").state == "open" and len(calls) >= 2
    finally:
        loop.close()


def test_a_hung_delivery_does_not_hold_up_exit() -> None:
    # A pool of concurrent.futures would wait for the job (forever here) before the interpreter
    # exits; the undelivered alert is POSTed again by the next process's periodic check.
    import subprocess
    import sys

    code = ("import threading\nfrom casecloud.background import DaemonPool\n"
            "p = DaemonPool(2, 't')\nf = p.submit(threading.Event().wait)\n"
            "g = p.submit(lambda: print('other jobs still run', flush=True))\ng.result(10)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "other jobs still run\n", r.stderr
