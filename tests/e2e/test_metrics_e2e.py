"""The worker's metrics while the real firmware (the sim case under MicroPython) runs against
Mosquitto and the worker: a phone number and its code typed on the keypad, the door forced;
scraped over HTTP with the scrape token (the ops app a --worker-only process serves), the counters
of what happened move (test_metrics.py does the same with the processes as an operator runs them)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from casecloud.api.ops import ops_app
from casecloud.jobs import read_gauges
from casecloud.models import SmsOutbox
from casecloud.supervise import Supervised
from sim.process import SimClient
from tests.e2e.conftest import Env, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, token: str) -> Samples:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_firmwares_traffic_moves_the_workers_metrics(env: Env, ctl: SimClient) -> None:
    sup = Supervised("worker", env.worker.run, link=env.worker.connected)
    sup.supervising = sup.running = True  # env runs the worker itself; this reports it
    with TestClient(ops_app(env.rt, [sup])) as client:
        token = env.rt.settings.metrics_bearer()
        assert client.get("/metrics").status_code == 401
        before = scrape(client, token)

        ctl.keys("2025550143#")
        ctl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
        with env.rt.sessions() as s:
            row = s.scalars(select(SmsOutbox).order_by(SmsOutbox.id.desc())).first()
            assert row is not None
            m = re.search(r"\b(\d{6})\b", row.body)
            assert m
        ctl.keys(m.group(1))
        ctl.wait_for(lambda s: s["energized"], what="coil energized")
        ctl.wait_for(lambda s: not s["energized"], timeout=10, what="coil off")
        ctl.call("door", open=True)  # without a grant now: forced
        wait_for(lambda: value(scrape(client, token), "casecloud_messages_total", kind="evt")
                 > value(before, "casecloud_messages_total", kind="evt"), timeout=30)

        def forced_alert_open() -> bool:
            read_gauges(env.rt.sessions)  # what the gauge job reads every metrics_every_s, now
            return value(scrape(client, token), "casecloud_open_alerts", kind="forced") == 1

        wait_for(forced_alert_open, timeout=30)
        after = scrape(client, token)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("casecloud_requests_total", kind="phone", outcome="challenge", reason="") == 1
    assert moved("casecloud_requests_total", kind="otp", outcome="allow", reason="") == 1
    assert moved("casecloud_sms_total", outcome="sent") == 1
    assert moved("casecloud_messages_total", kind="req") >= 2
    assert moved("casecloud_batch_size_count") >= 3 and moved("casecloud_decision_seconds_count") >= 3
    assert value(after, "casecloud_cases", state="online") >= 1 and value(after, "casecloud_cases", state="synced") >= 1
    assert value(after, "casecloud_task_up", task="worker") == 1
