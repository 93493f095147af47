"""Fetch the device-side MicroPython packages named in device-packages.lock.

pip refuses most micropython-lib sdists (they have no usable build backend), so the sdist is
downloaded with pypi-simple, checked against the pinned sha256, and its modules are unpacked
into build/device-lib/, which the firmware puts on sys.path and the build compiles to .mpy.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from casectl.source import BUILD, TREE

LOCK_FILE = TREE / "device-packages.lock"
DEFAULT_DEST = BUILD / "device-lib"
CACHE = BUILD / "cache"


@dataclass(frozen=True)
class Pin:
    project: str
    version: str
    filename: str
    sha256: str


class FetchError(RuntimeError):
    pass


def read_lock(path: Path = LOCK_FILE) -> list[Pin]:
    pins = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4 or len(parts[3]) != 64:
            raise FetchError(f"{path.name}:{n}: expected '<project> <version> <file> <sha256>'")
        pins.append(Pin(*parts))
    return pins


def _download(pin: Pin) -> bytes:
    cached = CACHE / pin.filename
    if cached.exists():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == pin.sha256:
            return data
    from pypi_simple import PyPISimple

    with PyPISimple() as client:
        page = client.get_project_page(pin.project)
        matches = [p for p in page.packages if p.filename == pin.filename]
        if not matches:
            raise FetchError(f"{pin.project} {pin.version}: {pin.filename} is not published")
        resp = client.s.get(matches[0].url, timeout=60)
        resp.raise_for_status()
        data = resp.content
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise FetchError(
            f"{pin.filename}: sha256 {digest} does not match the pinned {pin.sha256}; refusing it"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return data


def _extract(data: bytes, dest: Path) -> list[Path]:
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts[1:]  # drop the "<name>-<version>/" top folder
            if not member.isfile() or not parts or not parts[-1].endswith(".py"):
                continue
            if parts[0] in ("setup.py", "sdist_upip.py") or ".." in parts:
                continue
            if any(p.endswith(".egg-info") or p in ("test", "tests") for p in parts):
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            fh = tar.extractfile(member)
            assert fh is not None
            target.write_bytes(fh.read())
            written.append(target)
    return written


def fetch_all(dest: Path = DEFAULT_DEST, lock: Path = LOCK_FILE) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pin in read_lock(lock):
        written += _extract(_download(pin), dest)
    (dest / ".stamp").write_text(lock.read_text())
    return written


def main() -> int:
    try:
        files = fetch_all()
    except (FetchError, OSError) as exc:
        print(f"device packages: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f"device packages: {f.relative_to(BUILD.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
