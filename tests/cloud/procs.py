"""`python -m casecloud` as real processes, the way an operator runs them (the API, a worker), for
the tests of what the operator runs on: metrics, logs, liveness and readiness."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cloud.helpers import stop, wait_for

METRICS_TOKEN = "scrape-token-for-tests"
ADMIN_TOKEN = "bootstrap-token-for-tests"


def service_env(data_dir: Path, broker: tuple[str, int], **settings: object) -> dict[str, str]:
    env = dict(os.environ, CASECLOUD_DATA_DIR=str(data_dir), CASECLOUD_MQTT_HOST=broker[0],
               CASECLOUD_MQTT_PORT=str(broker[1]), CASECLOUD_ADMIN_TOKEN=ADMIN_TOKEN,
               CASECLOUD_METRICS_TOKEN=METRICS_TOKEN, CASECLOUD_METRICS_EVERY_S="0.3",
               CASECLOUD_COOKIE_SECURE="false")
    env.update({f"CASECLOUD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def casecloud(log: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """One `python -m casecloud` process, its output (JSON lines) in `log`; terminated after."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "casecloud", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop(proc, 10)


def get(url: str, **kw: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def wait_status(url: str, code: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> httpx.Response:
    """Until GET url answers `code` (the process must stay up meanwhile)."""
    end = time.monotonic() + timeout
    while True:
        r = get(url)
        if r is not None and r.status_code == code:
            return r
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < end, f"{url}: {r.status_code if r else 'no answer'} {r.text if r else ''}"
        time.sleep(0.1)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one process's /metrics: (name, sorted labels) -> value."""
    r = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
    assert r.status_code == 200, r.text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """A sample's value, 0 when the process has not counted it yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_sample(base: str, name: str, at_least: float, **labels: str) -> float:
    got: list[float] = []

    def reached() -> bool:
        got.append(sample(scrape(base), name, **labels))
        return got[-1] >= at_least

    try:
        wait_for(reached, 15)
    except AssertionError:
        raise AssertionError(f"{name}{labels} stayed at {got[-1] if got else None}, expected >= {at_least}") from None
    return got[-1]
