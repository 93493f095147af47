"""The store app's unlock button: HTTP API -> signed cmd over the broker -> case -> ack -> HTTP answer."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from casecloud import registry
from casecloud.api import create_app
from casecloud.commands import Commander
from sim.process import SimClient, free_port
from tests.cloud.helpers import seed_hq
from tests.e2e.conftest import Env, wait_for


@pytest.fixture
def api(env: Env) -> Iterator[str]:
    port = free_port()
    env.rt.settings.cmd_timeout_s = 4
    seed_hq(env.rt, "t0ken")  # an hq API token (the settings' admin token only bootstraps)
    server = uvicorn.Server(uvicorn.Config(create_app(env.rt, Commander(env.rt)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    served = env.loop.start(server.serve())
    wait_for(lambda: server.started, timeout=10)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(base + "/healthz").status_code == 200)
    yield base
    # Waited for: the app's command sender then closes its MQTT client on a live loop, instead of
    # being collected after the loop has gone (an unraisable-exception warning per test).
    server.should_exit = True
    served.result(10)



def coil_went_on(ctl: SimClient) -> bool:
    """The coil was energized at some moment up to now, by what the case streamed since `watch`.
    Not `state()["energized"]` after the answer: the answer goes through the broker, the API and
    HTTP, and on a loaded machine the 1.5 s grant had ended by the time the test looked."""
    ctl.call("state")  # on a watching connection, answered after every item streamed before it
    items = [ctl.stream.get_nowait() for _ in range(ctl.stream.qsize())]
    return any(m.get("ev") == "out" and m.get("name") == "lock" and m.get("value") for m in items)


def member_token(env: Env, status: str) -> str:
    with env.rt.sessions.begin() as s:
        _, token = registry.create_member(s, env.rt.hasher, env.rt.now(), status=status)
    return token


def test_app_unlock_answers_after_the_case_acts(env: Env, api: str, ctl: SimClient) -> None:
    token = member_token(env, "trusted")
    ctl.call("watch")
    r = httpx.post(api + "/v1/app/unlock", json={"token": token, "case": "c1"}, timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert coil_went_on(ctl)  # the answer came after the coil was on


def test_app_unlock_of_an_offline_case_times_out(env: Env, api: str) -> None:
    token = member_token(env, "trusted")
    r = httpx.post(api + "/v1/app/unlock", json={"token": token, "case": "c1"}, timeout=15)
    assert r.status_code == 504, r.text


def test_flagged_member_cannot_unlock_from_the_app(env: Env, api: str, ctl: SimClient) -> None:
    token = member_token(env, "flagged")
    r = httpx.post(api + "/v1/app/unlock", json={"token": token, "case": "c1"}, timeout=15)
    assert r.status_code == 403, r.text
    assert not ctl.state()["energized"]


def test_a_tripped_enclosure_refuses_the_app_until_staff_reset_it(env: Env, api: str, ctl: SimClient) -> None:
    admin = {"Authorization": "Bearer t0ken"}
    token = member_token(env, "trusted")
    ctl.call("tamper", on=True)
    ctl.wait_for(lambda s: "tamper" in s["alarms"], what="tamper")
    r = httpx.post(api + "/v1/app/unlock", json={"token": token, "case": "c1"}, timeout=15)
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["err"] == "tamper", r.text
    assert not ctl.state()["energized"]
    # The reset is refused while the enclosure is still open ...
    r = httpx.post(api + "/v1/admin/cases/c1/reset-tamper", headers=admin, timeout=15)
    assert r.json() == {"ok": False, "err": "tamper_open"}, r.text
    # ... and the latch outlives the switch closing again, until someone resets it.
    ctl.call("tamper", on=False)
    st = ctl.wait_for(lambda s: not s["outputs"].get("buzzer"), what="switch closed")
    assert "tamper" in st["alarms"] and st["display"][0].startswith("Case alarm")
    r = httpx.post(api + "/v1/admin/cases/c1/reset-tamper", headers=admin, timeout=15)
    assert r.json() == {"ok": True, "err": None}, r.text
    ctl.wait_for(lambda s: not s["alarms"], what="latch cleared")
    ctl.call("watch")
    r = httpx.post(api + "/v1/app/unlock", json={"token": token, "case": "c1"}, timeout=15)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    assert coil_went_on(ctl)
