"""The store console's figures (issue 12): screenshots of the main pages at a phone's and a desktop's
width under build/screenshots/, and the time from a forced door on the sim case to its alarm on an
open console page (Chromium, headless), p50/p99 over RUNS runs (the issue's goal: under 1 s).

The same stack as tests/web/test_console_browser.py: a real Mosquitto, the worker, the service
under uvicorn and the firmware on the sim case."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from casecloud import alerts as alerting  # noqa: E402
from casecloud.accounts import users  # noqa: E402
from casecloud.models import Alert  # noqa: E402
from sim.process import SimCase  # noqa: E402
from tests.e2e.conftest import cloud_env  # noqa: E402
from tests.web.test_console_browser import (  # noqa: E402
    ACCOUNTS,
    PW,
    alert_row,
    live,
    new_browser,
    serve,
    sign_in,
    until,
)

RUNS = 20
SHOTS = REPO / "build" / "screenshots"
PAGES = (("store", "associate", "/console/stores/s1"), ("case", "associate", "/console/cases/c1"),
         ("alarms", "associate", "/console/stores/s1/alarms"), ("staff", "manager", "/console/stores/s1/staff"),
         ("members", "manager", "/console/members"), ("hq-cases", "hq", "/console/hq/cases"),
         ("hq-users", "hq", "/console/hq/users"), ("audit", "hq", "/console/audit"))
SIZES = {"phone": (360, 740), "desktop": (1280, 900)}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def figures(runs: int = RUNS) -> dict[str, object]:
    """console_alarm_on_screen_p50_s / _p99_s / _max_s over `runs` forced doors, and how many
    screenshots were saved (console_screenshots, under build/screenshots/)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, cloud_env(Path(tmp), cookie_secure=False) as env:
        rt = env.rt
        with rt.sessions.begin() as s:
            for role, email in ACCOUNTS.items():
                users.create(s, rt.now(), email=email, password=PW, role=role,
                             stores=("s1",) if role != "hq" else (), display_name=role.title())
        with serve(env) as base, SimCase(env.workdir / "case1", env.case_config(), heap="512k") as case:
            saved = 0
            for size, (w, h) in SIZES.items():
                for role in ("associate", "manager", "hq"):
                    b = new_browser(w, h)
                    try:
                        sign_in(b, base, role)
                        for name, who, path in PAGES:
                            if who == role:
                                b.get(base + path)
                                b.save_screenshot(str(SHOTS / f"{name}-{size}.png"))
                                saved += 1
                    finally:
                        b.quit()
            out["console_screenshots"] = saved
            b = new_browser()
            # opened only now: the sim drops a control connection idle for 10 s
            ctl = case.client()
            try:
                ctl.wait_for(lambda st: st["cloud"] and st["cloud"]["synced"], timeout=30, what="cloud link synced")
                sign_in(b, base, "associate")
                live(b)
                times: list[float] = []
                for _ in range(runs):
                    ctl.call("door", open=True)  # no grant: forced
                    t0 = time.monotonic()
                    until(lambda: alert_row(b, "forced"), timeout=10, what="alarm on screen")
                    times.append(time.monotonic() - t0)
                    ctl.call("door", open=False)
                    with rt.sessions.begin() as s:  # so that the next forced door opens a new alert
                        for a in s.scalars(select(Alert).where(Alert.kind == "forced", Alert.state != "resolved")):
                            alerting.resolve(s, a.id, "bench", rt.now())
                    until(lambda: alert_row(b, "forced") is None, timeout=10, what="alarm gone")
                    time.sleep(0.5)
            finally:
                ctl.close()
                b.quit()
            out["console_alarm_on_screen_runs"] = len(times)
            out["console_alarm_on_screen_p50_s"] = round(statistics.median(times), 3)
            out["console_alarm_on_screen_p99_s"] = round(_pct(times, 0.99), 3)
            out["console_alarm_on_screen_max_s"] = round(max(times), 3)
    return out


if __name__ == "__main__":
    for k, v in figures().items():
        print(f"{k}: {v}")
