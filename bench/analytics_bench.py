"""Store analytics (issue 14) figures: the full rebuild of the counts from 1,000,000 generated
events on SQLite and on PostgreSQL (tests/cloud/pgserver.py), the incremental fold of one more
day's events, and the time the console's store-week page (/console/stores/{id}/analytics, 7 days)
takes to answer over HTTP from uvicorn, p50/p90 of 30 requests.

The events come from tests/cloud/analytics_gen.py (the generator of the analytics tests): stores
of 8 cases, each case about 100 events a day. Nothing here asserts a time: the figures are printed
and written by bench/run.py.

    .venv/bin/python -m bench.analytics_bench [--events N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from casecloud.analytics.aggregate import fold, rebuild  # noqa: E402
from casecloud.api import create_app  # noqa: E402
from casecloud.models import Event  # noqa: E402
from casecloud.runtime import Runtime, build  # noqa: E402
from casecloud.settings import Settings  # noqa: E402
from sim.process import free_port  # noqa: E402
from tests.cloud.analytics_gen import month_rows  # noqa: E402
from tests.cloud.helpers import Loop, seed_hq, wait_for  # noqa: E402
from tests.cloud.pgserver import PgServer  # noqa: E402

START = 1_790_035_200  # Tuesday 2026-09-22 00:00 UTC
EVENTS_PER_CASE_DAY = 103  # what the generator gives at per_case_day=40 (992,012 over 9,600 case-days)
CASES = 8


def _fill(rt: Runtime, events: int) -> tuple[int, int]:
    """Generated events, stores of CASES cases over enough days; the last day is held back for
    the fold. Returns (events written, days)."""
    stores = max(events // 100_000, 1)
    days = -(-events // (EVENTS_PER_CASE_DAY * CASES * stores)) + 1  # the rebuild's events, and a day to fold
    n = 0
    with rt.sessions.begin() as s:
        for _ in month_rows(s, START, 0, stores=stores, cases=CASES):  # the stores and cases
            pass
    with rt.sessions.begin() as s:
        for g in month_rows(None, START, days, stores=stores, cases=CASES, per_case_day=40):
            rows = [r for r in g.rows if r["received_at"] < START + (days - 1) * 86_400]
            _insert(s, rows)
            n += len(rows)
            _held.append([r for r in g.rows if r["received_at"] >= START + (days - 1) * 86_400])
    return n, days


_COLS = ("store_id", "case_id", "event_id", "source", "kind", "ts", "received_at", "member_id", "phone_last2",
         "data")


def _insert(s: Session, rows: list[dict[str, Any]]) -> None:
    """Events in bulk: PostgreSQL's COPY, SQLite's executemany (the ORM's bulk path is the slow part
    of filling a million rows)."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY events ({', '.join(_COLS)}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row([json.dumps(r[c]) if c == "data" else r[c] for c in _COLS])
        return
    for i in range(0, len(rows), 5000):
        conn.execute(insert(Event), rows[i:i + 5000])


_held: list[list[dict[str, Any]]] = []


def _rebuild_s(rt: Runtime, now: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        with rt.sessions.begin() as s:
            rebuild(s, now, rt.settings.otp_ttl_s)
        out.append(round(time.perf_counter() - t, 2))
    return out


def _fold_day_s(rt: Runtime, now: int) -> tuple[int, float]:
    rows = [r for part in _held for r in part]
    _held.clear()
    with rt.sessions.begin() as s:
        _insert(s, rows)
    t = time.perf_counter()
    with rt.sessions.begin() as s:
        fold(s, now, rt.settings.otp_ttl_s)
    return len(rows), round(time.perf_counter() - t, 2)


@contextlib.contextmanager
def _serve(rt: Runtime) -> Iterator[str]:
    loop = Loop()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=1))
    running = loop.start(server.serve())
    wait_for(lambda: server.started, timeout=15)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            running.result(10)
        loop.close()


def _page_ms(rt: Runtime, runs: int = 30) -> dict[str, float]:
    with _serve(rt) as base, httpx.Client(base_url=base, timeout=60,
                                          headers={"Authorization": "Bearer test-admin-token"}) as c:
        assert c.get("/console/stores/st0/analytics").status_code == 200  # warm
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            r = c.get("/console/stores/st0/analytics")
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        api = []
        for _ in range(10):
            t = time.perf_counter()
            assert c.get("/v1/admin/stores/st0/analytics").status_code == 200
            api.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50": round(statistics.median(times), 1), "p90": round(times[int(0.9 * (len(times) - 1))], 1),
            "max": round(times[-1], 1), "api_p50": round(statistics.median(api), 1)}


class _Clock:
    t = float(START)

    def __call__(self) -> float:
        return self.t


def _one(name: str, rt: Runtime, clock: _Clock, events: int) -> dict[str, Any]:
    seed_hq(rt)
    t = time.perf_counter()
    n, days = _fill(rt, events)
    fill_s = time.perf_counter() - t
    now = START + days * 86_400 + 600
    clock.t = float(now)  # the page shows the last 7 whole days before now
    rebuilt = _rebuild_s(rt, now, 2)
    new, fold_s = _fold_day_s(rt, now)
    with rt.sessions.begin() as s:
        total = s.scalar(select(func.count()).select_from(Event)) or 0
    page = _page_ms(rt)
    return {f"analytics_{name}_rebuild_events": n, f"analytics_{name}_events_after_fold": total,
            f"analytics_{name}_days": days,
            f"analytics_{name}_generate_and_insert_s": round(fill_s, 1),
            f"analytics_{name}_rebuild_s_runs": rebuilt,
            f"analytics_{name}_rebuild_events_per_s": round(n / min(rebuilt)),
            f"analytics_{name}_fold_one_day_events": new, f"analytics_{name}_fold_one_day_s": fold_s,
            **{f"analytics_{name}_store_week_page_ms_{k}": v for k, v in page.items()}}


def figures(events: int = 1_000_000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        clock = _Clock()
        rt = build(Settings(data_dir=Path(d) / "data", admin_token=SecretStr("boot")), clock=clock)
        try:
            out.update(_one("sqlite", rt, clock, events))
        finally:
            rt.engine.dispose()
    with PgServer.start() as pg, tempfile.TemporaryDirectory() as d:
        url = pg.url(pg.create_database())
        clock = _Clock()
        rt = build(Settings(data_dir=Path(d) / "data", admin_token=SecretStr("boot"), database_url=url), clock=clock)
        try:
            out.update(_one("pg", rt, clock, events))
        finally:
            rt.engine.dispose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="store analytics figures (bench/analytics_bench.py)")
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    for k, v in figures(args.events).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
