"""A rollout end to end (docs/ota.md, "Releases and rollouts"): three sim cases (the real firmware
on the MicroPython Unix port) on a real Mosquitto with the cloud's ACL, the cloud's worker, its
periodic rollout step and its admin API (with the command sender). A release is built and signed
as `casectl release build` does, published through casectl's own client over the API, and rolled
out to the store. One case is made to fail: the release it switches to cannot reach the cloud
(its only route to the broker is cut while it runs the release), so it rolls back by itself; the
other two confirm, and the rollout halts itself, its failure share over the limit."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Case
from casecloud.releases.jobs import rollout_loop
from casectl import release as crel
from casectl import release_cloud
from casectl.cloudapi import Cloud
from sim.process import SimCase
from tests.cloud.helpers import seed_hq, wait_for
from tests.e2e.conftest import Env, cloud_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.generate()
PUB = crel.public_hex(KEY)
TOKEN = "ota-rollout-e2e-hq-token"
CASES = ("c1", "c2", "c3")
OTA = {"pace_ms": 20, "boots": 3, "confirm_s": 60}  # 60 s: the shortest confirm window a case takes


class Route(threading.Thread):
    """One case's TCP route to the broker, which the test can cut: while `cut()` says so, every
    connection is closed as soon as it is made (the case's link sees the broker go away)."""

    def __init__(self, target: tuple[str, int], cut: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.target, self.cut = target, cut
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        self._stop = False

    def run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.cut():
                self.refused += 1
                conn.close()
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with cloud_env(tmp_path, cases=CASES, release_keys=[PUB], rollout_check_every_s=0.5) as e:
        e.loop.start(rollout_loop(e.rt))  # the worker side's periodic step (tasks.py runs it likewise)
        yield e


def _rollout(env: Env, api: TestClient, rid: str) -> dict[str, Any]:
    r = api.get(f"/v1/admin/rollouts/{rid}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _until(pred: Callable[[], bool], timeout: float, what: str, cases: dict[str, SimCase]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {c}:\n{sc.console()[-2000:]}" for c, sc in cases.items())
            raise AssertionError(f"no {what} in {timeout} s\n{logs}")
        time.sleep(0.25)


def test_a_rollout_to_three_sim_cases_halts_when_one_fails(env: Env, tmp_path: Path) -> None:
    seed_hq(env.rt, TOKEN)
    release = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
    sims: dict[str, SimCase] = {}
    failing: dict[str, SimCase] = {}
    # c3 reaches the broker only through a route that is cut while it runs the release on trial
    # (its second boot: the first runs the firmware it came with, the third the one it goes back to)
    route = Route((env.host, env.port), lambda: "c3" in failing and failing["c3"].boots == 2)
    route.start()
    sender = Commander(env.rt)
    with TestClient(create_app(env.rt, sender)) as api, contextlib.ExitStack() as stack:
        cloud = Cloud("http://testserver", TOKEN)
        cloud._client = api  # casectl's own release client, over the real API app
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        got = release_cloud.publish(cloud, release)
        assert got["ready"] is True and got["key"] == PUB
        for c in CASES:
            cfg = env.case_config(c, ota_key=PUB, ota=OTA)
            if c == "c3":
                cfg["cloud"]["port"] = route.port
            sims[c] = stack.enter_context(SimCase(tmp_path / c, cfg, heap="512k"))
        failing["c3"] = sims["c3"]
        for c in CASES:
            ctl = sims[c].client()
            ctl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=30, what=f"{c} synced")
            ctl.close()
        wait_for(sender.connected.is_set)  # the API's command sender is on the broker: it tells them at once
        ro = release_cloud.rollout(cloud, {"release": "sim-0.2.0", "store": "s1", "waves": [100],
                                           "max_fail_pct": 20})
        rid = ro["id"]
        assert ro["total"] == 3 and ro["sent"] == 3  # all online: told at once by the API

        def state(c: str) -> str:
            return next(x["state"] for x in _rollout(env, api, rid)["cases"] if x["case"] == c)

        _until(lambda: state("c1") == "confirmed" and state("c2") == "confirmed", 240, "c1 and c2 confirmed", sims)
        with env.rt.sessions() as s:
            assert {c: s.get(Case, c).fw for c in ("c1", "c2")} == {"c1": "0.2.0", "c2": "0.2.0"}  # type: ignore[union-attr]
        assert _rollout(env, api, rid)["state"] == "active"  # c3 has not confirmed nor failed yet
        _until(lambda: _rollout(env, api, rid)["state"] == "halted", 240, "the rollout halted", sims)
        r = _rollout(env, api, rid)
        c3 = next(x for x in r["cases"] if x["case"] == "c3")
        assert c3["state"] == "rolled_back" and c3["why"], c3
        assert "1 of 3" in r["halt_reason"] and r["counts"] == {"confirmed": 2, "rolled_back": 1}, r
        assert route.refused > 0 and sims["c3"].boots >= 3
        with env.rt.sessions() as s:
            assert s.get(Case, "c3").fw == "0.1.0"  # type: ignore[union-attr]  # back on what it ran
    route.close()
