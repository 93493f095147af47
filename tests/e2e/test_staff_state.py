"""The issue's scenario end to end: a staff PIN revoked while its case is offline no longer opens
the case once it is back. The real firmware on the sim case, the worker, the API with its command
sender, and Mosquitto: the API answers the revocation with the cases still pending (not with a
count of publishes), shows the case pending until it reports the new version applied (its
greeting after the reconnect brings it the state first), then applied == desired."""

from __future__ import annotations

import contextlib
import queue
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Case
from lockcase import creds
from tests.cloud.helpers import seed_hq
from tests.e2e.conftest import Env, SimCase, broker_files_ctx, cloud_env, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer t0ken"}
PIN = "7315"


@contextlib.contextmanager
def admin_api(env: Env) -> Iterator[TestClient]:
    seed_hq(env.rt, "t0ken")  # an hq API token (the settings' admin token only bootstraps)
    app = create_app(env.rt, Commander(env.rt))
    with TestClient(app) as api:
        wait_for(lambda: api.get("/healthz").json()["broker"], timeout=20)
        yield api


def opens(ctl: Any, pin: str) -> bool:
    """Types a staff PIN; True when the coil is energized, False when the PIN is denied. Read from
    what the case streams (watch), not by polling its state: the coil is on for 1.5 s and
    "Wrong PIN" shows for 3 s, and a loaded machine's poll could miss either."""
    while not ctl.stream.empty():  # ctl watches (the test called watch once)
        ctl.stream.get_nowait()
    ctl.keys(f"**{pin}#")
    deadline = time.monotonic() + 30
    while True:
        try:
            m = ctl.stream.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"the PIN {pin} was neither granted nor denied") from None
        if m.get("ev") == "out" and m.get("name") == "lock" and m.get("value"):
            ctl.wait_for(lambda s: not s["energized"] and s["lock"] == "locked", timeout=10, what="relocked")
            return True
        if m.get("ev") == "event" and m.get("type") == "denied":
            return False


def case_view(api: TestClient) -> dict[str, Any]:
    return api.get("/v1/admin/cases/c1", headers=H).json()


def test_a_pin_revoked_while_the_case_is_offline_no_longer_opens_it(tmp_path: Path) -> None:
    with cloud_env(tmp_path, ("c1",)) as env, admin_api(env) as api:
        cfg = env.case_config()
        staff = cfg["staff"]
        pin_hash = creds.hash_pin(PIN, staff["salt"], staff["iter"])
        with SimCase(tmp_path / "case1", cfg, heap="512k") as case:
            ctl = case.client()
            ctl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="synced")
            ctl.call("watch")  # opens() reads what the case streams
            added = api.post("/v1/admin/stores/s1/staff", json={"kind": "pin", "hash": pin_hash}, headers=H)
            assert added.status_code == 201 and "pushed_to" not in added.json()
            wait_for(lambda: not case_view(api)["pending"], timeout=20)
            assert case_view(api)["applied_v"] == case_view(api)["desired_v"] == 1
            assert opens(ctl, PIN)

            # the case loses the cloud (its broker goes away) and the PIN is revoked meanwhile
            env.broker_ctx.__exit__(None, None, None)
            ctl.wait_for(lambda s: not s["cloud"]["up"], timeout=20, what="link down")
            gone = api.delete(f"/v1/admin/staff/{added.json()['id']}", headers=H)
            assert gone.status_code == 200 and gone.json()["pending"] == ["c1"]
            view = case_view(api)
            assert (view["desired_v"], view["applied_v"], view["pending"]) == (2, 1, True)
            assert [c["id"] for c in api.get("/v1/admin/stores/s1/pending", headers=H).json()] == ["c1"]
            assert opens(ctl, PIN)  # offline it still has the old set: staff must open offline

            # back: its greeting gets the state first; it applies it and reports the version
            env.broker_ctx = broker_files_ctx(env.workdir, env.secrets, port=env.port)
            env.broker_ctx.__enter__()
            wait_for(lambda: not case_view(api)["pending"], timeout=60)
            view = case_view(api)
            assert view["applied_v"] == view["desired_v"] == 2
            assert api.get("/v1/admin/stores/s1/pending", headers=H).json() == []
            ctl.wait_for(lambda s: s["lock"] == "locked" and not s["display"][0].startswith("Wrong"), timeout=15,
                         what="idle")
            assert not opens(ctl, PIN)
            ctl.close()


def test_config_is_answered_by_the_case_and_a_refused_one_is_taken_back(tmp_path: Path) -> None:
    with cloud_env(tmp_path, ("c1",)) as env, admin_api(env) as api:
        cfg = env.case_config()
        with SimCase(tmp_path / "case1", cfg, heap="512k") as case:
            ctl = case.client()
            ctl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="synced")
            good = api.post("/v1/admin/cases/c1/config", json={"set": {"held_open_s": 45}}, headers=H).json()
            assert good["ok"] is True and good["err"] is None
            wait_for(lambda: not case_view(api)["pending"], timeout=20)
            assert case_view(api)["applied_v"] == 1
            # pull_in_ms above the case's unlock_ms (1500): only the case's validator knows
            bad = api.post("/v1/admin/cases/c1/config", json={"set": {"pull_in_ms": 1800}}, headers=H).json()
            assert bad["ok"] is False and "pull_in_ms" in bad["err"]
            # the cloud took the override back in a new version, which the case applied
            wait_for(lambda: case_view(api)["applied_v"] == 3 and not case_view(api)["pending"], timeout=20)
            with env.rt.sessions() as s:
                c = s.get(Case, "c1")
                assert c is not None and c.config_set == {"held_open_s": 45} == c.config_applied
            ctl.close()
