"""Input from outside cannot stop a service task or move a case's state beyond bounds: one JSON
parser for everything a case (or anyone on the broker) sends, supervised tasks reported by
/healthz, numbers bounded at the API's edge, canonical signatures, a bounded replay window and
its admin resync."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from casecloud import codec
from casecloud.api import create_app
from casecloud.batch import Handler
from casecloud.codec import INT_MAX, INT_MIN, MAX_JUMP, Rejected
from casecloud.commands import Commander
from casecloud.models import Case, Event
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised
from casecloud.worker import Worker
from sim.process import free_port
from tests.cloud.conftest import FakeClock
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, wait_for
from tests.cloud.test_service_paths import responder

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}
T = "lockcase/v1/s1/c1/"


# --- one parser ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "[" * 1000,  # raised RecursionError in every consumer
    "[" * 17 + "]" * 17,
    '{"a":' * 17 + "1" + "}" * 17,
    "NaN", "[Infinity]", "[-Infinity]", "[1e999]",
    str(2**63), str(-(2**63) - 1), "1" * 400,
])
def test_parse_refuses_what_no_consumer_survives(text: str) -> None:
    with pytest.raises(Rejected) as e:
        codec.parse(text)
    assert e.value.reason == "bad_json"


def test_parse_takes_what_fits() -> None:
    assert codec.parse(str(INT_MAX)) == INT_MAX and codec.parse(str(INT_MIN)) == INT_MIN
    assert codec.parse("[" * 16 + "]" * 16) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
    assert codec.parse('["' + "[" * 900 + '"]') == ["[" * 900]  # brackets in a string do not nest
    assert codec.parse('["\\"[[[[[[[[[[[[[[[[[[[["]') == ['"' + "[" * 20]
    assert codec.parse("1.5e3") == 1500.0
    with pytest.raises(Rejected, match="too_large"):
        codec.parse(b" " * 1025)
    with pytest.raises(Rejected, match="bad_json"):
        codec.parse(b'"\xff"')  # not UTF-8
    with pytest.raises(Rejected, match="bad_json"):
        codec.parse("\ud800")


# --- the worker: one message costs only itself ----------------------------------------------------

def signed(shop: dict[str, Any], kind: str, body: dict[str, Any], seq: int, now: int) -> tuple[str, bytes]:
    """A message the case `c1` signed (any seq, any content: what a broken or stolen case could send)."""
    p = json.dumps({"v": 1, "case": "c1", "id": f"m{seq}", "seq": seq, "exp": now + codec.TTL, **body},
                   separators=(",", ":"))
    return T + kind, codec.seal(shop["key"], T + kind, p)


def beat(shop: dict[str, Any], seq: int, now: int) -> tuple[str, bytes]:
    return signed(shop, "status", {"t": "beat", "up": seq}, seq, now)


def window(rt: Runtime) -> tuple[int, int, int]:
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None
        return c.rx_seq, c.rx_mask, c.tx_seq


def test_a_huge_event_ts_is_refused_without_sending_the_batch_back(
        rt: Runtime, shop: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    h = Handler(rt)
    now = rt.now()
    evt = {"t": "evts", "evts": [{"i": "e1", "k": "opened", "ts": 2**63, "d": {}}]}
    deep = {"t": "evts", "evts": [{"i": "e2", "k": "opened", "ts": now, "d": json.loads('{"a":' * 16 + "1" + "}" * 16)}]}
    fits = {"t": "evts", "evts": [{"i": "e3", "k": "opened", "ts": INT_MAX, "d": {}}]}
    msgs = [signed(shop, "evt", evt, 1, now), signed(shop, "evt", deep, 2, now), signed(shop, "evt", fits, 3, now),
            beat(shop, 4, now)]
    with caplog.at_level(logging.INFO, logger="casecloud"):
        outs = h.handle_batch(msgs)
    assert "one by one" not in caplog.text and "Traceback" not in caplog.text
    assert outs[0] == [] and outs[1] == [] and len(outs[2]) == 1  # refused, refused, acknowledged
    assert h.rejected["bad_json"] == 2
    assert window(rt)[0] == 4
    with rt.sessions() as s:
        assert [(e.event_id, e.ts) for e in s.scalars(select(Event).where(Event.source == "case"))] == [("e3", INT_MAX)]


def test_an_uppercase_signature_is_refused(rt: Runtime, shop: dict[str, Any]) -> None:
    topic, payload = beat(shop, 1, rt.now())
    env = json.loads(payload)
    for s in (env["s"].upper(), env["s"][:10] + env["s"][10:].upper(), env["s"] + "\n", " " + env["s"]):
        with pytest.raises(Rejected, match="bad_sig"):
            codec.check(shop["key"], topic, json.dumps({"p": env["p"], "s": s}).encode(), rt.now(), 0, 0)
    h = Handler(rt)
    assert h.handle(topic, json.dumps({"p": env["p"], "s": env["s"].upper()}).encode()) == []
    assert h.rejected == {"bad_sig": 1} and window(rt)[0] == 0
    h.handle(topic, payload)
    assert window(rt)[0] == 1


def test_a_huge_seq_cannot_cut_the_case_off(rt: Runtime, shop: dict[str, Any]) -> None:
    h = Handler(rt)
    now = rt.now()
    h.handle(*beat(shop, 1, now))
    h.handle(*beat(shop, INT_MAX, now))  # validly signed: a corrupt seq file, a bug
    h.handle(*beat(shop, 1 + MAX_JUMP + 1, now))
    assert h.rejected == {"replay": 2} and window(rt)[0] == 1
    h.handle(*beat(shop, 2, now))  # the case goes on
    h.handle(*beat(shop, 2 + MAX_JUMP, now))  # as far as one message may move the window
    assert window(rt)[0] == 2 + MAX_JUMP and h.rejected == {"replay": 2}


def test_resync_lets_the_next_fresh_message_reestablish_the_window(
        rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    h = Handler(rt)
    h.handle(*beat(shop, 7, rt.now()))
    far = 10**12  # the case's seq jumped: every message it sends is refused
    captured = beat(shop, far, rt.now())
    h.handle(*captured)
    assert window(rt)[0] == 7 and h.rejected == {"replay": 1}
    tx0 = window(rt)[2]
    with TestClient(create_app(rt)) as api:
        assert api.post("/v1/admin/cases/nope/resync", headers=H).status_code == 404
        assert api.post("/v1/admin/cases/c1/resync").status_code == 401
        r = api.post("/v1/admin/cases/c1/resync", headers=H)
        assert r.status_code == 200 and r.json() == {"case": "c1", "signed_after": rt.now() + codec.RESYNC_MARGIN}
    assert window(rt)[2] == tx0 + MAX_JUMP // 2  # the cloud's own seq is ahead of anything the case saw
    # a message signed before the resync, replayed while still unexpired: refused
    h.handle(*captured)
    assert window(rt)[0] == 7 and h.rejected == {"replay": 2}
    # a hello proves no freshness (its exp is not checked): answered, window untouched
    assert len(h.handle(*signed(shop, "status", {"t": "hello", "fw": "x"}, far + 1, rt.now() + 10**6))) == 1
    assert window(rt)[0] == 7
    clock.advance(codec.RESYNC_MARGIN + 1)
    h.handle(*beat(shop, far + 2, rt.now()))  # the case's next beat
    assert window(rt)[:2] == (far + 2, (1 << codec.WINDOW) - 1)
    h.handle(*captured)
    h.handle(*beat(shop, far + 1, rt.now()))  # below it: may have been signed before the resync
    assert h.rejected == {"replay": 4}
    h.handle(*beat(shop, far + 3, rt.now()))
    assert window(rt)[0] == far + 3 and h.rejected == {"replay": 4}


def test_resync_brings_back_a_case_whose_seq_fell_behind(rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    h = Handler(rt)
    with rt.sessions.begin() as s:
        c = s.get(Case, "c1")
        assert c is not None
        c.rx_seq, c.rx_mask = 10**15, codec._MASK  # left by a message from before the bound
    h.handle(*beat(shop, 40, rt.now()))
    assert h.rejected == {"replay": 1}
    with TestClient(create_app(rt)) as api:
        assert api.post("/v1/admin/cases/c1/resync", headers=H).status_code == 200
    clock.advance(codec.RESYNC_MARGIN + 1)
    h.handle(*beat(shop, 41, rt.now()))
    assert window(rt)[0] == 41 and h.rejected == {"replay": 1}


# --- the API's numbers ---------------------------------------------------------------------------

def test_numbers_out_of_range_are_422_not_500(rt: Runtime) -> None:
    with TestClient(create_app(rt)) as api:
        for name in ("since", "until", "offset"):
            for v in (10**23, -(10**23), 2**63):
                r = api.get("/v1/admin/events", params={name: v}, headers=H)
                assert r.status_code == 422, (name, v, r.text)
        assert api.get("/v1/admin/events", params={"since": INT_MIN, "until": INT_MAX, "offset": INT_MAX},
                       headers=H).json() == []


def test_a_json_body_is_read_with_the_protocols_bounds(rt: Runtime, shop: dict[str, Any]) -> None:
    """FastAPI's json.loads takes NaN or 1e999 into an `Any` field (a config's `set`): stored on
    SQLite and sent to the case, a 500 on PostgreSQL. Now a 422 before the endpoint runs."""
    hj = {**H, "content-type": "application/json"}
    with TestClient(create_app(rt)) as api:
        for bad in (b"NaN", b"1e999", b"-Infinity", str(2**63).encode(), b"[" * 17 + b"]" * 17):
            r = api.post("/v1/admin/cases/c1/config", content=b'{"set": {"x": ' + bad + b"}}", headers=hj)
            assert r.status_code == 422, (bad, r.text)
        assert api.post("/v1/admin/stores", content=b'{"id": "s9", "n": NaN}', headers=hj).status_code == 422
        for ctype in ("application/JSON", "Application/Json; charset=utf-8", "application/vnd.x+json", "text/plain"):
            r = api.post("/v1/admin/cases/c1/config", content=b'{"set": {"x": NaN}}', headers={**H, "content-type": ctype})
            assert r.status_code == 422, (ctype, r.text)
        assert api.post("/v1/admin/stores", content=b'{"id": "s9", "name": "' + b"x" * 70000 + b'"}',
                        headers=hj).status_code == 413
        assert api.post("/v1/admin/stores", content=b'{"id": "s9", "n": 1.5}', headers=hj).status_code == 201


def test_a_request_deadline_survives_any_payload(rt: Runtime) -> None:
    h = Handler(rt)
    junk = [b"[" * 1000, b'{"p":"' + b"[" * 900 + b'"}', b'{"p":"{\\"exp\\":1' + b"0" * 400 + b'}"}', b'{"p":7}',
            b'["p"]', b"\xff"]
    assert h.deadlines([(T + "req", j) for j in junk]) == [None] * len(junk)


def test_a_failing_deadline_costs_only_its_message(rt: Runtime, shop: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from casecloud import batch as batch_module

    real = batch_module.deadline

    def flaky(topic: str, payload: bytes, wait_s: float, margin_s: float) -> float | None:
        if payload == b"boom":
            raise ZeroDivisionError("a future bug")
        return real(topic, payload, wait_s, margin_s)

    monkeypatch.setattr(batch_module, "deadline", flaky)
    ok = signed(shop, "req", {"t": "help"}, 1, rt.now())
    got = Handler(rt).deadlines([(T + "req", b"boom"), ok])
    assert got[0] is None and isinstance(got[1], float)


def test_every_integer_the_api_takes_is_bounded(rt: Runtime) -> None:
    """Guards every endpoint, present and future: an integer parameter or body field without
    bounds that fit a signed 64-bit column is a 500 waiting for its number."""
    spec = create_app(rt).openapi()
    schemas = spec.get("components", {}).get("schemas", {})

    def ints(schema: dict[str, Any], where: str, seen: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                yield from ints(schemas[name], where, seen | {name})
            return
        if schema.get("type") == "integer":
            yield where, schema
        for key in ("anyOf", "allOf", "oneOf"):
            for sub in schema.get(key, []):
                yield from ints(sub, where, seen)
        for prop, sub in schema.get("properties", {}).items():
            yield from ints(sub, f"{where}.{prop}", seen)
        if isinstance(schema.get("items"), dict):
            yield from ints(schema["items"], f"{where}[]", seen)

    found = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                found += ints(p.get("schema", {}), f"{method} {path} {p['name']}", set())
            for media in op.get("requestBody", {}).get("content", {}).values():
                found += ints(media.get("schema", {}), f"{method} {path} body", set())
    assert any("since" in w for w, _ in found)
    unbounded = [w for w, sch in found if not (INT_MIN <= sch.get("minimum", sch.get("exclusiveMinimum", INT_MIN - 1))
                                               and sch.get("maximum", sch.get("exclusiveMaximum", INT_MAX + 1)) <= INT_MAX)]
    assert unbounded == []


# --- supervision and /healthz --------------------------------------------------------------------

def test_a_supervised_task_is_restarted_logged_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    up = asyncio.Event()

    async def task() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RecursionError(f"failure {len(runs)}")
        up.set()
        await asyncio.sleep(3600)

    async def main() -> Supervised:
        sup = Supervised("sender", task, first_wait_s=0.01, max_wait_s=0.02)
        t = asyncio.create_task(sup.run())
        await asyncio.wait_for(up.wait(), 10)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return sup

    with caplog.at_level(logging.ERROR, logger="casecloud.supervise"):
        sup = asyncio.run(main())
    assert len(runs) == 3 and sup.restarts == 2 and sup.last_error == "RecursionError: failure 2"
    failures = [r for r in caplog.records if "sender failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_a_task_that_returns_is_restarted_too() -> None:
    runs: list[int] = []
    up = asyncio.Event()

    async def task() -> None:
        runs.append(1)
        if len(runs) > 1:
            up.set()
            await asyncio.sleep(3600)

    async def main() -> Supervised:
        sup = Supervised("retention", task, first_wait_s=0.01, max_wait_s=0.02)
        t = asyncio.create_task(sup.run())
        await asyncio.wait_for(up.wait(), 10)
        assert sup.ok and sup.problem() is None
        t.cancel()
        return sup

    sup = asyncio.run(main())
    assert sup.restarts == 1 and sup.last_error == "Stopped: retention returned"


class BrokenSender(Commander):
    async def run(self) -> None:
        raise RuntimeError("the sender broke")


def test_healthz_is_503_with_the_reason_when_the_sender_is_down(rt: Runtime) -> None:
    with TestClient(create_app(rt, BrokenSender(rt))) as api:
        r = api.get("/healthz")
        assert r.status_code == 503 and r.json()["ok"] is False
        assert "command sender down" in r.json()["detail"] and "RuntimeError: the sender broke" in r.json()["detail"]
        assert r.json()["tasks"]["command sender"]["restarts"] >= 1


def test_healthz_is_503_while_the_broker_link_is_down(rt: Runtime) -> None:
    rt.settings.mqtt_host, rt.settings.mqtt_port = "127.0.0.1", free_port()  # nothing listens
    with TestClient(create_app(rt, Commander(rt))) as api:
        r = api.get("/healthz")
        assert r.status_code == 503 and r.json()["detail"] == "command sender: broker link down"
        assert r.json()["tasks"]["command sender"]["running"] is True


def test_healthz_reports_the_worker_beside_the_api(rt: Runtime, broker: tuple[str, int]) -> None:
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    w = Worker(rt)
    down = Supervised("worker", w.run, link=w.connected)  # not started: down
    with TestClient(create_app(rt, Commander(rt), [down])) as api:
        wait_for(lambda: api.get("/healthz").json()["broker"])
        r = api.get("/healthz")
        assert r.status_code == 503 and r.json()["detail"].startswith("worker down since")
        assert r.json()["tasks"]["command sender"]["broker"] is True


# --- the command path over a real broker -------------------------------------------------------------

@pytest.fixture
def service(rt: Runtime, broker: tuple[str, int], shop: dict[str, Any]) -> Iterator[TestClient]:
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    rt.settings.cmd_timeout_s = 5
    loop = Loop()
    w = Worker(rt)
    worker = Supervised("worker", w.run, link=w.connected)
    loop.start(worker.run())
    wait_for(w.connected.is_set)
    with TestClient(create_app(rt, Commander(rt), [worker])) as api:
        wait_for(lambda: api.get("/healthz").status_code == 200)
        yield api
    loop.close()


def test_a_poisoned_ack_does_not_silence_the_command_path(
        service: TestClient, rt: Runtime, broker: tuple[str, int], shop: dict[str, Any]) -> None:
    m = service.post("/v1/admin/members", json={"card": "x"}, headers=H).json()
    case = FakeCase(*broker, "s1", "c1", shop["key"])
    stop = threading.Event()
    try:
        case.hello()
        junk = (b"[" * 1000, b'{"p":"' + b"[" * 900 + b'","s":"00"}', b"\xff\xfe", b'{"p":"x","s":"' + b"A" * 64 + b'"}',
                b'{"p":"{\\"exp\\":1' + b"0" * 400 + b'}","s":"00"}')  # an exp no float holds
        for kind in ("ack", "req"):  # the worker reads a request's exp before anything else
            for j in junk:
                case.publish_raw(kind, j)
        case.hello()  # the worker read them all too, and is still there
        assert service.get("/healthz").status_code == 200
        responder(case, stop)
        r = service.post("/v1/app/unlock", json={"token": m["app_token"], "case": "c1"})
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        assert service.post("/v1/admin/cases/c1/relock", headers=H).json() == {"ok": True, "err": None}
        h = service.get("/healthz").json()
        assert h["ok"] and h["tasks"]["command sender"]["restarts"] == 0 and h["tasks"]["worker"]["restarts"] == 0
        assert h["acks"] == {"rejected": len(junk), "failed": 0}  # counted, and the operator can see it
    finally:
        stop.set()
        case.close()


def test_healthz_reports_the_broker_file_sync(rt: Runtime, tmp_path: Any) -> None:
    rt.settings.broker_dir = tmp_path / "broker-files"
    (tmp_path / "broker-files").mkdir()
    with TestClient(create_app(rt)) as api:
        r = api.get("/healthz")
        assert r.status_code == 200 and r.json()["tasks"]["broker sync"]["running"] is True, r.text


# --- answers from the retailer's and the carrier's systems are outside input too ---------------------

JUNK_ANSWERS = [b"[" * 1000, b"not json", b"[1]", b'"x"', b'{"member": "R-1", "status": NaN}', b"\xff"]


def test_a_junk_loyalty_answer_is_a_loyalty_error(tmp_path: Any) -> None:
    import httpx

    from casecloud.adapters.loyalty import LoyaltyError, WebhookLoyalty
    from casecloud.privacy import Hasher

    answers = iter(JUNK_ANSWERS)

    def handler(_req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(answers), headers={"content-type": "application/json"})

    loyalty = WebhookLoyalty("http://retailer.invalid/members", b"k", Hasher(b"s" * 32), lambda: 0.0,
                             transport=httpx.MockTransport(handler))
    for _ in JUNK_ANSWERS:
        with pytest.raises(LoyaltyError, match="malformed"):
            loyalty._ask({"token": "x"})  # pyright: ignore[reportPrivateUsage]


def test_a_junk_carrier_error_is_an_sms_error() -> None:
    import httpx

    from casecloud.adapters.sms import SmsError, TwilioSms

    answers = iter([*JUNK_ANSWERS, b'{"code": 21211, "message": "+12025554567 is not valid"}'])

    def handler(_req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=next(answers), headers={"content-type": "application/json"})

    sms = TwilioSms("AC1", "t", "+15550000000", transport=httpx.MockTransport(handler))
    for _ in JUNK_ANSWERS:
        with pytest.raises(SmsError, match="code None"):
            sms.send("+12025554567", "code 123456")
    with pytest.raises(SmsError, match="code 21211$"):
        sms.send("+12025554567", "code 123456")


def test_a_case_whose_seq_jumped_comes_back_after_a_resync(
        service: TestClient, rt: Runtime, broker: tuple[str, int], shop: dict[str, Any], clock: FakeClock) -> None:
    """The firmware codec's own seq handling over the real broker and worker: a corrupt seq file
    put the case's seq 10^9 ahead; its greeting is answered, its requests are refused until an admin
    resync, after which its next request re-establishes the window."""
    from lockcase.uplink import codec as P

    case = FakeCase(*broker, "s1", "c1", shop["key"], clock=clock, seqs=P.MemorySeqs(0, 10**9))
    try:
        case.hello()
        req, _ = case.send("req", {"t": "help"})
        with pytest.raises(TimeoutError):
            case.expect("rep", re=req["id"], timeout=2)
        assert service.post("/v1/admin/cases/c1/resync", headers=H).status_code == 200
        clock.advance(codec.RESYNC_MARGIN + 1)
        req, _ = case.send("req", {"t": "help"})
        assert case.expect("rep", re=req["id"])["t"] == "ok"
        assert window(rt)[0] == req["seq"]
    finally:
        case.close()


@pytest.mark.parametrize("mode", [[], ["--no-worker"]], ids=["api+worker", "no-worker"])
def test_python_m_casecloud_healthz_says_what_runs_and_what_is_down(tmp_path: Any, mode: list[str]) -> None:
    """Both ways of running the API: /healthz names the tasks of its own process, and says 503 with
    the reason once the broker is gone."""
    import os
    import subprocess
    import sys

    import httpx

    from tests.cloud.conftest import start_mosquitto

    port = free_port()
    with start_mosquitto(tmp_path / "broker") as (host, mport):
        env = dict(os.environ, CASECLOUD_DATA_DIR=str(tmp_path / "svc"), CASECLOUD_API_PORT=str(port),
                   CASECLOUD_MQTT_HOST=host, CASECLOUD_MQTT_PORT=str(mport), CASECLOUD_ADMIN_TOKEN="tkn")
        log = (tmp_path / "svc.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "casecloud", *mode], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"

        def health() -> httpx.Response | None:
            try:
                return httpx.get(base + "/healthz")
            except httpx.HTTPError:
                return None

        try:
            wait_for(lambda: (r := health()) is not None and r.status_code == 200, 30)
            tasks = set(httpx.get(base + "/healthz").json()["tasks"])
            if mode:
                assert tasks == {"command sender"}
            else:
                assert {"command sender", "worker", "retention"} <= tasks
        except BaseException:
            proc.terminate()
            proc.wait(10)
            raise
    try:
        wait_for(lambda: (r := health()) is not None and r.status_code == 503, 30)
        detail = httpx.get(base + "/healthz").json()["detail"]
        assert "command sender: broker link down" in detail
        assert ("worker: broker link down" in detail) is not bool(mode)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
