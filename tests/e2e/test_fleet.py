"""The fleet simulator (bench/fleet.py) at a tiny size against the real components: PostgreSQL,
Mosquitto with the shipped configuration, two worker processes on a shared subscription, the API
process, and 20 virtual cases in two simulator processes. What is checked is its accounting, not
its speed: every request of the steady window answered, every event acknowledged, every app
unlock acknowledged by its case, every case synced again after the broker restart, and the
report's figures present. `make fleet` and `make bench` run it at size."""

from __future__ import annotations

from pathlib import Path

from bench.fleet import FleetConfig, run, summary


def test_fleet_accounting(tmp_path: Path) -> None:
    cfg = FleetConfig(cases=20, workers=2, shards=2, cases_per_store=10, rate=10, events=4, app_rate=2,
                      beat_s=2, warmup_s=1, steady_s=3, reconnect_limit_s=60)
    rep = run(cfg, tmp_path, log=lambda *_: None)

    st = rep["steady"]
    req = st["latency"]["request_reply"]
    assert req["n"] >= 20 and req["unanswered"] == 0 and req["lost_with_connection"] == 0, req
    assert st["latency"]["event_evtack"]["n"] > 0
    assert st["latency"]["app_unlock_http_ack"]["n"] > 0
    assert st["latency"]["app_unlock_http_ack"]["unanswered"] == 0, rep["errors"]["app_unlock_errors"]
    # Every shopper request got the answer its mix calls for.
    assert set(rep["outcomes"]) <= {"token->allow", "token->deny:unknown", "phone->challenge"}, rep["outcomes"]
    assert rep["outcomes"].get("token->allow", 0) > 0
    # Every event journaled was acknowledged (after the reconnect too), none refused by a case.
    assert rep["errors"]["events_unacked"] == 0, rep["errors"]
    assert rep["events_made"] > 0
    assert rep["errors"]["requests_answered_late"] == 0
    # Only what the protocol expects a case to refuse: a `time` answering an earlier hello than its
    # last (replay), an app unlock reaching a case reconnected but not synced yet (no_clock).
    refused = rep["errors"]["rejected_by_cases"]
    assert set(refused) <= {"rejected:replay", "rejected:no_clock"}, refused
    assert rep["counts"]["cmd:unlock"] == rep["counts"]["sent:ack"] >= 1, rep["counts"]
    # Heartbeats every 2 s: more status messages than the greetings and the beats at connect.
    assert rep["counts"]["sent:status"] > 4 * cfg.cases, rep["counts"]
    # The whole fleet reconnected after the broker restart and synced again.
    rc = rep["reconnect"]
    assert rc["cases_resynced"] == cfg.cases and rc["all_synced_after_s"] < cfg.reconnect_limit_s
    assert rep["counts"]["dropped"] == cfg.cases, rep["counts"]
    # Every component's CPU and memory are there, the simulator's own included.
    for part in ("broker", "worker1", "worker2", "api", "postgresql", "simulator"):
        assert st["cpu_s"][part] >= 0 and rep["peak_memory_kib"][part] > 0, part
        assert part in st["cpu_s_per_1000_requests"]
    assert rep["peak_memory_kib"]["postgresql"] > rep["peak_memory_kib"]["broker"]
    # Each worker's counters read from its /metrics: between them, every request answered was decided.
    wm = rep["worker_metrics"]
    assert set(wm) == {"worker1", "worker2"} and all(isinstance(m, dict) for m in wm.values()), wm
    assert sum(m["casecloud_requests_total"] for m in wm.values()) >= req["n"], wm
    assert sum(m["casecloud_batch_size_count"] for m in wm.values()) > 0, wm
    assert [k for k, _ in summary(rep)]
