"""The shipped broker configuration (cloud/broker/casecloud.conf) on a real Mosquitto: logins bound
to client ids, the packet cap, the worker's queue, nothing written to disk; and the case table kept
in step with the broker by the cloud itself (brokersync.py)."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import event

from casecloud import broker as brokerfiles
from casecloud import registry
from casecloud.api import create_app
from casecloud.brokersync import ACL_FILE, PASSWD_FILE, SERVICE_FILE
from casecloud.mqtt import login as mqtt_login
from casecloud.runtime import build
from casecloud.settings import Settings
from tests.cloud.conftest import is_postgres, start_mosquitto
from tests.cloud.fakecase import FakeCase
from tests.cloud.helpers import seed_hq, wait_for

WORKER, WORKER_PW = "worker.w1", "worker-secret"
API, API_PW = "api.a1", "api-secret"
PHONE = "+12025550143"
REQ = "lockcase/v1/+/+/req"


class Login:
    """One MQTT connection under a login, recording what it receives and whether it was dropped."""

    def __init__(self, port: int, user: str, password: str, client_id: str, *, clean: bool = True,
                 subscribe: str | None = None) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.dropped = False
        self.rc: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.rc.put(rc.value)
        self.client.on_message = lambda _c, _u, m: self.got.put((m.topic, bytes(m.payload)))

        def on_disconnect(*_a: Any) -> None:
            self.dropped = True

        self.client.on_disconnect = on_disconnect
        self.client.reconnect_delay_set(30, 30)  # a dropped client stays dropped within a test
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.connack = self.rc.get(timeout=10)
        if self.connack == 0 and subscribe:
            subscribed: queue.Queue[bool] = queue.Queue()
            self.client.on_subscribe = lambda *_a: subscribed.put(True)
            self.client.subscribe(subscribe, qos=1)
            subscribed.get(timeout=10)

    def close(self) -> None:
        self.client.on_disconnect = None
        self.client.disconnect()
        self.client.loop_stop()


def login_ok(port: int, user: str, password: str) -> bool:
    c = Login(port, user, password, "probe")
    c.close()
    return c.connack == 0


@contextlib.contextmanager
def shop_broker(tmp_path: Path, cases: tuple[str, ...] = ("c1", "c2")) -> Iterator[tuple[int, dict[str, Any]]]:
    """The shipped config with the cloud's generated files for a store s1 with these cases."""
    secrets = {c: registry.CaseSecrets("00" * 32, c, f"pw-{c}") for c in cases}
    passwd = brokerfiles.passwd_file([(WORKER, brokerfiles.password_hash(WORKER_PW)),
                                      (API, brokerfiles.password_hash(API_PW))]
                                     + [(c, brokerfiles.password_hash(s.mqtt_password)) for c, s in secrets.items()])
    acl = brokerfiles.acl_file([("s1", c) for c in cases], [WORKER, API])
    with start_mosquitto(tmp_path / "broker", passwd=passwd, acl=acl) as (_host, port):
        yield port, secrets


def test_no_login_can_take_another_ones_client_id(tmp_path: Path) -> None:
    with shop_broker(tmp_path) as (port, secrets):
        worker = Login(port, WORKER, WORKER_PW, "casecloud-host-worker", subscribe=REQ)
        api = Login(port, API, API_PW, "casecloud-host-api")
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        assert (worker.connack, api.connack, c1.connack) == (0, 0, 0)
        # c2's login takes each client id in turn: each connection is its own, no one is knocked off
        for stolen in ("case-c1", "casecloud-host-worker", "casecloud-host-api", "c1", WORKER):
            thief = Login(port, "c2", secrets["c2"].mqtt_password, stolen)
            assert thief.connack == 0
            thief.close()
        c1.client.publish("lockcase/v1/s1/c1/req", b"still here", qos=1).wait_for_publish(5)
        assert worker.got.get(timeout=5) == ("lockcase/v1/s1/c1/req", b"still here")
        assert not (worker.dropped or api.dropped or c1.dropped)
        for c in (worker, api, c1):
            c.close()


def test_oversize_packet_drops_its_sender_only(tmp_path: Path) -> None:
    with shop_broker(tmp_path) as (port, secrets):
        worker = Login(port, WORKER, WORKER_PW, "w", subscribe=REQ)
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        c1.client.publish("lockcase/v1/s1/c1/req", b"x" * 100_000, qos=1)
        wait_for(lambda: c1.dropped)
        c2 = Login(port, "c2", secrets["c2"].mqtt_password, "case-c2")
        biggest = b"y" * 1024  # the protocol's largest payload still passes
        c2.client.publish("lockcase/v1/s1/c2/req", biggest, qos=1).wait_for_publish(5)
        assert worker.got.get(timeout=5) == ("lockcase/v1/s1/c2/req", biggest)
        assert worker.got.empty() and not worker.dropped
        for c in (worker, c1, c2):
            c.close()


def test_worker_queue_keeps_more_than_mosquittos_default_1000(tmp_path: Path) -> None:
    n = 1500
    with shop_broker(tmp_path) as (port, secrets):
        Login(port, WORKER, WORKER_PW, "w", clean=False, subscribe=REQ).close()  # the worker goes away
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        for i in range(n):
            c1.client.publish("lockcase/v1/s1/c1/req", str(i).encode(), qos=1).wait_for_publish(5)
        c1.close()
        worker = Login(port, WORKER, WORKER_PW, "w", clean=False)  # back, same session
        got = []
        with contextlib.suppress(queue.Empty):
            while len(got) < n:
                got.append(int(worker.got.get(timeout=5)[1]))
        worker.close()
    assert got == list(range(n))


def test_no_phone_number_in_any_broker_file_after_a_worker_stall(tmp_path: Path) -> None:
    with shop_broker(tmp_path) as (port, secrets):
        Login(port, WORKER, WORKER_PW, "w", clean=False, subscribe=REQ).close()  # stalled: queueing
        case = FakeCase("127.0.0.1", port, "s1", "c1", b"\0" * 32, username="c1",
                        password=secrets["c1"].mqtt_password)
        for _ in range(3):
            case.send("req", {"t": "phone", "num": PHONE})
        case.close()
    # the broker has stopped as a service does (SIGTERM), which is when a persistent one saves
    files = [p for p in (tmp_path / "broker").rglob("*") if p.is_file()]
    assert any(p.name == "mosquitto.log" for p in files)
    digits = PHONE.lstrip("+").encode()
    for p in files:
        assert digits not in p.read_bytes(), f"the phone number is in {p.name}"


def sync_settings(tmp_path: Path, database_url: str | None = None) -> Settings:
    bdir = tmp_path / "broker"
    bdir.mkdir(parents=True)
    (bdir / SERVICE_FILE).write_text(brokerfiles.passwd_file([(WORKER, brokerfiles.password_hash(WORKER_PW)),
                                                              (API, brokerfiles.password_hash(API_PW))]))
    return Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0k"), broker_dir=bdir,
                    broker_pid_file=bdir / "mosquitto.pid", broker_sync_every_s=3600,
                    database_url=database_url if database_url and is_postgres(database_url) else None)


def test_register_rotate_delete_reach_the_broker_with_no_manual_step(tmp_path: Path, database_url: str) -> None:
    settings = sync_settings(tmp_path, database_url)
    rt = build(settings)
    seed_hq(rt, "t0k")
    h = {"Authorization": "Bearer t0k"}
    try:
        with TestClient(create_app(rt)) as api:  # its start writes the files from the (empty) table
            bdir = settings.broker_dir
            assert bdir is not None and (bdir / PASSWD_FILE).exists() and (bdir / ACL_FILE).exists()
            with start_mosquitto(bdir, files_dir=bdir) as (_host, port):
                assert login_ok(port, WORKER, WORKER_PW)
                assert api.post("/v1/admin/stores", json={"id": "s1"}, headers=h).status_code == 201
                r = api.post("/v1/admin/cases", json={"id": "c1", "store": "s1"}, headers=h)
                pw1 = r.json()["mqtt"]["password"]
                wait_for(lambda: login_ok(port, "c1", pw1))
                c1 = Login(port, "c1", pw1, "case-c1")

                pw2 = api.post("/v1/admin/cases/c1/rotate", headers=h).json()["mqtt"]["password"]
                wait_for(lambda: login_ok(port, "c1", pw2))
                assert not login_ok(port, "c1", pw1)
                wait_for(lambda: c1.dropped)  # the old login's connection is gone too
                c1.close()

                # A deleted case's connection must go as well, not only its next login.
                c1 = Login(port, "c1", pw2, "case-c1")
                assert c1.connack == 0
                assert api.delete("/v1/admin/cases/c1", headers=h).status_code == 204
                wait_for(lambda: not login_ok(port, "c1", pw2))
                wait_for(lambda: c1.dropped)
                c1.close()

                # the broker lost its files (a new host): one admin call rebuilds them from the table
                api.post("/v1/admin/cases", json={"id": "c3", "store": "s1"}, headers=h)
                (bdir / PASSWD_FILE).unlink()
                (bdir / ACL_FILE).unlink()
                r = api.post("/v1/admin/broker/sync", headers=h)
                assert r.status_code == 200 and r.json() == {"changed": True, "cases": 1, "services": 2}
                assert "user c3" in (bdir / ACL_FILE).read_text()
    finally:
        rt.engine.dispose()


@pytest.mark.parametrize("name", ["casecloud", "worker.", "c1", "admin.x"])
def test_a_service_login_without_a_role_is_granted_nothing(name: str) -> None:
    assert brokerfiles.service_role(name) is None
    assert f"user {name}" not in brokerfiles.acl_file([], [name])


def test_service_roles_least_privilege() -> None:
    acl = brokerfiles.acl_file([("s1", "c1")], [WORKER, API])
    api = acl.split(f"user {API}\n")[1].split("\n\n")[0].splitlines()
    assert api == ["topic read lockcase/v1/+/+/ack", "topic write lockcase/v1/+/+/cmd"]
    worker = acl.split(f"user {WORKER}\n")[1].split("\n\n")[0].splitlines()
    assert "topic write lockcase/v1/+/+/rep" in worker and "topic read lockcase/v1/+/+/req" in worker
    assert not any("#" in line for line in worker + api)
    assert "pattern" not in acl  # a pattern applies to every login, the services' too


def test_a_service_login_gains_no_case_topics_through_the_patterns(tmp_path: Path) -> None:
    """Mosquitto would apply any `pattern` line to every login, with the login's name as the
    case's level: with the cases' lines as patterns (tried, 2026-12-02) the API's login could
    feed the worker requests, events and presence (retained, too) as a case `api.a1`, and read
    commands sent to it."""
    with shop_broker(tmp_path) as (port, secrets):
        worker = Login(port, WORKER, WORKER_PW, "w", subscribe="lockcase/v1/#")  # gets what it may read
        api = Login(port, API, API_PW, "a", subscribe="lockcase/v1/#")
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        for kind in ("req", "evt", "status", "presence"):
            api.client.publish(f"lockcase/v1/s1/{API}/{kind}", b"forged", qos=1, retain=True).wait_for_publish(5)
            worker.client.publish(f"lockcase/v1/s1/{WORKER}/{kind}", b"forged", qos=1).wait_for_publish(5)
        worker.client.publish(f"lockcase/v1/s1/{API}/cmd", b"to the api", qos=1).wait_for_publish(5)
        # each acknowledged before the next is sent, so a forged message got through would come first
        c1.client.publish("lockcase/v1/s1/c1/req", b"first allowed", qos=1).wait_for_publish(5)
        c1.client.publish("lockcase/v1/s1/c1/ack", b"first allowed", qos=1).wait_for_publish(5)
        assert worker.got.get(timeout=5) == ("lockcase/v1/s1/c1/req", b"first allowed")
        assert api.got.get(timeout=5) == ("lockcase/v1/s1/c1/ack", b"first allowed")
        for c in (worker, api, c1):
            c.close()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "known, not fixed: Mosquitto 2.0.11's acl_file does not check "
    "subscriptions (a deny pattern on $share changes nothing), only deliveries; a case that joins the "
    "workers' share group is handed its turn of every message and each is then refused to it, so "
    "it is lost: 50 of 100 requests with one worker. Until the broker checks subscriptions: a "
    "share group name no case can guess (docs/cloud.md, 'Scaling out')"))
def test_a_case_in_the_workers_share_group_takes_no_requests_from_them(tmp_path: Path) -> None:
    with shop_broker(tmp_path) as (port, secrets):
        worker = Login(port, WORKER, WORKER_PW, "w", subscribe=f"$share/casecloud/{REQ}")
        thief = Login(port, "c2", secrets["c2"].mqtt_password, "case-c2", subscribe=f"$share/casecloud/{REQ}")
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        for n in range(10):
            c1.client.publish("lockcase/v1/s1/c1/req", b"%d" % n, qos=1).wait_for_publish(5)
        got = []
        with contextlib.suppress(queue.Empty):
            while len(got) < 10:
                got.append(worker.got.get(timeout=5)[1])
        for c in (worker, thief, c1):
            c.close()
        assert got == [b"%d" % n for n in range(10)] and thief.got.empty()


def test_a_case_cannot_write_or_retain_under_another_stores_name(tmp_path: Path) -> None:
    """A case's rights name its store as well as its id. With the cases' lines as patterns
    (`lockcase/v1/+/%u/...`, tried 2026-12-02 for Mosquitto's quadratic ACL load) one case
    retained 50,000 1 KB acks under made-up store names in 4 s (the broker 8 -> 147 MiB), each
    sent again to every new subscription of the API or a worker."""
    with shop_broker(tmp_path) as (port, secrets):
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        for n in range(3):
            c1.client.publish(f"lockcase/v1/x{n}/c1/ack", b"planted", qos=1, retain=True).wait_for_publish(5)
        c1.client.publish("lockcase/v1/s1/c1/ack", b"first allowed", qos=1).wait_for_publish(5)
        api = Login(port, API, API_PW, "a", subscribe="lockcase/v1/+/+/ack")  # a later subscription
        c1.client.publish("lockcase/v1/s1/c1/ack", b"live", qos=1).wait_for_publish(5)
        got = api.got.get(timeout=5)
        for c in (api, c1):
            c.close()
        assert got == ("lockcase/v1/s1/c1/ack", b"live")


def test_worker_login_reads_through_a_shared_subscription_and_api_login_does_not_read_requests(
        tmp_path: Path) -> None:
    with shop_broker(tmp_path) as (port, secrets):
        worker = Login(port, WORKER, WORKER_PW, "w", subscribe=f"$share/casecloud/{REQ}")
        api = Login(port, API, API_PW, "a", subscribe=REQ)
        c1 = Login(port, "c1", secrets["c1"].mqtt_password, "case-c1")
        c1.client.publish("lockcase/v1/s1/c1/req", b"r", qos=1).wait_for_publish(5)
        assert worker.got.get(timeout=5) == ("lockcase/v1/s1/c1/req", b"r")
        with pytest.raises(queue.Empty):
            api.got.get(timeout=0.5)
        for c in (worker, api, c1):
            c.close()


def test_admin_answer_comes_after_the_commit(tmp_path: Path) -> None:
    """casectl creates a store and registers a case in it at once: a 201 sent before the commit
    let the registration miss the store (and a failed commit still answered 201)."""
    rt = build(Settings(data_dir=tmp_path / "data", admin_token=SecretStr("t0k")))
    seed_hq(rt, "t0k")

    def fail(_s: Any) -> None:
        raise RuntimeError("the commit fails")

    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as api:
            # the token's first use is noted (a commit of its own) before every commit fails
            assert api.get("/v1/admin/stores", headers={"Authorization": "Bearer t0k"}).status_code == 200
            event.listen(rt.sessions, "before_commit", fail)
            r = api.post("/v1/admin/stores", json={"id": "s1"}, headers={"Authorization": "Bearer t0k"})
            assert r.status_code == 500
    finally:
        rt.engine.dispose()


def test_standalone_sync_beside_a_broker_follows_the_table(tmp_path: Path) -> None:
    """`python -m casecloud.brokersync`, for a broker on a host with no other cloud process."""
    settings = sync_settings(tmp_path)
    bdir = settings.broker_dir
    assert bdir is not None
    rt = build(settings)
    env = dict(os.environ, CASECLOUD_DATA_DIR=str(settings.data_dir), CASECLOUD_BROKER_DIR=str(bdir),
               CASECLOUD_BROKER_PID_FILE=str(bdir / "mosquitto.pid"), CASECLOUD_BROKER_SYNC_EVERY_S="0.2",
               CASECLOUD_ADMIN_TOKEN="t0k")
    proc = None
    try:
        with rt.sessions.begin() as s:
            registry.create_store(s, "s1", rt.now())
            _, sec = registry.register_case(s, "s1", "c1", rt.now())
        proc = subprocess.Popen([sys.executable, "-m", "casecloud.brokersync"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (bdir / ACL_FILE).exists() and "user c1" in (bdir / ACL_FILE).read_text())
        with start_mosquitto(bdir, files_dir=bdir) as (_host, port):
            assert login_ok(port, "c1", sec.mqtt_password)
            with rt.sessions.begin() as s:  # a change made by an API process elsewhere
                _, sec2 = registry.rotate_case(s, "c1")
            wait_for(lambda: login_ok(port, "c1", sec2.mqtt_password))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        rt.engine.dispose()


def test_an_api_without_its_own_login_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    shared = Settings(mqtt_username=WORKER, mqtt_password=SecretStr(WORKER_PW))
    assert mqtt_login(shared, "api") == (WORKER, WORKER_PW)
    assert "no mqtt_api_username" in caplog.text
    caplog.clear()
    own = Settings(mqtt_username=WORKER, mqtt_api_username=API, mqtt_api_password=SecretStr(API_PW))
    assert mqtt_login(own, "api") == (API, API_PW)
    assert mqtt_login(own, "worker")[0] == WORKER
    assert caplog.text == ""
    assert mqtt_login(Settings(mqtt_username=API), "worker")[0] == API
    assert "a login of another role" in caplog.text
    caplog.clear()
    # the old single service login, or an api login given a worker's name: granted nothing
    assert mqtt_login(Settings(mqtt_username="casecloud"), "worker")[0] == "casecloud"
    assert "gives no role" in caplog.text
    caplog.clear()
    assert mqtt_login(Settings(mqtt_username=WORKER, mqtt_api_username="worker.w2"), "api")[0] == "worker.w2"
    assert "a login of another role" in caplog.text
    caplog.clear()
    assert mqtt_login(Settings(), "worker") == (None, None)  # anonymous (a dev broker): nothing to say
    assert caplog.text == ""
