"""Compile the firmware for one board with mpy-cross into build/<board>/, with a manifest.

The device gets: boot.py and main.py as source (MicroPython runs those two by name), everything
else as .mpy: the lockcase package, the board's own board.py, and the fetched device packages.

manifest.json names every file with its sha256 and size, the firmware version, and the .mpy
format the files need, so deploy can refuse a device that could not import them and copy only
what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casectl.devdeps import DEFAULT_DEST as DEVICE_LIB
from casectl.errors import BuildFailed
from casectl.source import BUILD, CHECKOUT, TREE
from casectl.tools import venv_tool

# The tree the sources come from: the checkout, or the copy installed with casectl (source.py).
REPO = TREE
FIRMWARE = REPO / "firmware"
BOARDS = REPO / "boards"
SOURCE_ONLY = {"boot.py", "main.py"}
MANIFEST = "manifest.json"
# The firmware uses the `vfs` module and asyncio as MicroPython 1.23 shaped them.
MIN_MICROPYTHON = (1, 23, 0)
# What each board's MicroPython reports as sys.platform: deploy refuses a build for another chip.
PLATFORMS = {"sim": "linux", "esp32s3": "esp32", "picow": "rp2"}


class BuildError(BuildFailed):
    pass


@dataclass
class Built:
    path: str  # path on the device, relative to its root
    size: int
    sha256: str


def mpy_cross() -> str:
    found = venv_tool("mpy-cross")
    if not found:
        raise BuildError("mpy-cross is missing", "run `make setup`")
    return found


def mpy_format() -> dict[str, Any]:
    """The .mpy version mpy-cross emits, e.g. {"version": 6, "sub": 3} for 'mpy v6.3'."""
    out = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise BuildError(f"cannot tell the .mpy version from `mpy-cross --version`: {out.strip()!r}")
    return {"version": int(m.group(1)), "sub": int(m.group(2)), "tool": out.strip()}


def firmware_version(firmware: Path = FIRMWARE) -> str:
    text = (firmware / "lockcase" / "__init__.py").read_text()
    m = re.search(r'^VERSION\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise BuildError("firmware/lockcase/__init__.py has no VERSION")
    return m.group(1)


def source_revision() -> str | None:
    if CHECKOUT is None:  # an installed tree: its version says it all (and git would describe
        return None  # whatever repository the install happens to sit in)
    try:
        out = subprocess.run(["git", "-C", str(CHECKOUT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def known_boards() -> list[str]:
    if not BOARDS.is_dir():
        raise BuildError("the firmware sources are missing (no boards/ next to casectl, none installed with it)",
                         "run casectl from a LockCase checkout, or reinstall it: pip install lockcase")
    return sorted(p.name for p in BOARDS.iterdir() if (p / "board.py").exists())


def sources(board: str, firmware: Path = FIRMWARE) -> list[tuple[Path, str]]:
    """(source file, path on the device) for everything a board's firmware consists of."""
    board_dir = BOARDS / board
    known = known_boards()
    if board not in known:
        raise BuildError(f"unknown board {board!r}", f"known boards: {', '.join(known)}")
    if not (firmware / "lockcase").is_dir():
        raise BuildError(f"{firmware} is not a firmware tree (no lockcase/ in it)",
                         "pass --src the firmware/ folder of a LockCase checkout")
    out = [(p, str(p.relative_to(firmware))) for p in sorted(firmware.rglob("*.py"))
           if "__pycache__" not in p.parts]
    out.append((board_dir / "board.py", "board.py"))
    if board != "sim":  # what the hardware boards build alike (boards/mcu/board_mcu.py)
        out.append((BOARDS / "mcu" / "board_mcu.py", "board_mcu.py"))
    if board == "sim":  # the sim's emulated parts are imported as boards.sim.*
        for p in sorted(board_dir.rglob("*.py")):
            if p.name not in ("board.py", "start.py") and "__pycache__" not in p.parts:
                out.append((p, str(p.relative_to(REPO))))
        out.append((BOARDS / "__init__.py", "boards/__init__.py"))
    if DEVICE_LIB.exists():
        out += [(p, str(p.relative_to(DEVICE_LIB))) for p in sorted(DEVICE_LIB.rglob("*.py"))]
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_device_packages() -> bool:
    """Fetch the pinned device packages when build/device-lib is missing or older than the lock
    file (what `make deps` does). Returns whether anything was fetched."""
    from casectl import devdeps

    stamp = DEVICE_LIB / ".stamp"
    if stamp.exists() and stamp.read_text() == devdeps.LOCK_FILE.read_text():
        return False
    try:
        devdeps.fetch_all(DEVICE_LIB)
    except (devdeps.FetchError, OSError) as e:
        raise BuildError(f"cannot fetch the device packages: {e}", "check the network, or run `make deps`") from None
    return True


def read_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise BuildError(f"no build in {out_dir}", "run `casectl build --board NAME` first") from None
    except ValueError:
        raise BuildError(f"{out_dir / MANIFEST} is not valid JSON", "rebuild with `casectl build`") from None


def _stamped(src: Path, version: str, tmp: Path) -> Path:
    text = re.sub(r'^VERSION\s*=.*$', f"VERSION = {json.dumps(version)}", src.read_text(), flags=re.M)
    out = tmp / "lockcase_init.py"
    out.write_text(text)
    return out


def compile_board(
    board: str,
    out_dir: Path | None = None,
    arch: str | None = None,
    *,
    firmware: Path = FIRMWARE,
    version: str | None = None,
    incremental: bool = False,
    progress: Callable[[str], None] | None = None,
    lines: bool = False,
) -> list[Built]:
    """Build `board` into out_dir (default build/<board>).

    firmware: the source tree (another checkout, a release tree). version: stamp this version
    into lockcase/__init__ instead of the tree's own. incremental: keep outputs whose source and
    compiler are unchanged (a one-file change recompiles one file). lines: keep source line
    numbers in the bytecode. Off by default: they cost 7 % of the .mpy and 3.3 KB of a chip's
    heap (docs/memory.md), and a traceback still names the module and the function.
    """
    out_dir = out_dir or BUILD / board
    srcs = sources(board, firmware)
    fmt = mpy_format()
    version = version or firmware_version(firmware)
    old: dict[str, Any] = {}
    if incremental and (out_dir / MANIFEST).exists():
        try:
            old = json.loads((out_dir / MANIFEST).read_text())
        except ValueError:
            old = {}
        was = old.get("mpy", {})
        if was.get("tool") != fmt["tool"] or was.get("arch") != arch or was.get("lines", True) != lines:
            old = {}
    elif out_dir.exists():
        shutil.rmtree(out_dir)
    old_src: dict[str, str] = old.get("sources", {})
    old_files: dict[str, str] = old.get("files", {})

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        jobs: list[tuple[Path, str, Path, bool]] = []  # src, device path, target, copy-only
        for src, dev in srcs:
            if dev == "lockcase/__init__.py" and version != firmware_version(firmware):
                src = _stamped(src, version, tmp)
            copy = Path(dev).name in SOURCE_ONLY and "/" not in dev
            dev_out = dev if copy else dev[:-3] + ".mpy"
            jobs.append((src, dev_out, out_dir / dev_out, copy))

        def one(job: tuple[Path, str, Path, bool]) -> Built:
            src, dev, target, copy = job
            src_sha = _sha(src.read_bytes())
            if target.exists() and old_src.get(dev) == src_sha:
                data = target.read_bytes()
                if _sha(data) == old_files.get(dev):
                    return Built(dev, len(data), src_sha)  # sha of the source, fixed below
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copyfile(src, target)
            else:
                # The name tracebacks show: the module's own (lockcase.app), which the import
                # interns anyway as its __name__, so it costs a chip no name of its own (a path,
                # lockcase/app.py, was one more interned string a module: docs/memory.md).
                name = dev[:-4].removesuffix("/__init__").replace("/", ".")
                cmd = [mpy_cross(), "-o", str(target), "-s", name]
                if arch:
                    cmd.insert(1, f"-march={arch}")
                if not lines:
                    cmd[1:1] = ["-X", "no-source-lines"]
                proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
                if proc.returncode:
                    shown = src.relative_to(REPO) if src.is_relative_to(REPO) else src
                    raise BuildError(f"mpy-cross failed on {shown}:\n{proc.stderr.strip()}")
            if progress:
                progress(dev)
            return Built(dev, target.stat().st_size, src_sha)

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            results = list(pool.map(one, jobs))

    src_shas = {b.path: b.sha256 for b in results}
    built = []
    for b in results:
        data = (out_dir / b.path).read_bytes()
        built.append(Built(b.path, len(data), _sha(data)))
    keep = {b.path for b in built} | {MANIFEST}
    for p in sorted(out_dir.rglob("*"), reverse=True):  # files of modules that were removed
        rel = p.relative_to(out_dir).as_posix()
        if p.is_file() and rel not in keep:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()

    from casectl import __version__

    manifest = {
        "board": board,
        "version": version,
        "source": source_revision(),
        "casectl": __version__,
        "platform": PLATFORMS.get(board),
        "mpy": {"version": fmt["version"], "sub": fmt["sub"], "arch": arch, "tool": fmt["tool"],
                "lines": lines},
        "min_micropython": ".".join(map(str, MIN_MICROPYTHON)),
        "files": {b.path: b.sha256 for b in built},
        "sizes": {b.path: b.size for b in built},
        "total_bytes": sum(b.size for b in built),
        "sources": src_shas,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return built
