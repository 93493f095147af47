"""Whole-service paths over a real Mosquitto: the app's unlock through the API to a case and back,
the broker's generated password/ACL files confining each case, and no phone number at rest."""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import select

from casecloud import broker as brokerfiles
from casecloud import channel, registry
from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Case, Event
from casecloud.runtime import Runtime
from casecloud.worker import Worker
from tests.cloud.conftest import start_mosquitto
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import Loop, texted_code, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}
PHONE = "2025554567"


def responder(case: FakeCase, stop: threading.Event, ok: bool = True) -> threading.Thread:
    """Acks every cmd the case gets, as the firmware will."""

    def run() -> None:
        while not stop.is_set():
            try:
                cmd = case.expect("cmd", timeout=0.2)
            except TimeoutError:
                continue
            ack = {"t": "ack", "re": cmd["id"], "ok": ok}
            if not ok:
                ack["err"] = "duty_limited"
            case.send("ack", ack)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def service(rt: Runtime, broker: tuple[str, int], shop: dict[str, Any]) -> Iterator[TestClient]:
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    rt.settings.cmd_timeout_s = 2
    loop = Loop()
    w = Worker(rt)
    loop.start(w.run())
    wait_for(w.connected.is_set)
    with TestClient(create_app(rt, Commander(rt))) as api:
        wait_for(lambda: api.get("/healthz").json()["broker"])
        yield api
    loop.close()


def test_app_unlock_waits_for_the_case(service: TestClient, rt: Runtime, broker: tuple[str, int],
                                       shop: dict[str, Any]) -> None:
    m = service.post("/v1/admin/members", json={"card": "x"}, headers=H).json()
    case = FakeCase(*broker, "s1", "c1", shop["key"])
    stop = threading.Event()
    try:
        case.hello()
        responder(case, stop)
        r = service.post("/v1/app/unlock", json={"token": m["app_token"], "case": "c1"})
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True and r.json()["grant"].startswith("g_")
        # the relock button goes the same way
        assert service.post("/v1/admin/cases/c1/relock", headers=H).json() == {"ok": True, "err": None}
    finally:
        stop.set()
        case.close()
    with rt.sessions() as s:
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
    assert "app_unlock" in kinds and "cmd_ack" in kinds  # the worker journaled the ack too


def test_app_unlock_reports_a_case_refusal(service: TestClient, broker: tuple[str, int], shop: dict[str, Any]) -> None:
    m = service.post("/v1/admin/members", json={"card": "x"}, headers=H).json()
    case = FakeCase(*broker, "s1", "c1", shop["key"])
    stop = threading.Event()
    try:
        case.hello()
        responder(case, stop, ok=False)
        r = service.post("/v1/app/unlock", json={"token": m["app_token"], "case": "c1"})
        assert r.status_code == 200 and r.json()["ok"] is False and r.json()["err"] == "duty_limited"
    finally:
        stop.set()
        case.close()


def test_app_unlock_times_out_when_the_case_is_silent(service: TestClient, rt: Runtime) -> None:
    m = service.post("/v1/admin/members", json={"card": "x"}, headers=H).json()
    t0 = time.monotonic()
    r = service.post("/v1/app/unlock", json={"token": m["app_token"], "case": "c1"})
    assert r.status_code == 504 and 1.5 < time.monotonic() - t0 < 10
    with rt.sessions() as s:
        e = s.scalars(select(Event).where(Event.kind == "app_unlock")).one()
        assert e.data["result"] == "timeout" and e.member_id == m["id"]


def test_broker_files_confine_each_case(tmp_path: Path, rt: Runtime, shop: dict[str, Any]) -> None:
    with rt.sessions.begin() as s:
        _, sec2 = registry.register_case(s, "s1", "c2", rt.now())
        _, sec1 = registry.rotate_case(s, "c1")  # a known password for c1 too
        cases = list(s.scalars(select(Case).order_by(Case.id)))
        passwd = brokerfiles.passwd_file([(c.id, c.mqtt_password_hash) for c in cases]
                                         + [(u, brokerfiles.password_hash("svc-pw")) for u in ("worker.svc", "api.svc")])
        acl = brokerfiles.acl_file([(c.store_id, c.id) for c in cases], ["worker.svc", "api.svc"])
    with start_mosquitto(tmp_path / "secure", passwd=passwd, acl=acl) as (host, port):
        rt.settings.mqtt_host, rt.settings.mqtt_port = host, port
        rt.settings.mqtt_username, rt.settings.mqtt_password = "worker.svc", SecretStr("svc-pw")
        loop = Loop()
        w = Worker(rt)
        loop.start(w.run())
        wait_for(w.connected.is_set)
        with pytest.raises(ConnectionRefusedError):
            FakeCase(host, port, "s1", "c1", bytes.fromhex(sec1.key_hex), username="c1", password="wrong")
        c1 = FakeCase(host, port, "s1", "c1", bytes.fromhex(sec1.key_hex), username="c1", password=sec1.mqtt_password)
        c2 = FakeCase(host, port, "s1", "c2", bytes.fromhex(sec2.key_hex), username="c2", password=sec2.mqtt_password)
        try:
            c1.hello()  # the whole path works with per-case logins
            c2.hello()
            # c1 listens on c2's command topic and writes to c2's request topic
            c1.client.subscribe("lockcase/v1/s1/c2/cmd", qos=1)
            c1.client.subscribe("lockcase/v1/#", qos=1)
            time.sleep(0.3)
            _, payload = c2.send("req", {"t": "help"})
            c1.client.publish("lockcase/v1/s1/c2/req", payload, qos=1).wait_for_publish(5)
            c1.client.publish("lockcase/v1/s9/c2/req", payload, qos=1).wait_for_publish(5)  # another store's name
            c2.expect("rep")
            with rt.sessions.begin() as s:
                case2 = s.get(Case, "c2")
                assert case2 is not None
                topic, _, cmd = channel.seal(s, case2, "cmd", {"t": "relock"}, rt.now())
            svc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="svc-test")
            svc.username_pw_set("api.svc", "svc-pw")  # the API's role: cmds
            svc.connect(host, port)
            svc.loop_start()
            svc.publish(topic, cmd, qos=1).wait_for_publish(5)
            assert c2.expect("cmd")["t"] == "relock"
            time.sleep(0.5)
            svc.loop_stop()
            svc.disconnect()
            leaked = [t for t, _ in c1.raw if "/c2/" in t]
            while not c1.inbox.empty():
                leaked += [t for t, _ in [c1.inbox.get()] if "/c2/" in t]
            assert leaked == []
            assert w.handler.rejected["replay"] == 0  # c1's copy of c2's request never reached the cloud
            assert w.handler.rejected["unknown_case"] == 0  # nor did the one under another store's name
        finally:
            c1.close()
            c2.close()
            loop.close()


def test_no_phone_number_at_rest_or_in_logs(rt: Runtime, broker: tuple[str, int], shop: dict[str, Any],
                                             caplog: pytest.LogCaptureFixture, stored_files: Any,
                                             tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    loop = Loop()
    w = Worker(rt)
    loop.start(w.run())
    wait_for(w.connected.is_set)
    with TestClient(create_app(rt)) as api:
        m = api.post("/v1/admin/members", json={"phone": PHONE, "card": "04AABBCC"}, headers=H).json()
        case = FakeCase(*broker, "s1", "c1", shop["key"])
        try:
            case.hello()
            r, _ = case.send("req", {"t": "phone", "num": PHONE})
            ch = case.expect("rep", re=r["id"])
            r2, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": "000000"})
            case.expect("rep", re=r2["id"])
            r3, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": texted_code(rt)})
            assert case.expect("rep", re=r3["id"])["t"] in ("allow", "deny")
            tok, _ = case.send("req", {"t": "token", "tok": "04AABBCC", "src": "nfc"})
            ch2 = case.expect("rep", re=tok["id"])
            r4, _ = case.send("req", {"t": "phone", "num": "1" + PHONE, "sid": ch2["sid"]})
            assert case.expect("rep", re=r4["id"])["need"] == "code"
            b, _ = case.send("evt", {"t": "evts", "evts": [{"i": "e1", "k": "denied", "ts": 1, "d": {"n": PHONE}}]})
            case.expect("evtack", re=b["id"])
            assert len(api.post("/v1/dev/sms/lookup", json={"phone": PHONE}, headers=H).json()) == 2
            assert api.post("/v1/admin/members/lookup", json={"phone": PHONE}, headers=H).json()[0]["id"] == m["id"]
        finally:
            case.close()
            loop.close()
        assert api.get(f"/v1/admin/members/{m['id']}", headers=H).status_code == 200
    rt.engine.dispose()
    files = stored_files()  # the SQLite files, or the PostgreSQL database's
    # and every file of the broker the requests went through (its log, its config; test_broker.py
    # checks a stopped broker that held queued requests)
    broker_files = [p for p in (tmp_path / "broker").rglob("*") if p.is_file()]
    assert broker_files
    # the search looks where the data is: the member's number is there, as its keyed hash
    assert any(rt.hasher.phone("+1" + PHONE).encode() in p.read_bytes() for p in files)
    needles = [PHONE, PHONE[-7:], "1" + PHONE]
    for p in files + broker_files:
        data = p.read_bytes()
        for n in needles:
            assert n.encode() not in data, f"{n} in {p.name}"
            assert n.encode("utf-16-le") not in data
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "…67" in text  # the logs do speak of the number, masked
    for n in needles:
        assert not re.search(n, text), f"{n} in the logs"


def test_workers_share_the_load_with_a_shared_subscription(rt: Runtime, broker: tuple[str, int],
                                                           shop: dict[str, Any]) -> None:
    rt.settings.mqtt_host, rt.settings.mqtt_port = broker
    rt.settings.mqtt_share_group = "casecloud"
    loop = Loop()
    workers = []
    for n in range(2):
        rt.settings.mqtt_client_id = f"w{n}"
        w = Worker(rt)
        loop.start(w.run())
        wait_for(w.connected.is_set)
        workers.append(w)
    handled = [0, 0]
    for i, w in enumerate(workers):
        orig = w.handler.decide

        def counting(msgs: Any, i: int = i, orig: Any = orig) -> Any:
            handled[i] += len(msgs)
            return orig(msgs)

        w.handler.decide = counting  # type: ignore[method-assign]
    case = FakeCase(*broker, "s1", "c1", shop["key"])
    try:
        case.hello()
        ids = []
        for _ in range(8):
            r, _ = case.send("req", {"t": "help"})
            ids.append(r["id"])
        got = [case.expect("rep")["re"] for _ in ids]
        assert sorted(got) == sorted(ids)
        assert case.quiet(0.5) == []  # each request answered exactly once
    finally:
        case.close()
        loop.close()
    assert sum(handled) == 10 and min(handled) >= 1, handled  # presence, hello, 8 requests: split, not doubled
