"""`make sim`'s cloud (sim/stack.py) with a sim case: what a newcomer meets after a boot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sim.demo import CASE, MEMBERS, demo_config
from sim.process import SimCase
from sim.stack import DemoCloud


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoCloud, SimCase]]:
    work = tmp_path_factory.mktemp("sim")
    cloud = DemoCloud(work).start()
    cfg = demo_config()
    cfg["cloud"] = cloud.case_cloud_config()
    case = SimCase(work / "case1", cfg)
    try:
        case.start()
        yield cloud, case
    finally:
        case.stop()
        cloud.stop()


def synced(case: SimCase, times: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while case.console().count("cloud: clock synced") < times:
        if time.monotonic() > deadline:
            raise AssertionError("the case did not sync with the cloud:\n" + case.console()[-2000:])
        time.sleep(0.05)
    time.sleep(1)  # anything that would arrive after the greeting
    return case.console()


def test_no_message_is_dropped_after_a_boot_or_a_reset(stack: tuple[DemoCloud, SimCase]) -> None:
    # After a reset the broker held the case's retained presence ("offline", its Last Will); the
    # embedded broker sent it to the case on connecting, on a topic the case never subscribed to,
    # and the case logged `cloud: dropped message: bad_json` (sim/stack.py, SpecBroker).
    _, case = stack
    assert "dropped message" not in synced(case, 1)
    boots = case.boots
    with pytest.raises(ConnectionError):
        case.client().call("reset", cause="hard")
    case.wait_reboot(boots)
    console = synced(case, 2)
    assert "SIM RESET hard" in console
    assert "dropped message" not in console, console


def test_the_token_the_screen_names_opens_the_admin_api(stack: tuple[DemoCloud, SimCase]) -> None:
    cloud, _ = stack
    token = Path(cloud.token_file).read_text().strip()
    r = httpx.get(f"{cloud.api_url}/v1/admin/cases", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert CASE in r.text


def test_app_unlock_is_said_in_words(stack: tuple[DemoCloud, SimCase]) -> None:
    cloud, case = stack
    synced(case, 1)
    said = cloud.app_unlock(MEMBERS[0][1])
    assert said.startswith("app unlock: the case opened"), said
    assert "{" not in said


def test_one_console_login_a_role_signs_in_over_plain_http(stack: tuple[DemoCloud, SimCase]) -> None:
    # make sim prints these and keeps them in console-logins: a newcomer signs in as each role and
    # sees the demo store (the cookie must not be Secure, or a browser drops it on plain HTTP).
    cloud, _ = stack
    lines = [line.split() for line in Path(cloud.login_file).read_text().splitlines()]
    assert [role for role, _, _ in lines] == ["hq", "associate", "manager"]
    for role, email, password in lines:
        with httpx.Client(base_url=cloud.api_url, timeout=10) as c:
            r = c.post("/v1/auth/login", json={"email": email, "password": password})
            assert r.status_code == 200, (role, r.text)
            assert "secure" not in r.headers["set-cookie"].lower(), r.headers["set-cookie"]
            me = c.get("/v1/me").json()
            assert me["role"] == role, me
            page = c.get("/console/stores/demo-store", follow_redirects=True)
            assert page.status_code == 200 and CASE in page.text, (role, page.status_code)


def test_the_sims_secrets_are_their_owners_alone(stack: tuple[DemoCloud, SimCase]) -> None:
    """The case key (provision.json, the flash image), the admin token and the demo logins: none
    readable by another user of the machine."""
    cloud, case = stack
    assert case.config_file is not None
    for f in (case.config_file, cloud.token_file, cloud.login_file):
        assert f.stat().st_mode & 0o077 == 0, (f, oct(f.stat().st_mode))
    assert case.workdir.stat().st_mode & 0o077 == 0, oct(case.workdir.stat().st_mode)
    assert case.flash.exists()  # inside the private directory
