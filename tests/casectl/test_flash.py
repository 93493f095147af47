"""casectl flash: the real mpflash in dry-run, and a fake mpflash on PATH that lists a given set of
boards and records what it was asked to flash (no board is ever written in these tests)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from casectl.flash import MICROPYTHON_VERSION
from tests.casectl.conftest import cli

FAKE = """#!{python}
import json, os, sys
args = sys.argv[1:]
if "list" in args:
    print(open(os.environ["FAKE_MPFLASH_BOARDS"]).read())
    sys.exit(0)
with open(os.environ["FAKE_MPFLASH_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
print("fake mpflash: flashed")
"""


def board(port: Path, family: str, mp_port: str, board_id: str, cpu: str, vid: int) -> dict:
    return {"serialport": str(port), "family": family, "description": board_id, "version": "1.24.1",
            "port": mp_port, "sys_platform": mp_port, "cpu": cpu, "arch": "", "mpy": "v6.3", "build": "",
            "location": "1-1", "usb_manufacturer": "", "usb_product": "", "usb_description": "", "toml": {},
            "vid": vid, "pid": 5, "board_id": board_id, "board": board_id, "variant": ""}


@pytest.fixture
def fake(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "mpflash"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    pico, esp = tmp_path / "ttyACM0", tmp_path / "ttyACM1"  # stand-ins for the USB serial ports
    pico.touch()
    esp.touch()
    boards = tmp_path / "boards.json"
    boards.write_text(json.dumps([board(pico, "micropython", "rp2", "RPI_PICO_W", "RP2040", 0x2E8A),
                                  board(esp, "micropython", "esp32", "ESP32_GENERIC_S3", "ESP32S3", 0x303A)]))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_MPFLASH_BOARDS": str(boards),
           "FAKE_MPFLASH_LOG": str(tmp_path / "flashed.log")}
    return {"env": env, "pico": pico, "esp": esp, "log": tmp_path / "flashed.log", "boards": boards}


def test_real_mpflash_dry_run(tmp_path: Path) -> None:
    env = {"MPFLASH_FIRMWARE": str(tmp_path)}  # keep mpflash's cache out of the home folder
    r = cli("flash", "--board", "esp32s3", "--dry-run", "--json", env=env)
    assert r.code == 3 and r.json()["error"]["code"] == "no_device", r.all
    blank = tmp_path / "ttyUSB9"
    blank.touch()
    r = cli("flash", "--board", "esp32s3", "--port", blank, "--dry-run", "--json", env=env)
    assert r.code == 0, r.all
    plan = r.json()["plan"]
    assert plan["method"] == "esptool" and plan["mp_board"] == "ESP32_GENERIC_S3" and plan["found"] is None
    cmd = plan["command"]
    assert cmd[1:3] == ["--no-interactive", "flash"] and cmd[cmd.index("--serial") + 1] == str(blank)
    assert cmd[cmd.index("--version") + 1] == MICROPYTHON_VERSION
    assert any("blank esp32s3" in n for n in plan["notes"])
    r = cli("flash", "--board", "sim", "--dry-run")
    assert r.code == 2 and "nothing to flash" in r.err


def test_lists_boards_and_refuses_a_mismatch(fake: dict) -> None:
    r = cli("flash", "--list", "--json", env=fake["env"])
    assert r.code == 0 and [b["port"] for b in r.json()["boards"]] == ["rp2", "esp32"]
    r = cli("flash", "--board", "esp32s3", "--port", fake["pico"], "--dry-run", env=fake["env"])
    assert r.code == 10 and "not esp32s3" in r.err and "RPI_PICO_W" in r.err, r.all
    assert not fake["log"].exists()
    r = cli("flash", "--board", "esp32s3", "--port", fake["pico"], env=fake["env"])  # not even for real
    assert r.code == 10 and not fake["log"].exists()


def test_dry_run_then_flash_the_detected_board(fake: dict) -> None:
    r = cli("flash", "--board", "picow", "--dry-run", env=fake["env"])
    assert r.code == 0, r.all
    assert "uf2" in r.out and str(fake["pico"]) in r.out and "dry run" in r.err
    assert not fake["log"].exists()
    r = cli("flash", "--board", "picow", "--json", env=fake["env"])
    assert r.code == 0, r.all
    assert r.json()["plan"]["serialport"] == str(fake["pico"]) and r.err == ""
    args = json.loads(fake["log"].read_text().splitlines()[0])
    assert args[:2] == ["--no-interactive", "flash"]
    assert args[args.index("--serial") + 1] == str(fake["pico"])
    assert args[args.index("--board") + 1] == "RPI_PICO_W" and args[args.index("--method") + 1] == "uf2"
    assert "--erase" not in args


def test_two_candidates_need_a_port_and_none_is_an_error(fake: dict) -> None:
    two = json.loads(fake["boards"].read_text())
    two.append({**two[1], "serialport": str(fake["pico"]) + "x"})
    fake["boards"].write_text(json.dumps(two))
    r = cli("flash", "--board", "esp32s3", "--dry-run", env=fake["env"])
    assert r.code == 2 and "pick one with --port" in r.err
    fake["boards"].write_text(json.dumps([two[0]]))
    r = cli("flash", "--board", "esp32s3", "--dry-run", env=fake["env"])
    assert r.code == 10 and "no connected board is a esp32s3" in r.err
