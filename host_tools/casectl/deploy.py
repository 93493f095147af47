"""Copy a build onto a device: only what differs, staged, verified, then swapped into place.

1. Hash every file of the build on the device (sha256 computed there, not trusted from a cache).
2. Copy the files that differ into `.lc-stage/` (files already staged by an interrupted run with
   the right hash are kept). The firmware in place is untouched, so a cut cable here leaves the
   previous firmware bootable.
3. Hash the staged files on the device; write the plan as `.lc-stage/READY` (write, then rename:
   the marker is there completely or not at all).
4. Swap: rename each staged file over its live one, boot.py and main.py last, remove files the
   previous build had and this one has not, install manifest.json, delete the marker. A run that
   finds the marker finishes this step first, so running deploy again completes a swap that a
   reset interrupted.
5. Hash every file once more and soft-reset.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from casectl.build import MANIFEST, read_manifest
from casectl.device import Device, check_compatible
from casectl.errors import BoardMismatch, DeviceError, Disconnected

STAGE = ".lc-stage"
MARKER = STAGE + "/READY"
# What changes last, in this order: the board module once the modules it imports are in place
# (board.mpy imports board_mcu; boot.py imports board before lock_safe()), then the entry points
# once everything they import is. A swap cut short anywhere leaves each file's imports in place.
LAST = ("board.mpy", "board.py", "boot.py", "main.py")
# What over-the-air updates keep on the case (firmware/lockcase/ota/: slots.py, update.py,
# boot.py): the pointer boot.py reads, a download or staged release and its manifest and index
# (and the index being written), the release slots, a root firmware's lockcase/ on its way out.
# A deploy removes them all, the pointer first.
OTA_FILES = ("ota.json", "ota.tmp", "ota_dl.json", "ota_dl.tmp", "ota_man.bin", "ota_idx.txt", "ota_idx.txt.tmp",
             "fw_a", "fw_b", "lockcase.old")

# Which chip each board's build is for: sys.platform, and a piece of sys.implementation._machine.
CHIPS: dict[str, tuple[str, str]] = {"sim": ("linux", ""), "esp32s3": ("esp32", "ESP32S3"),
                                     "picow": ("rp2", "Pico W")}

class Progress(Protocol):
    def phase(self, text: str) -> None: ...
    def copy_start(self, files: int, total_bytes: int) -> None: ...
    def copy_file(self, path: str) -> None: ...
    def copied(self, nbytes: int) -> None: ...


class NoProgress:
    def phase(self, text: str) -> None:
        pass

    def copy_start(self, files: int, total_bytes: int) -> None:
        pass

    def copy_file(self, path: str) -> None:
        pass

    def copied(self, nbytes: int) -> None:
        pass


@dataclass
class DeployReport:
    port: str
    board: str
    version: str
    files: int
    unchanged: int
    sent: list[str] = field(default_factory=list)
    reused_from_stage: list[str] = field(default_factory=list)
    swapped: int = 0
    removed: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    finished_interrupted_swap: int | None = None
    verified: bool = False
    reset: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def board_of(dev: Device) -> str | None:
    """The board the device's current firmware was built for, else a guess from its chip."""
    man = device_manifest(dev)
    if man and isinstance(man.get("board"), str):
        return man["board"]
    info = dev.info
    assert info is not None
    for board, (platform, machine) in CHIPS.items():
        if info.platform == platform and machine in info.machine:
            return board
    return None


def device_manifest(dev: Device) -> dict[str, Any] | None:
    raw = dev.read_file(MANIFEST)
    if raw is None:
        return None
    try:
        man = json.loads(raw)
    except ValueError:
        return None
    return man if isinstance(man, dict) else None


def device_copy(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the device keeps: enough to know what is installed, small enough to read back."""
    return {k: manifest.get(k) for k in ("board", "version", "source", "files")}


def check_board(dev: Device, manifest: dict[str, Any], old: dict[str, Any] | None, force: bool) -> None:
    info = dev.info
    assert info is not None
    board = manifest["board"]
    platform, machine = CHIPS.get(board, (manifest.get("platform") or "", ""))
    if info.platform != platform or machine not in info.machine:
        if not force:
            raise BoardMismatch(
                f"the build is for {board} ({platform}), but {info.port} is a {info.platform} board ({info.machine})",
                "deploy the build for this board (`--board`), or pass --force if you are sure")
    if old and old.get("board") not in (None, board) and not force:
        raise BoardMismatch(f"{info.port} has firmware for the {old.get('board')} board, the build is for {board}",
                            "pass --force to replace it")


def _order(paths: list[str]) -> list[str]:
    return sorted(p for p in paths if p not in LAST) + [p for p in LAST if p in paths]


def deploy(
    dev: Device,
    build_dir: Path,
    *,
    force: bool = False,
    reset: bool = True,
    progress: Progress | None = None,
    stop_after_swaps: int | None = None,
) -> DeployReport:
    """stop_after_swaps: raise on the device after that many renames (power-cut tests)."""
    t0 = time.monotonic()
    pr = progress or NoProgress()
    manifest = read_manifest(build_dir)
    info = dev.info
    assert info is not None
    check_compatible(info, manifest)
    want: dict[str, str] = manifest["files"]
    report = DeployReport(info.port, manifest["board"], manifest["version"], len(want), 0)

    pr.phase("checking the device")
    if dev.hashes([MARKER])[MARKER] is not None:
        pr.phase("finishing an interrupted update")
        report.finished_interrupted_swap = _swap(dev, -1)
    old = device_manifest(dev)
    check_board(dev, manifest, old, force)

    pr.phase("hashing files on the device")
    paths = sorted(want)
    live = dev.hashes(paths)
    need = [p for p in paths if live[p] != want[p]]
    report.unchanged = len(paths) - len(need)
    staged = dev.hashes([f"{STAGE}/{p}" for p in need]) if need else {}
    send = [p for p in need if staged[f"{STAGE}/{p}"] != want[p]]
    report.reused_from_stage = [p for p in need if p not in send]
    stale = sorted(set((old or {}).get("files", {})) - set(want))
    dev_manifest = device_copy(manifest)
    manifest_changed = old != dev_manifest

    sizes = {p: (build_dir / p).stat().st_size for p in send}
    pr.copy_start(len(send), sum(sizes.values()))
    try:
        for p in send:
            pr.copy_file(p)
            data = (build_dir / p).read_bytes()
            dev.write_file(f"{STAGE}/{p}", data, pr.copied)
            report.sent.append(p)
            report.bytes_sent += len(data)
        if need or stale or manifest_changed:
            pr.phase("verifying the staged files")
            got = dev.hashes([f"{STAGE}/{p}" for p in need])
            bad = [p for p in need if got[f"{STAGE}/{p}"] != want[p]]
            if bad:
                raise DeviceError(f"the device's copy of {', '.join(bad[:5])} does not match the build (flash write error?)",
                                  "run deploy again; if it repeats, the flash may be full or failing")
            dev.write_file(f"{STAGE}/{MANIFEST}", json.dumps(dev_manifest, sort_keys=True).encode())
            plan = json.dumps({"swap": _order(need), "remove": stale}).encode()
            dev.write_file(f"{MARKER}.tmp", plan)
            dev.exec(f"_lc_replace('{MARKER}.tmp', '{MARKER}')", what="writing the update marker")
    except Disconnected as e:
        raise Disconnected(e.message + "; nothing was swapped, so the previous firmware is intact",
                           "reconnect and run the same deploy again: files already copied are not sent twice") from None

    if need or stale or manifest_changed:
        pr.phase("swapping the new files into place")
        try:
            report.swapped = _swap(dev, -1 if stop_after_swaps is None else stop_after_swaps)
        except Disconnected as e:
            raise Disconnected(e.message + "; the update stopped half-way through the swap",
                               "reconnect and run the same deploy again: it finishes the swap first") from None
        report.removed = stale
    else:  # what an abandoned run staged for another build
        dev.exec(f"_lc_rmtree('{STAGE}')", what="clearing the staging folder")

    pr.phase("verifying every file")
    final = dev.hashes(paths)
    bad = [p for p in paths if final[p] != want[p]]
    if bad:
        raise DeviceError(f"after the update {', '.join(bad[:5])} differ from the build",
                          "run deploy again; if it repeats, the flash may be full or failing")
    report.verified = True
    # A deploy says what runs: a release the case switched to over the air (its slot pointer,
    # docs/ota.md) would otherwise still boot instead of the files just written, and one staged
    # could switch after it.
    dev.exec("".join(f"_lc_rmtree({p!r})\n" for p in OTA_FILES), what="dropping the over-the-air releases")
    if reset:
        pr.phase("resetting the device")
        dev.soft_reset()
        report.reset = True
    else:
        dev.stay_at_repl()
    report.seconds = round(time.monotonic() - t0, 3)
    return report


def _swap(dev: Device, stop_after: int) -> int:
    # onboard/files.py's _lc_swap, loaded with the transfer helper
    return int(dev.call_json(f"_lc_swap({MARKER!r}, {STAGE!r}, {MANIFEST!r}, {stop_after})",
                             what="swapping files into place"))
