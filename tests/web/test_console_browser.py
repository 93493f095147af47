"""The store console in a real browser (Debian's Chromium, headless, through Selenium) against the
real service (uvicorn), a real Mosquitto, the worker and the sim case running the firmware:
each role signs in; an associate is refused another store's pages and API; a forced door shows
its alarm on the open page live, on two screens at once, and acknowledging it on one updates
the other; the QR label's page unlocks the case with a trusted member's app token, and remote
relock drops the coil; requests without the CSRF token or for another store are refused.

Chromium and chromedriver come from tools/sysdeps.sh (`make sysdeps`): without them this fails,
it never skips."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select

from casecloud import registry
from casecloud.accounts import users
from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Alert
from sim.process import SimCase, SimClient, free_port
from tests.e2e.conftest import Env, cloud_env, wait_for

PW = "browser tests passphrase"
ACCOUNTS = {"associate": "assoc@example.com", "manager": "mgr@example.com", "hq": "hq@example.com"}
LIVE_S = 5.0  # the issue asks for under a second; this leaves room for a loaded CI machine


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not browser or not driver:
        pytest.fail("Chromium and chromedriver are required for the console's browser tests: run "
                    "`make sysdeps` (apt-get install chromium chromium-driver)", pytrace=False)
    return browser, driver


def new_browser(width: int = 1280, height: int = 900) -> WebDriver:
    browser, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    try:
        b = webdriver.Chrome(options=opts, service=Service(driver))
    except WebDriverException as e:
        pytest.fail(f"Chromium did not start: {e.msg}", pytrace=False)
    if width < 500:  # below a window's least width: a phone's screen, emulated
        b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    return b


@contextlib.contextmanager
def serve(env: Env) -> Iterator[str]:
    """The real service (API and console) on a free port, beside env's worker."""
    port = free_port()
    env.rt.settings.cmd_timeout_s = 4
    server = uvicorn.Server(uvicorn.Config(create_app(env.rt, Commander(env.rt)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    running = env.loop.start(server.serve())
    wait_for(lambda: server.started, timeout=10)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(base + "/healthz").status_code == 200, timeout=15)
    try:
        yield base
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            running.result(10)  # stopped before cloud_env closes its loop


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """cloud_env (Mosquitto, worker; store s1 with c1 and c2), the service, store s2 with case c9,
    one user per role (associate and manager of s1), a trusted member, and the sim case c1."""
    workdir = tmp_path_factory.mktemp("console-browser")
    with cloud_env(workdir, cookie_secure=False) as env:
        rt = env.rt
        with rt.sessions.begin() as s:
            registry.create_store(s, "s2", rt.now(), name="Other St")
            registry.register_case(s, "s2", "c9", rt.now(), name="Elsewhere")
            for role, email in ACCOUNTS.items():
                users.create(s, rt.now(), email=email, password=PW, role=role,
                             stores=("s1",) if role != "hq" else (), display_name=role.title())
            _, member_token = registry.create_member(s, rt.hasher, rt.now(), status="trusted")
        with serve(env) as base, SimCase(env.workdir / "case1", env.case_config(unlock_ms=8000),
                                         heap="512k") as case:
            with contextlib.closing(case.client()) as ctl:
                ctl.wait_for(lambda st: st["cloud"] and st["cloud"]["synced"], timeout=30, what="cloud link synced")
            yield {"env": env, "base": base, "case": case, "member_token": member_token}


@pytest.fixture
def ctl(stack: dict[str, Any]) -> Iterator[SimClient]:
    """A control connection of the test's own: an idle one is dropped after its 10 s timeout."""
    with contextlib.closing(stack["case"].client()) as c:
        yield c


@pytest.fixture(scope="module")
def browsers() -> Iterator[list[WebDriver]]:
    opened: list[WebDriver] = []
    yield opened
    for b in opened:
        with contextlib.suppress(Exception):
            b.quit()


def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(WebDriverException):
            got = cond()
            if got:
                return got
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not in {timeout} s")
        time.sleep(0.05)


def sign_in(b: WebDriver, base: str, role: str, nxt: str = "/console") -> None:
    b.get(f"{base}/console/login?next={nxt}")
    b.find_element(By.ID, "email").send_keys(ACCOUNTS[role])
    b.find_element(By.ID, "password").send_keys(PW)
    b.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(lambda: "/console/login" not in b.current_url, what=f"{role} signed in")


def sign_out(b: WebDriver) -> None:
    b.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
    until(lambda: "/console/login" in b.current_url, what="signed out")


def fetch(b: WebDriver, path: str, method: str = "GET", csrf: bool = False) -> int:
    """The status of a request made by the page's own JavaScript (its cookie, its origin)."""
    return int(b.execute_async_script("""
        const [path, method, csrf, done] = arguments;
        const headers = {};
        if (csrf) { headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content; }
        fetch(path, {method, headers, credentials: "same-origin", redirect: "manual"})
            .then(r => done(r.status), () => done(-1));
    """, path, method, csrf))


def live(b: WebDriver) -> None:
    until(lambda: b.find_element(By.TAG_NAME, "body").get_attribute("data-live-state") == "open",
          what="live stream open")


def alert_row(b: WebDriver, kind: str) -> Any:
    for li in b.find_elements(By.CSS_SELECTOR, "#alarms li.alert"):
        if kind in li.text:
            return li
    return None


def test_each_role_signs_in_and_out(stack: dict[str, Any], browsers: list[WebDriver]) -> None:
    b = new_browser()
    browsers.append(b)
    base = stack["base"]
    sign_in(b, base, "associate")
    assert b.current_url.endswith("/console/stores/s1") and "Main St" in b.find_element(By.TAG_NAME, "h1").text
    assert b.find_elements(By.LINK_TEXT, "Members") == []  # not an associate's
    sign_out(b)
    sign_in(b, base, "manager", "/console/stores/s1/staff")
    assert "Staff credentials" in b.find_element(By.TAG_NAME, "h1").text
    sign_out(b)
    sign_in(b, base, "hq")
    assert b.find_element(By.TAG_NAME, "h1").text == "Your stores"
    b.find_element(By.LINK_TEXT, "Users").click()
    until(lambda: "Users and roles" in b.find_element(By.TAG_NAME, "h1").text, what="users page")
    sign_out(b)
    # a wrong password: the login page says so
    b.get(f"{base}/console/login")
    b.find_element(By.ID, "email").send_keys(ACCOUNTS["associate"])
    b.find_element(By.ID, "password").send_keys("not the password at all")
    b.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(lambda: b.find_element(By.ID, "login-error"), what="login error shown")


def test_associate_is_refused_another_store_and_csrf_less_requests(stack: dict[str, Any],
                                                                   browsers: list[WebDriver]) -> None:
    b = new_browser(360, 740)  # a phone
    browsers.append(b)
    base = stack["base"]
    sign_in(b, base, "associate")
    b.get(f"{base}/console/stores/s2")
    assert b.find_element(By.TAG_NAME, "h1").text == "Not found"
    b.get(f"{base}/console/stores/s1")
    assert fetch(b, "/v1/admin/cases/c9") == 404  # the API too
    assert fetch(b, "/v1/admin/cases?store=s2") == 200
    assert fetch(b, "/console/cases/c1/relock", "POST") == 403  # no CSRF token
    assert fetch(b, "/v1/admin/cases/c1/relock", "POST") == 403
    assert fetch(b, "/console/cases/c9/relock", "POST", csrf=True) == 404  # another store's case
    assert fetch(b, "/console/hq/users") == 403
    # nothing overflows a 360-px screen sideways
    assert b.execute_script("return document.documentElement.scrollWidth") <= 360


def test_forced_door_shows_live_on_two_screens_and_ack_updates_both(stack: dict[str, Any], ctl: SimClient,
                                                                   browsers: list[WebDriver]) -> None:
    base = stack["base"]
    assoc, mgr = new_browser(360, 740), new_browser()
    browsers += [assoc, mgr]
    sign_in(assoc, base, "associate")
    sign_in(mgr, base, "manager", "/console/stores/s1/alarms")
    live(assoc)
    live(mgr)
    assert alert_row(assoc, "forced") is None
    ctl.call("door", open=True)  # no grant: forced
    t0 = time.monotonic()
    until(lambda: alert_row(assoc, "forced"), timeout=LIVE_S, what="forced alarm on the associate's page")
    shown = time.monotonic() - t0
    until(lambda: alert_row(mgr, "forced"), timeout=LIVE_S, what="forced alarm on the manager's page")
    assert "open" in alert_row(mgr, "forced").text
    ctl.call("door", open=False)
    print(f"forced door to alarm on screen: {shown:.3f} s")
    # acknowledged on the phone: the desktop's row changes without a reload
    alert_row(assoc, "forced").find_element(By.XPATH, ".//button[normalize-space()='Acknowledge']").click()
    until(lambda: "acknowledged by Associate" in alert_row(mgr, "forced").text, timeout=LIVE_S,
          what="acknowledgement on the other screen")
    with stack["env"].rt.sessions() as s:
        a = s.scalars(select(Alert).where(Alert.case_id == "c1", Alert.kind == "forced")).one()
        assert a.state == "acknowledged" and a.acked_by == "Associate"
    # resolved on the desktop: gone from the phone
    alert_row(mgr, "forced").find_element(By.XPATH, ".//button[normalize-space()='Resolve']").click()
    until(lambda: alert_row(assoc, "forced") is None, timeout=LIVE_S, what="resolved alarm gone")


def test_qr_page_unlocks_the_case_and_relock_drops_the_coil(stack: dict[str, Any], ctl: SimClient,
                                                            browsers: list[WebDriver]) -> None:
    base = stack["base"]
    phone = new_browser(360, 740)
    browsers.append(phone)
    phone.get(f"{base}/app/unlock?case=c1")  # the QR label's link (casectl/label.py)
    phone.find_element(By.ID, "token").send_keys(stack["member_token"])
    phone.find_element(By.ID, "unlock").click()
    result = until(lambda: phone.find_element(By.ID, "unlock-result"), timeout=15, what="unlock result")
    assert "Unlocked" in result.text, result.text
    assert ctl.state()["energized"]
    staff = new_browser()
    browsers.append(staff)
    sign_in(staff, base, "associate", "/console/cases/c1")
    staff.find_element(By.ID, "relock").click()
    until(lambda: "The case relocked." in staff.find_element(By.CSS_SELECTOR, ".note").text, timeout=15,
          what="relock result")
    ctl.wait_for(lambda st: not st["energized"], timeout=5, what="coil off after relock")
    # a wrong token: the page says so and nothing opens
    phone.get(f"{base}/app/unlock?case=c1")
    phone.find_element(By.ID, "token").send_keys("lct_not_a_member_token")
    phone.find_element(By.ID, "unlock").click()
    result = until(lambda: phone.find_element(By.ID, "unlock-result"), timeout=15, what="refusal")
    assert "Not unlocked" in result.text
    assert not ctl.state()["energized"]
