"""casectl deploy against the sim board on a pty: the real mpremote transport, the real Unix port,
files hashed on the device, stage-then-swap surviving cut cables and resets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casectl.build import compile_board, firmware_version
from casectl.deploy import STAGE, DeployReport, deploy
from casectl.device import Device
from casectl.errors import DeviceError, Disconnected
from sim.device import SimDevice
from tests.casectl.conftest import REPO, CloudServer, cli, mpremote, socat_exe
from tests.casectl.holders import wait_holding

CHANGED = ("lockcase/app.py", "lockcase/entry.py", "lockcase/lock.py", "lockcase/journal.py", "lockcase/phone.py")


def variant_build(base: Path, tmp: Path, version: str, changed: tuple[str, ...] = CHANGED) -> Path:
    """A second, working build of the firmware tree `base` in which `changed` modules and the
    version differ."""
    src = tmp / f"fw-{version}"
    if not src.exists():
        shutil.copytree(base, src, ignore=shutil.ignore_patterns("__pycache__"))
        for rel in changed:
            with (src / rel).open("a") as f:
                f.write(f"\n_BUILD_MARK = {version!r}\n")
    out = tmp / f"build-{version}"
    compile_board("sim", out, firmware=src, version=version)
    return out


def running_version(sd: SimDevice) -> str:
    """The version the running firmware reports in its boot event (over the sim's control socket)."""
    sd.wait_firmware()
    c = sd.ctl()
    try:
        boots = [e for e in c.call("events", after=0, limit=200)["events"] if e["type"] == "boot"]
        return boots[-1]["fw"]
    finally:
        c.close()


def device_sha(port: str, path: str) -> str:
    p = mpremote(port, "fs", "sha256sum", f":{path}")
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[-1]  # mpremote echoes the command, then the digest


def test_first_deploy_then_nothing_to_do(device: SimDevice, sim_build: Path, fw_snapshot: Path) -> None:
    boots = device.boots
    r = cli("deploy", device.port, "--build-dir", sim_build, "--json")
    assert r.code == 0, r.all
    rep = r.json()
    man = json.loads((sim_build / "manifest.json").read_text())
    assert rep["verified"] and rep["reset"] and rep["unchanged"] == 0
    assert sorted(rep["sent"]) == sorted(man["files"])
    # soft reset: the Unix port ends, the supervisor boots the firmware from the flash image
    device.wait_boot(boots)
    assert running_version(device) == firmware_version(fw_snapshot)
    # checked with the real mpremote CLI, independently of casectl
    for path in ("main.py", "lockcase/app.mpy", "board.mpy"):
        assert device_sha(device.port, path) == man["files"][path]
    r = cli("deploy", device.port, "--build-dir", sim_build, "--json")
    assert r.code == 0, r.all
    rep = r.json()
    assert rep["sent"] == [] and rep["unchanged"] == len(man["files"]) and rep["verified"]


def test_one_file_change_sends_one_file(deployed: SimDevice, tmp_path: Path, fw_snapshot: Path) -> None:
    b2 = variant_build(fw_snapshot, tmp_path, "0.1.0-one", changed=("lockcase/entry.py",))
    boots = deployed.boots
    r = cli("deploy", deployed.port, "--build-dir", b2)
    assert r.code == 0, r.all
    assert "sent 2 files" in r.out  # the changed module and lockcase/__init__ (the version)
    deployed.wait_boot(boots)
    assert running_version(deployed) == "0.1.0-one"


def _kill_on_nth_file(sd: SimDevice, n: int) -> object:
    class P:
        files = 0

        def phase(self, text: str) -> None:
            pass

        def copy_start(self, files: int, total_bytes: int) -> None:
            pass

        def copy_file(self, path: str) -> None:
            self.files += 1
            if self.files == n:
                sd.power_cut()

        def copied(self, nbytes: int) -> None:
            pass

    return P()


def test_cut_cable_mid_copy_keeps_old_firmware_and_rerun_finishes(deployed: SimDevice, tmp_path: Path,
                                                                   fw_snapshot: Path) -> None:
    b2 = variant_build(fw_snapshot, tmp_path, "0.2.0")
    boots = deployed.boots
    with pytest.raises(Disconnected) as ei, Device(deployed.port) as dev:
        deploy(dev, b2, progress=_kill_on_nth_file(deployed, 4))  # type: ignore[arg-type]
    assert "previous firmware is intact" in ei.value.message
    deployed.wait_boot(boots)
    assert running_version(deployed) == firmware_version(fw_snapshot)  # the old firmware boots
    boots = deployed.boots
    with Device(deployed.port) as dev:
        rep: DeployReport = deploy(dev, b2)
    assert rep.verified and len(rep.reused_from_stage) == 3 and len(rep.sent) == len(CHANGED) + 1 - 3
    deployed.wait_boot(boots)
    assert running_version(deployed) == "0.2.0"
    assert mpremote(deployed.port, "fs", "ls", f":{STAGE}").returncode != 0  # the stage is gone


def test_reset_mid_swap_is_finished_by_the_next_run(deployed: SimDevice, tmp_path: Path, fw_snapshot: Path) -> None:
    b2 = variant_build(fw_snapshot, tmp_path, "0.3.0")
    boots = deployed.boots
    with pytest.raises(DeviceError), Device(deployed.port) as dev:
        deploy(dev, b2, stop_after_swaps=2)
    deployed.power_cut()  # the reset that interrupted the swap
    deployed.wait_boot(boots)
    boots = deployed.boots
    with Device(deployed.port) as dev:
        rep = deploy(dev, b2)
    assert rep.finished_interrupted_swap == len(CHANGED) + 1 - 2
    assert rep.sent == [] and rep.verified
    deployed.wait_boot(boots)
    assert running_version(deployed) == "0.3.0"


def test_cli_reports_a_cable_pulled_mid_copy(device: SimDevice, sim_build: Path) -> None:
    flash = Path(device.flash)
    before = flash.stat().st_mtime_ns
    p = subprocess.Popen([str(Path(sys.executable).parent / "casectl"), "deploy", device.port, "--build-dir",
                          str(sim_build)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, NO_COLOR="1", COLUMNS="200"))
    deadline = time.monotonic() + 20
    while flash.stat().st_mtime_ns == before:  # the first staged file is being written
        assert time.monotonic() < deadline and p.poll() is None, "the copy never started"
        time.sleep(0.005)
    time.sleep(0.15)
    device.power_cut()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 9, err
    assert "error:" in err and ("disconnected" in err or "stopped answering" in err)
    assert "previous firmware is intact" in err and "run the same deploy again" in err
    device.wait_port()
    r = cli("deploy", device.port, "--build-dir", sim_build, "--json")
    assert r.code == 0 and r.json()["verified"] and r.json()["reused_from_stage"], r.all


def test_watchdog_is_fed_while_casectl_holds_the_repl(deployed: SimDevice) -> None:
    # A 1 s watchdog: without feeding, the interrupted firmware's board resets under the REPL.
    boots = deployed.boots
    with Device(deployed.port) as dev:
        dev.write_file("config.json", b'{"board": "sim", "wdt_ms": 1000}')
        dev.soft_reset()
    deployed.wait_boot(boots)
    deployed.wait_firmware()
    boots = deployed.boots
    with Device(deployed.port) as dev:
        assert dev.info is not None and dev.info.firmware_was_running and dev.info.watchdog == "fed"
        time.sleep(2.5)
        assert dev.exec("print(6*7)").strip() == b"42"
        assert deployed.boots == boots
    # leaving the session resets the case back into its firmware
    deployed.wait_boot(boots)
    deployed.wait_firmware()


def test_errors_no_device_busy_and_not_micropython(device: SimDevice, tmp_path: Path, sim_build: Path) -> None:
    r = cli("deploy", tmp_path / "ttyNOPE", "--build-dir", sim_build)
    assert r.code == 3 and "no device on" in r.err
    # The other program holds the port for as long as the check takes: its exec outlasts it, and
    # the deploy starts once it has the port open (a 1 s sleep and a 4 s exec were a race with
    # mpremote's and casectl's start on a loaded machine). Killed after: this device is the test's.
    holder = subprocess.Popen([str(Path(sys.executable).parent / "mpremote"), "connect",
                               device.port, "resume", "exec", "import time; time.sleep(120)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_holding(holder, device.port)
        r = cli("deploy", device.port, "--build-dir", sim_build)
        assert r.code == 4 and "in use by another program" in r.err, r.all
    finally:
        holder.kill()
        holder.wait(10)
    link = tmp_path / "ttyCAT"
    cat = subprocess.Popen([socat_exe(), f"pty,link={link},raw,echo=0", "exec:cat,pty,raw,echo=0"])
    try:
        deadline = time.monotonic() + 60  # socat's start (the cli below needs the link)
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        r = cli("deploy", link, "--build-dir", sim_build)
        assert r.code == 5 and "no MicroPython REPL answered" in r.err, r.all
    finally:
        cat.kill()
        cat.wait()


def _doctored(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    for k, v in changes.items():
        if isinstance(v, dict):
            man[k].update(v)
        else:
            man[k] = v
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def test_incompatible_micropython_is_refused_before_anything_is_written(
        device: SimDevice, sim_build: Path, tmp_path: Path) -> None:
    abi = _doctored(sim_build, tmp_path / "abi", mpy={"version": 7})
    r = cli("deploy", device.port, "--build-dir", abi)
    assert r.code == 6 and "wrong .mpy ABI" in r.err and "v7" in r.err, r.all
    old = _doctored(sim_build, tmp_path / "old", min_micropython="99.0.0")
    r = cli("deploy", device.port, "--build-dir", old, "--json")
    assert r.code == 6 and r.json()["error"]["code"] == "incompatible" and "too old" in r.json()["error"]["message"]
    with Device(device.port) as dev:
        assert dev.hashes(["boot.py", "main.py", f"{STAGE}/boot.py"]) == {
            "boot.py": None, "main.py": None, f"{STAGE}/boot.py": None}


def test_build_for_another_board_is_refused(device: SimDevice, tmp_path: Path) -> None:
    esp = tmp_path / "esp32s3"
    compile_board("esp32s3", esp)
    r = cli("deploy", device.port, "--build-dir", esp)
    assert r.code == 10 and "the build is for esp32s3" in r.err, r.all


def test_deploy_detects_the_board_and_builds(device: SimDevice) -> None:
    r = cli("deploy", device.port, "--json")
    assert r.code == 0, r.all
    rep = r.json()
    assert rep["board"] == "sim" and rep["verified"] and rep["sent"]
    assert (REPO / "build" / "sim" / "manifest.json").exists()


def test_sim_device_command_gives_a_port_to_work_with(tmp_path: Path, sim_build: Path) -> None:
    import signal

    p = subprocess.Popen([str(Path(sys.executable).parent / "casectl"), "sim-device", "--dir", str(tmp_path / "sd"),
                          "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        r = cli("deploy", info["port"], "--build-dir", sim_build, "--json")
        assert r.code == 0 and r.json()["verified"], r.all
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
    assert not Path(info["port"]).exists()


def test_update_of_a_provisioned_case_keeps_its_config(deployed: SimDevice, cloud: CloudServer, tmp_path: Path,
                                                       fw_snapshot: Path) -> None:
    boots = deployed.boots
    r = cli("provision", deployed.port, "--store", "s1", "--case", "c1", "--cloud", cloud.url, "--no-selftest",
            "--labels", tmp_path / "labels", "--online-timeout", "0")  # no broker here
    assert r.code == 0, r.all
    deployed.wait_boot(boots)
    deployed.wait_firmware()
    b2 = variant_build(fw_snapshot, tmp_path, "0.4.0")
    boots = deployed.boots
    r = cli("deploy", deployed.port, "--build-dir", b2, "--json")
    assert r.code == 0, r.all
    assert len(r.json()["sent"]) == len(CHANGED) + 1
    deployed.wait_boot(boots)
    assert running_version(deployed) == "0.4.0"
    ctl = deployed.ctl()
    try:
        assert ctl.state()["entry"] == "idle"  # still provisioned: config.json was left alone
    finally:
        ctl.close()


def test_the_board_module_is_swapped_after_what_it_imports_and_before_the_entry_points() -> None:
    # board.mpy imports board_mcu; boot.py imports board before it makes the lock safe: a swap cut
    # short between two renames must never leave a file whose imports are not in place yet.
    from casectl.deploy import _order

    got = _order(["main.py", "board.mpy", "lockcase/app.mpy", "boot.py", "board_mcu.mpy", "umqtt/simple.mpy"])
    assert got.index("board_mcu.mpy") < got.index("board.mpy") < got.index("boot.py") < got.index("main.py")
    assert got.index("lockcase/app.mpy") < got.index("board.mpy")
    assert got[-3:] == ["board.mpy", "boot.py", "main.py"]
