"""casectl monitor on the running sim case, and status/logs against the real cloud with a real
Mosquitto: from an unprovisioned board to a case that is online, opens, and shows in the logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from casecloud import broker as brokerfiles
from casectl.build import firmware_version
from casectl.simdevice import SimDevice
from tests.casectl.conftest import CASECTL, SERVICE_PASSWORD, SERVICE_USER, TOKEN, CloudServer, cli
from tests.casectl.test_provision import PIN, staff_file
from tests.cloud.conftest import start_mosquitto


def test_monitor_follows_the_console_and_the_state(deployed: SimDevice) -> None:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    mon = subprocess.Popen([CASECTL, "monitor", deployed.port, "--json", "--until", "forced", "--duration", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.8)  # the monitor has the port open; the firmware keeps running (nothing was sent)
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
    pid_file = tmp_path / "broker" / "mosquitto.pid"
    service = (SERVICE_USER, brokerfiles.password_hash(SERVICE_PASSWORD))
    with start_mosquitto(tmp_path / "broker", passwd=brokerfiles.passwd_file([service]),
                         acl=brokerfiles.acl_file([], SERVICE_USER), extra=f"pid_file {pid_file}\n") as hp:
        cloud = CloudServer(tmp_path / "cloud", broker=hp).start()
        try:
            r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--create-store", "--cloud",
                    cloud.url, "--staff-file", staff_file(tmp_path), "--no-selftest", "--labels", tmp_path / "l")
            assert r.code == 0, r.all
            # The broker learns the new case's login from the cloud (docs/provisioning.md step 6).
            h = {"Authorization": f"Bearer {TOKEN}"}
            passwd = httpx.get(f"{cloud.url}/v1/admin/broker/passwd", headers=h).text
            acl = httpx.get(f"{cloud.url}/v1/admin/broker/acl", headers=h).text
            (tmp_path / "broker" / "passwd").write_text(brokerfiles.passwd_file([service]) + passwd)
            (tmp_path / "broker" / "acl").write_text(acl)
            os.kill(int(pid_file.read_text()), signal.SIGHUP)

            deadline = time.monotonic() + 30
            while True:
                st = cli("status", "--cloud", cloud.url, "--json")
                assert st.code == 0, st.all
                case = st.json()["cases"][0]
                if case["online"] and case["fw"]:
                    break
                assert time.monotonic() < deadline, f"the case never came online: {case}"
                time.sleep(0.5)
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
        finally:
            cloud.stop()
