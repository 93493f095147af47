"""The case's side of an over-the-air update, end to end on the sim (docs/ota.md): the sim case
(the real firmware on the MicroPython Unix port, booting from its flash image through boot.py),
a real Mosquitto and the reference cloud's worker, which sends `cmd fw` and serves the chunks. A
release built and signed as `casectl release build` does (a sim build, Ed25519 with
`cryptography`) goes into the cloud's release store and a rollout to the case; the case
downloads it, switches by itself, comes back as the new version and confirms it. Kills -9 of the
sim process at 10, 40 and 70 % of the download and in the release's trial boot, and a release
that cannot import, are survived: the update completes, or rolls back by itself. The fleet's own rollout test (several cases,
one failing, the rollout halting) is the fleet engineer's."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from casecloud.models import Case
from casecloud.releases import rollout, store
from casectl import release as crel
from sim.process import SimCase
from tests.e2e.conftest import Env, cloud_env

REPO = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = crel.public_hex(KEY)
OTA = {"pace_ms": 20, "boots": 3, "confirm_s": 120}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with cloud_env(tmp_path, cases=("c1",), release_keys=[PUB], rollout_check_every_s=0.5) as e:
        yield e


def _publish(env: Env, r: crel.Release) -> str:
    rel = r.doc["rel"]
    with env.rt.sessions.begin() as s:
        store.create(s, r.manifest, r.sig, [PUB], env.rt.now(), "test")
        for i, (path, _, _) in enumerate(r.doc["files"]):
            store.put_file(s, rel, i, r.files[path])
        rollout.create(s, rel, rollout.Target(case="c1"), env.rt.now(), "test")
    return rel


def _state(env: Env) -> dict[str, Any]:
    with env.rt.sessions.begin() as s:
        from casecloud.models import Rollout

        r = s.query(Rollout).one()
        st: dict[str, Any] = rollout.summary(s, r, cases=True)["cases"][0]
        return st


def _until(pred: Callable[[], bool], timeout: float, what: str, case: SimCase) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout} s; console:\n{case.console()[-3000:]}")
        time.sleep(0.2)


def _fw(env: Env) -> str | None:
    with env.rt.sessions.begin() as s:
        c = s.get(Case, "c1")
        return c.fw if c else None


def test_a_release_rolled_out_to_a_sim_case_switches_and_confirms(env: Env, tmp_path: Path) -> None:
    r = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
    _publish(env, r)
    with SimCase(tmp_path / "case", env.case_config(ota_key=PUB, ota=OTA), heap="512k") as case:
        _until(lambda: _state(env)["state"] == "confirmed", 90, "confirmed release", case)
        assert _fw(env) == "0.2.0"
        assert case.boots == 2  # one reset: the switch
        log = case.console()
        assert "ota: reset to switch firmware" in log and "Traceback" not in log
        # the case runs the release: its own lockcase, from its slot on the flash
        st = case.client().state()
        assert st["cloud"]["synced"], st


def test_a_release_that_cannot_import_rolls_back_by_itself(env: Env, tmp_path: Path) -> None:
    broken = tmp_path / "broken-firmware"
    shutil.copytree(REPO / "firmware", broken, ignore=shutil.ignore_patterns("__pycache__"))
    app = broken / "lockcase" / "app.py"
    app.write_text("raise ImportError('a release that cannot import')\n" + app.read_text())
    r = crel.build("sim", KEY, version="0.2.1", rel="sim-0.2.1", firmware=broken)
    _publish(env, r)
    cfg = env.case_config(ota_key=PUB, ota=dict(OTA, boots=2))
    with SimCase(tmp_path / "case", cfg, heap="512k") as case:
        _until(lambda: _state(env)["state"] == "rolled_back", 90, "rolled back release", case)
        st = _state(env)
        assert "not confirmed in 2 boots" in (st["why"] or ""), st
        assert _fw(env) == "0.1.0"
        # switch, two failed boots of the release, then boot.py goes back: 1 + 1 + 2 + 1 boots
        assert case.boots >= 4, case.boots


def test_kill_9_at_10_40_and_70_percent_of_the_download_resumes_each_time(env: Env, tmp_path: Path) -> None:
    # each kill comes once the cloud has seen the download pass the mark (the case's fw events)
    r = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
    _publish(env, r)
    with SimCase(tmp_path / "case", env.case_config(ota_key=PUB, ota=OTA), heap="512k") as case:
        for n, mark in enumerate((10, 40, 70)):
            _until(lambda m=mark: (_state(env)["pct"] or 0) >= m, 60, f"the download past {mark} %", case)
            st = _state(env)
            assert st["state"] == "downloading" and case.boots == n + 1, st
            assert case.proc is not None
            case.proc.kill()  # kill -9: the supervisor boots it again on the same flash image
            case.wait_ready(30)
        _until(lambda: _state(env)["state"] == "confirmed", 90, "confirmed release", case)
        assert _fw(env) == "0.2.0" and case.boots == 5  # three kills, and the switch


def test_a_kill_9_in_the_trial_boot_costs_one_boot_and_the_release_still_confirms(env: Env, tmp_path: Path) -> None:
    # The trial boot confirms as soon as the cloud greets it, well inside a poll of this test on
    # a quiet machine; so the cloud is made unreachable for it: the switch's reset leaves the case
    # off while the broker goes down, and the trial boot comes up to a cloud it cannot reach.
    r = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
    _publish(env, r)
    with SimCase(tmp_path / "case", env.case_config(ota_key=PUB, ota=OTA), heap="512k") as case:
        _until(lambda: (_state(env)["pct"] or 0) >= 50, 60, "the download past 50 %", case)
        case.hold_next_boot()
        _until(case.held_off, 90, "the switch's reset", case)
        assert "ota: reset to switch firmware" in case.console() and case.boots == 1
        env.stop_broker()
        case.power_on()
        _until(lambda: case.boots == 2 and "cloud: connect failed" in case.console(), 30, "the trial boot", case)
        assert case.running() and "'st': 'confirmed'" not in case.console()
        assert case.proc is not None
        case.proc.kill()  # the release on trial, before it reached the cloud
        env.start_broker()
        _until(lambda: _state(env)["state"] == "confirmed", 90, "confirmed release", case)
        assert _fw(env) == "0.2.0" and case.boots == 3
        # confirmed once, by the last boot: the killed one had not
        log = case.console()
        assert log.count("'st': 'confirmed'") == 1 and log.rfind("'st': 'confirmed'") > log.rfind("READY"), log[-2000:]
