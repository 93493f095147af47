"""What the case refuses and what the broker forbids, on the real stack."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
import pytest

from casecloud import channel, codec
from casecloud.models import Case
from sim.process import SimClient
from tests.e2e.conftest import SERVICE_PASSWORD, SERVICE_USER, Env, wait_for


def mqtt_client(env: Env, user: str, password: str, inbox: queue.Queue[tuple[str, bytes]] | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)  # type: ignore[attr-defined]
    c.username_pw_set(user, password)
    if inbox is not None:
        c.on_message = lambda _c, _u, m: inbox.put((m.topic, bytes(m.payload)))
    c.connect(env.host, env.port, keepalive=10)
    c.loop_start()
    return c


def sealed_cmd(env: Env, body: dict, *, case_id: str = "c1", now_shift: int = 0) -> tuple[str, bytes]:
    with env.rt.sessions.begin() as s:
        case = s.get(Case, case_id)
        assert case is not None
        topic, _, payload = channel.seal(s, case, "cmd", body, env.rt.now() + now_shift)
    return topic, payload


def rejected(ctl: SimClient) -> tuple[int, str | None]:
    c = ctl.state()["cloud"]
    return c["rejected"], c["last_reject"]


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_signed_unlock_opens_and_its_replay_is_refused(env: Env, ctl: SimClient) -> None:
    svc = mqtt_client(env, SERVICE_USER, SERVICE_PASSWORD)
    topic, payload = sealed_cmd(env, {"t": "unlock", "grant": "g_test"})
    publish(svc, topic, payload)
    ctl.wait_for(lambda s: s["energized"], what="unlock from a signed command")
    ctl.wait_for(lambda s: not s["energized"], timeout=5, what="relocked")
    publish(svc, topic, payload)  # the same bytes again
    wait_for(lambda: rejected(ctl) == (1, "replay"))
    assert not ctl.state()["energized"]
    svc.loop_stop()


@pytest.mark.parametrize("attack,reason", [
    ("forged", "bad_sig"), ("expired", "expired"), ("other_case_key", "bad_sig"), ("wrong_case", "wrong_case"),
    ("garbage", "bad_json"), ("oversized", "too_large"),
])
def test_bad_commands_are_refused_lock_stays_closed(env: Env, ctl: SimClient, attack: str, reason: str) -> None:
    svc = mqtt_client(env, SERVICE_USER, SERVICE_PASSWORD)
    topic = codec.topic("s1", "c1", "cmd")
    body = {"t": "unlock", "grant": "g_evil"}
    now = env.rt.now()
    if attack == "forged":
        _, payload = codec.encode(bytes(32), topic, body, case="c1", seq=10**6, now=now)
    elif attack == "expired":
        topic, payload = sealed_cmd(env, body, now_shift=-600)
    elif attack == "other_case_key":
        _, payload = sealed_cmd(env, body, case_id="c2")  # c2's key, sent to c1
    elif attack == "wrong_case":
        key = bytes.fromhex(env.secrets["c1"].key_hex)
        _, payload = codec.encode(key, topic, body, case="c2", seq=10**6, now=now)
    elif attack == "garbage":
        payload = b"\xff\x00{not json"
    else:
        payload = b'{"p":"' + b"x" * 2000 + b'","s":"00"}'
    publish(svc, topic, payload)
    wait_for(lambda: rejected(ctl) == (1, reason))
    time.sleep(0.2)
    st = ctl.state()
    assert not st["energized"] and st["lock"] == "locked"
    assert st["cloud"]["up"]  # a bad message never takes the link down
    svc.loop_stop()


def test_one_case_cannot_publish_on_another_cases_topics(env: Env, ctl: SimClient) -> None:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    spy = mqtt_client(env, SERVICE_USER, SERVICE_PASSWORD, inbox)
    # Subscribed once the broker has acknowledged both (a 0.3 s sleep was a race with the spy's
    # network thread on a loaded machine, and the allowed message went by before it listened).
    subacks: set[int] = set()
    spy.on_subscribe = lambda _c, _u, mid, _r, _p: subacks.add(mid)
    mids = {spy.subscribe("lockcase/v1/s1/+/req", qos=1)[1], spy.subscribe("lockcase/v1/s1/c1/cmd", qos=1)[1]}
    wait_for(lambda: mids <= subacks, timeout=30)
    c2 = env.secrets["c2"]
    intruder = mqtt_client(env, c2.mqtt_username, c2.mqtt_password)
    publish(intruder, "lockcase/v1/s1/c1/req", b"as c1")
    publish(intruder, "lockcase/v1/s1/c1/cmd", b"unlock c1")
    publish(intruder, "lockcase/v1/s1/c2/req", b"own topic")  # allowed: proves the client works
    # Each was sent once the broker had acknowledged the one before (publish waits for its
    # PUBACK), and the broker queues what it lets through for the spy in that order: once the
    # allowed one, sent last, has arrived, anything let through before it has too.
    got = []
    while not got or got[-1][0] != "lockcase/v1/s1/c2/req":
        try:
            got.append(inbox.get(timeout=30))
        except queue.Empty:
            raise AssertionError(f"the allowed message never arrived; got {got}") from None
    got += [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert [t for t, _ in got] == ["lockcase/v1/s1/c2/req"]
    assert not ctl.state()["energized"]
    spy.loop_stop()
    intruder.loop_stop()
