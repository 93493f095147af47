"""The Prometheus endpoints, scraped while an API process and a worker process (`python -m
casecloud --no-worker` / `--worker-only`, as in production) serve a case over a real Mosquitto:
every kind of counter the operator watches moves, each process reports its own work, and the
endpoint answers only the scrape token."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from casecloud import metrics
from casecloud.adapters.sms import SmsError
from casecloud.models import Challenge
from casecloud.runtime import build
from casecloud.settings import Settings
from sim.process import free_port
from tests.cloud.conftest import FakeClock
from tests.cloud.fakecase import FakeCase
from tests.cloud.procs import (
    ADMIN_TOKEN,
    casecloud,
    sample,
    scrape,
    service_env,
    wait_sample,
    wait_status,
)
from tests.cloud.test_policy import PHONE, phone
from tests.cloud.test_service_paths import responder


def test_metrics_move_during_an_end_to_end_run(tmp_path: Path, broker: tuple[str, int]) -> None:
    api_port, ops_port, dead_port = free_port(), free_port(), free_port()
    env = service_env(tmp_path / "data", broker, api_port=api_port, ops_port=ops_port, notify_attempts=1,
                      cmd_timeout_s=5)
    api, wrk = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ops_port}"
    with casecloud(tmp_path / "api.log", env, "--no-worker") as api_proc:
        wait_status(api + "/readyz", 200, api_proc, tmp_path / "api.log")
        with casecloud(tmp_path / "worker.log", env, "--worker-only") as wrk_proc:
            wait_status(wrk + "/readyz", 200, wrk_proc, tmp_path / "worker.log")
            # the endpoint is the scraper's alone: no token, a wrong one, an API token all refused
            boot = httpx.post(api + "/v1/bootstrap/hq-user", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                              json={"email": "hq@example.com", "password": "metrics test passphrase",
                                    "token_name": "t"})
            assert boot.status_code == 201, boot.text
            h = {"Authorization": f"Bearer {boot.json()['token']['token']}"}
            for base in (api, wrk):
                assert httpx.get(base + "/metrics").status_code == 401
                assert httpx.get(base + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
                assert httpx.get(base + "/metrics", headers=h).status_code == 401
                assert httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                                 ).status_code == 401
            assert httpx.post(api + "/v1/admin/stores", headers=h, json={
                "id": "s1", "notify_url": f"http://127.0.0.1:{dead_port}/hook"}).status_code == 201
            reg = httpx.post(api + "/v1/admin/cases", headers=h, json={"id": "c1", "store": "s1"}).json()
            member = httpx.post(api + "/v1/admin/members", headers=h, json={"card": "CARD-1"}).json()
            before_w, before_a = scrape(wrk), scrape(api)

            case = FakeCase(*broker, "s1", "c1", bytes.fromhex(reg["key"]))
            stop = threading.Event()
            try:
                case.hello()
                case.send("status", {"t": "beat", "up": 5, "synced": True})
                r, _ = case.send("req", {"t": "phone", "num": PHONE})
                ch = case.expect("rep", re=r["id"])
                assert ch["t"] == "challenge"
                r, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": "000000"})
                assert case.expect("rep", re=r["id"])["t"] == "deny"
                r, _ = case.send("req", {"t": "token", "tok": "not-a-member", "src": "nfc"})
                assert case.expect("rep", re=r["id"])["why"] == "unknown"
                r, _ = case.send("req", {"t": "help"})
                assert case.expect("rep", re=r["id"])["t"] == "ok"
                # a forged message, and a request its case stopped waiting for a minute ago
                case.publish_raw("req", b'{"p":"{}","s":"' + b"0" * 64 + b'"}')
                stale = case.codec.sign(case.topics["req"], {"t": "help"}, now_epoch=case.codec.now() - 60)
                case.publish_raw("req", stale)
                responder(case, stop)
                u = httpx.post(api + "/v1/app/unlock", json={"token": member["app_token"], "case": "c1"}, timeout=10)
                assert u.status_code == 200 and u.json()["ok"] is True, u.text

                w = {"kind": "phone", "outcome": "challenge", "reason": ""}
                wait_sample(wrk, "casecloud_requests_total", sample(before_w, "casecloud_requests_total", **w) + 1, **w)
                wait_sample(wrk, "casecloud_shed_total", 1, reason="expired")
                wait_sample(wrk, "casecloud_webhook_deliveries_total", 1, outcome="failed")
                wait_sample(wrk, "casecloud_open_alerts", 1, kind="help")
                wait_sample(wrk, "casecloud_cases", 1, state="synced")
                after_w, after_a = scrape(wrk), scrape(api)
            finally:
                stop.set()
                case.close()
            wait_status(wrk + "/livez", 200, wrk_proc, tmp_path / "worker.log")

    def moved(after: Any, before: Any, name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # the worker's process: what cases sent, how it was decided, batched and timed
    assert moved(after_w, before_w, "casecloud_requests_total", kind="otp", outcome="deny", reason="bad_code") == 1
    assert moved(after_w, before_w, "casecloud_requests_total", kind="token", outcome="deny", reason="unknown") == 1
    assert moved(after_w, before_w, "casecloud_requests_total", kind="help", outcome="ok", reason="") == 1
    assert moved(after_w, before_w, "casecloud_messages_total", kind="req") >= 6
    assert moved(after_w, before_w, "casecloud_messages_total", kind="status") >= 2
    assert moved(after_w, before_w, "casecloud_messages_total", kind="ack") >= 1
    assert sum(v for (n, _), v in after_w.items() if n == "casecloud_rejected_total") >= 1
    assert moved(after_w, before_w, "casecloud_sms_total", outcome="sent") == 1
    assert moved(after_w, before_w, "casecloud_batch_size_count") >= 8
    assert moved(after_w, before_w, "casecloud_decision_seconds_count") >= 8
    assert moved(after_w, before_w, "casecloud_decision_seconds_sum") > 0
    assert moved(after_w, before_w, "casecloud_finish_seconds_count") >= 2  # the text, the help call
    assert sample(after_w, "casecloud_cases", state="registered") == 1
    assert sample(after_w, "casecloud_cases", state="online") == 1
    assert sample(after_w, "casecloud_open_alerts", kind="forced") == 0
    assert sample(after_w, "casecloud_task_up", task="worker") == 1
    assert sample(after_w, "casecloud_queue_depth") == 0 and sample(after_w, "casecloud_held_messages") == 0
    assert sample(after_w, "process_cpu_seconds_total") > 0  # per process: CPU and memory per component
    # the API's process: its own work only (one endpoint per process, metrics.py)
    assert moved(after_a, before_a, "casecloud_requests_total", kind="app", outcome="allow", reason="") == 1
    assert sample(after_a, "casecloud_requests_total", kind="phone", outcome="challenge", reason="") == 0
    assert sample(after_a, "casecloud_task_up", task="command sender") == 1
    # HTTP by route template and status, in each process
    assert moved(after_a, before_a, "casecloud_http_requests_total", method="POST", route="/v1/app/unlock",
                 status="200") == 1
    assert sample(after_a, "casecloud_http_requests_total", method="GET", route="/metrics", status="401") == 4
    assert sample(after_a, "casecloud_http_requests_total", method="POST", route="/v1/admin/cases",
                  status="201") == 1
    assert moved(after_a, before_a, "casecloud_http_request_seconds_count", route="/v1/app/unlock") == 1
    assert sample(after_w, "casecloud_http_requests_total", method="GET", route="/readyz", status="200") >= 1
    assert not [k for k in after_a if k[0] == "casecloud_http_requests_total" and "c1" in dict(k[1])["route"]]


class BrokenSms:
    def send(self, to_e164: str, text: str) -> None:
        raise SmsError("carrier down")


def test_a_text_that_cannot_be_sent_is_counted(settings: Settings, clock: FakeClock, notifier: Any) -> None:
    rt = build(settings, clock=clock, sms=BrokenSms(), notifier=notifier)
    from casecloud import registry

    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())
    failed = metrics.SMS.labels("failed")._value.get()  # pyright: ignore[reportPrivateUsage]
    assert phone(rt).why == "unavailable"
    assert metrics.SMS.labels("failed")._value.get() == failed + 1  # pyright: ignore[reportPrivateUsage]
    with rt.sessions() as s:
        assert all(ch.done for ch in s.scalars(select(Challenge)))
    rt.engine.dispose()



def test_every_metric_the_operations_guide_names_exists() -> None:
    """docs/operations.md's table and alert rules name only metrics this code exports (a renamed
    metric would leave an alert that never fires)."""
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    exported = {s.name for fam in REGISTRY.collect() if fam.name.startswith("casecloud_") for s in fam.samples}
    exported |= {fam.name for fam in REGISTRY.collect() if fam.name.startswith("casecloud_")}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    named = set(re.findall(r"\bcasecloud_[a-z_]+[a-z]", doc))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    missing = {n for n in named if n not in exported
               and not any(n.endswith(x) and n[: -len(x)] in exported for x in suffixes)}
    assert named and not missing, missing
    defined = {fam.name for fam in REGISTRY.collect() if fam.name.startswith("casecloud_")}
    undocumented = {d for d in defined if not any(n == d or n.startswith(d + "_") for n in named)}
    assert not undocumented, undocumented
