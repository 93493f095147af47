"""The analytics pages in a real browser (Debian's Chromium, headless, through Selenium) against the
real service (uvicorn) on a generated fortnight of events folded by the worker's analytics job:
a store manager's week at a glance (its charts drawn, small counts hidden, the CSV link answered,
no sideways scrolling on a 360 px phone), the fleet page for hq only, another store's page
refused. Chromium and chromedriver come from `make sysdeps`: without them this fails, it never
skips."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import insert

from casecloud.accounts import users
from casecloud.analytics.job import fold_once
from casecloud.api import create_app
from casecloud.models import Event
from casecloud.runtime import build
from casecloud.settings import Settings
from sim.process import free_port
from tests.cloud.analytics_gen import month_rows
from tests.cloud.helpers import Loop, wait_for
from tests.web.test_console_browser import fetch, new_browser, until

PW = "analytics browser passphrase"
START = 1_790_035_200  # Tuesday 2026-09-22 00:00 UTC
NOW = START + 14 * 86_400 + 3600


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = Path(tmp_path_factory.mktemp("analytics-browser")) / "data"
    rt = build(Settings(data_dir=data, admin_token=SecretStr("boot"), cookie_secure=False), clock=lambda: float(NOW))
    with rt.sessions.begin() as s:
        for g in month_rows(s, START, 14, stores=2, cases=3, per_case_day=40):
            s.execute(insert(Event), g.rows)
        users.create(s, NOW, email="mgr@example.com", password=PW, role="manager", stores=("st0",),
                     display_name="Manager")
        users.create(s, NOW, email="hq@example.com", password=PW, role="hq", stores=(), display_name="HQ")
    fold_once(rt)
    loop = Loop()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=1))
    running = loop.start(server.serve())
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.started, timeout=10)
    wait_for(lambda: httpx.get(url + "/healthz").status_code in (200, 503), timeout=15)
    try:
        yield url
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            running.result(10)
        loop.close()
        rt.engine.dispose()


@pytest.fixture(scope="module")
def browsers() -> Iterator[list[WebDriver]]:
    opened: list[WebDriver] = []
    yield opened
    for b in opened:
        with contextlib.suppress(Exception):
            b.quit()


def sign_in(b: WebDriver, base: str, email: str, nxt: str) -> None:
    b.get(f"{base}/console/login?next={nxt}")
    b.find_element(By.ID, "email").send_keys(email)
    b.find_element(By.ID, "password").send_keys(PW)
    b.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(lambda: "/console/login" not in b.current_url, what=f"{email} signed in")


def test_a_manager_sees_the_store_week_at_a_glance(base: str, browsers: list[WebDriver]) -> None:
    b = new_browser()
    browsers.append(b)
    sign_in(b, base, "mgr@example.com", "/console/stores/st0/analytics")
    until(lambda: b.find_element(By.TAG_NAME, "h1").text.startswith("Analytics of"), what="analytics page")
    tiles: dict[str, Any] = dict(zip([e.text for e in b.find_elements(By.CSS_SELECTOR, "#tiles dt")],
                                     [e.text for e in b.find_elements(By.CSS_SELECTOR, "#tiles dd")], strict=True))
    assert tiles["Shoppers served"].removeprefix("≥ ").isdigit() and int(tiles["Shoppers served"].strip("≥ ")) > 100
    # the stacked chart: a group a day, drawn with a height, each segment titled with its figure
    days = b.find_elements(By.CSS_SELECTOR, "svg g.day")
    assert len(days) == 7
    seg = b.find_element(By.CSS_SELECTOR, "svg g.day rect")
    assert seg.size["height"] > 0 and "by Phone" in (seg.find_element(By.TAG_NAME, "title").get_attribute(
        "textContent") or "")
    cells = [td.text for td in b.find_elements(By.CSS_SELECTOR, "#daily td")]
    assert "< 5" in cells and all(c == "< 5" or c.strip("≥ ").isdigit() for c in cells)
    assert all(not c.isdigit() or c == "0" or int(c) >= 5 for c in cells)
    ranked = [int(td.text.strip("≥ ")) for td in b.find_elements(By.CSS_SELECTOR, "#ranking td:nth-of-type(1)")]
    assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)  # most abandoned flows first
    csv_link = b.find_element(By.LINK_TEXT, "Download as CSV").get_attribute("href") or ""
    assert csv_link.endswith("/v1/admin/stores/st0/analytics.csv?days=7")
    assert fetch(b, "/v1/admin/stores/st0/analytics.csv?days=7") == 200
    assert fetch(b, "/v1/admin/stores/st1/analytics.csv?days=7") == 404  # another store's: as if none
    assert fetch(b, "/console/analytics") == 403  # the fleet is hq's
    b.get(f"{base}/console/stores/st1/analytics")
    assert "404" in b.title or "no store st1" in b.page_source


def test_the_page_fits_a_phone(base: str, browsers: list[WebDriver]) -> None:
    b = new_browser(360, 740)
    browsers.append(b)
    sign_in(b, base, "mgr@example.com", "/console/stores/st0/analytics")
    until(lambda: b.find_elements(By.CSS_SELECTOR, "svg g.day"), what="chart drawn")
    overflow = b.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{overflow} px of sideways scrolling at 360 px"


def test_hq_sees_the_fleet(base: str, browsers: list[WebDriver]) -> None:
    b = new_browser()
    browsers.append(b)
    sign_in(b, base, "hq@example.com", "/console/analytics?days=14")
    until(lambda: b.find_element(By.TAG_NAME, "h1").text == "Fleet analytics", what="fleet page")
    rows = b.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == ["Store 0", "Store 1"]
    assert len(b.find_elements(By.CSS_SELECTOR, "svg rect.bar")) == 2
    assert {li.text.split(":")[0] for li in b.find_elements(By.CSS_SELECTOR, "#firmware li")} == {"1.4.2", "1.5.0"}
    rows[0].find_element(By.TAG_NAME, "a").click()
    until(lambda: "/console/stores/st0/analytics" in b.current_url, what="the store's page")
