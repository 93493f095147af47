"""casectl monitor on the running sim case, and status/logs against the real cloud with a real
Mosquitto: from an unprovisioned board to a case that is online, opens, and shows in the logs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from casectl.build import firmware_version
from sim.device import SimDevice
from tests.casectl.conftest import CASECTL, TOKEN, CloudServer, cli, synced_broker
from tests.casectl.holders import wait_holding
from tests.casectl.test_provision import PIN, staff_file


def test_monitor_follows_the_console_and_the_state(deployed: SimDevice) -> None:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    mon = subprocess.Popen([CASECTL, "monitor", deployed.port, "--json", "--until", "forced", "--duration", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # The monitor has the port open (a process start: 0.8 s of sleep was a race on a loaded
    # machine, and the forced event went by before it listened); the firmware keeps running.
    wait_holding(mon, deployed.port)
    ctl = deployed.ctl()
    try:
        ctl.call("door", open=True)  # no grant: forced entry
        out, err = mon.communicate(timeout=20)
    finally:
        ctl.close()
    assert mon.returncode == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    last = lines[-1]
    assert last["event"] == "forced" and last["state"]["lock"] == "forced" and "forced" in last["state"]["alarms"]
    assert err == ""
    # the firmware was never interrupted: it is still serving its control socket
    ctl = deployed.ctl()
    try:
        assert ctl.state()["ready"]
        ctl.call("door", open=False)
    finally:
        ctl.close()
    r = cli("monitor", deployed.port, "--duration", "1")
    assert r.code == 0 and "lock" in r.err


def test_from_board_to_a_case_that_opens_and_reports(deployed: SimDevice, tmp_path: Path, fw_snapshot: Path) -> None:
    with synced_broker(tmp_path / "broker") as hp:
        cloud = CloudServer(tmp_path / "cloud", broker=hp, broker_dir=tmp_path / "broker").start()
        try:
            r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--create-store", "--cloud",
                    cloud.url, "--staff-file", staff_file(tmp_path), "--no-selftest", "--labels", tmp_path / "l")
            assert r.code == 0, r.all
            # No manual step: the cloud gave the broker the case's login, and provision reported
            # success only once the case was online and its greeting answered.
            h = {"Authorization": f"Bearer {TOKEN}"}
            st = cli("status", "--cloud", cloud.url, "--json")
            assert st.code == 0, st.all
            case = st.json()["cases"][0]
            assert case["online"] and case["synced"], case
            deadline = time.monotonic() + 30
            while not case["fw"]:  # from its first heartbeat
                assert time.monotonic() < deadline, f"no heartbeat: {case}"
                time.sleep(0.5)
                case = cli("status", "--cloud", cloud.url, "--json").json()["cases"][0]
            assert case["id"] == "c1" and case["fw"] == firmware_version(fw_snapshot)

            deployed.wait_firmware()
            ctl = deployed.ctl()
            try:
                ctl.keys(f"**{PIN}#")
                ctl.wait_for(lambda s: s["energized"], what="the lock released for the staff PIN")
            finally:
                ctl.close()
            deadline = time.monotonic() + 20
            while True:
                lg = cli("logs", "--case", "c1", "--cloud", cloud.url, "--json")
                assert lg.code == 0, lg.all
                kinds = [e["type"] for e in lg.json()["events"]]
                if "granted" in kinds:
                    break
                assert time.monotonic() < deadline, f"no granted event reached the cloud: {kinds}"
                time.sleep(0.5)
            assert "boot" in kinds
            human = cli("status", "--cloud", cloud.url)
            assert human.code == 0 and "c1" in human.out and "yes" in human.out and "granted" in human.out
            human = cli("logs", "--case", "c1", "--cloud", cloud.url, "--type", "granted")
            assert human.code == 0 and "granted" in human.out and "boot" not in human.out
            assert cli("logs", "--case", "nope", "--cloud", cloud.url).code == 2

            # Re-provisioned: new keys and broker password, and the case is back before success
            # is reported (it used to drop off the broker, 'not authorised', after a reported success).
            r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--cloud", cloud.url, "--force",
                    "--no-selftest", "--labels", tmp_path / "l", "--json")
            assert r.code == 0, r.all
            assert r.json()["rotated"] and r.json()["online"] and r.json()["key_version"] == 2
            relock = httpx.post(f"{cloud.url}/v1/admin/cases/c1/relock", headers=h, timeout=30)
            assert relock.status_code == 200 and relock.json()["ok"], relock.text  # its new key, its new login
        finally:
            cloud.stop()
