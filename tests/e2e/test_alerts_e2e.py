"""Alarms of the real firmware (the sim case under MicroPython) reach the store: through Mosquitto
and the worker, a forced door and an opened enclosure become alerts, and the door shows open before
the case's next heartbeat (a minute away)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from casecloud.models import Alert, Case
from sim.process import SimCase, SimClient
from tests.e2e.conftest import Env, broker_files_ctx, cloud_env, wait_for


def _alerts(env: Env) -> dict[str, tuple[str, str]]:
    with env.rt.sessions() as s:
        return {a.kind: (a.severity, a.state) for a in s.scalars(select(Alert).where(Alert.case_id == "c1"))}


def _status(env: Env) -> dict[str, Any]:
    with env.rt.sessions() as s:
        c = s.get(Case, "c1")
        return dict(c.last_status or {}) if c else {}


def test_forced_door_and_tamper_reach_the_store(env: Env, case: SimCase, ctl: SimClient) -> None:
    ctl.call("door", open=True)  # no grant: forced
    wait_for(lambda: _alerts(env).get("forced") == ("critical", "open"), timeout=30)
    wait_for(lambda: _status(env).get("door") == "open" and "forced" in _status(env).get("alarms", []), timeout=30)
    ctl.call("door", open=False)
    wait_for(lambda: _status(env).get("door") == "closed" and "alarms" not in _status(env), timeout=30)
    assert _alerts(env)["forced"] == ("critical", "open")  # staff resolve a forced entry
    ctl.call("tamper", on=True)
    wait_for(lambda: _alerts(env).get("tamper") == ("critical", "open"), timeout=30)
    wait_for(lambda: "tamper" in _status(env).get("alarms", []), timeout=30)


def test_help_pressed_offline_arrives_late(tmp_path: Path) -> None:
    with cloud_env(tmp_path, help_late_s=1) as env, SimCase(env.workdir / "case1", env.case_config(),
                                                            heap="512k") as case:
        ctl = case.client()
        ctl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="cloud link synced")
        env.broker_ctx.__exit__(None, None, None)  # the broker goes away
        ctl.wait_for(lambda s: not s["cloud"]["up"], timeout=20, what="link down")
        ctl.keys("#")  # journaled only: the case cannot reach the cloud
        time.sleep(2)  # longer than help_late_s
        env.broker_ctx = broker_files_ctx(env.workdir, env.secrets, port=env.port)
        env.broker_ctx.__enter__()

        def late_help() -> bool:
            with env.rt.sessions() as s:
                a = s.scalars(select(Alert).where(Alert.case_id == "c1", Alert.kind == "help")).first()
                return a is not None and a.late and a.state == "open"

        wait_for(late_help, timeout=90)
        ctl.close()
