"""Signed firmware releases for over-the-air updates (docs/ota.md): the release key, the build, the
manifest and its Ed25519 signature, and the release on disk (a directory or one tar archive).

A release is the same build as `casectl deploy` puts on a board (build.py), minus boot.py (it keeps
the lock safe before anything else runs and stays a `casectl deploy` job), described by a manifest
(compact UTF-8 JSON, signed as the bytes written: there is no canonical form) and its signature.
The private half of the release key never leaves the technician's machine: the cloud gets the
release and the signature and can check them with the public key, but cannot make one.

On disk (`write_dir`), or the same names inside one uncompressed tar (`write_archive`):

    manifest.json   the signed bytes, exactly
    manifest.sig    128 lowercase hex digits
    files/<path>    each file of the manifest, as built
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from casectl.errors import BuildFailed, Usage

REL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})")
BOARDS = ("esp32s3", "picow", "sim")  # what board.NAME says on a case
# Not part of a release: boot.py keeps the lock safe before anything else and is replaced only by
# `casectl deploy` (a cut write of it would leave a case that cannot boot at all); manifest.json
# is build.py's own record of the build.
NOT_IN_RELEASE = frozenset({"boot.py", "manifest.json"})
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FILES = "files"
MAX_FILES = 255  # the case keeps its progress per file index


class ReleaseError(BuildFailed):
    pass


# -- the key ----------------------------------------------------------------------------------------
def keygen(out_dir: Path, name: str = "release", *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair: <name>.key (PKCS#8 PEM, mode 0600 from its creation, never
    printed) and <name>.pub (the raw public key as 64 hex digits, what a case's `ota_key` holds).
    Returns (private path, public path, public hex)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if not force and (priv_path.exists() or pub_path.exists()):
        raise Usage(f"{priv_path} or {pub_path} exists already",
                    "a new key makes every case provisioned with the old one refuse new releases; "
                    "pass --force to replace it anyway, or pick another --name")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = public_hex(key)
    if priv_path.exists():
        priv_path.unlink()
    # created 0600, never world-readable for an instant (a chmod after the write would be late)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_text(pub + "\n")
    return priv_path, pub_path, pub


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def fingerprint(public: str) -> str:
    """sha256 of the raw public key, hex: what a technician pins (its first 16 digits are shown)."""
    return hashlib.sha256(bytes.fromhex(public)).hexdigest()


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Usage(f"cannot read the release key {path}: {e.strerror}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise Usage(f"the release key {path} is readable by others (mode {path.stat().st_mode & 0o777:o})",
                    f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise Usage(f"{path} is not an unencrypted PEM private key", "make one with `casectl release keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise Usage(f"{path} is not an Ed25519 key", "make one with `casectl release keygen`")
    return key


def load_public(text: str) -> Ed25519PublicKey:
    """A public key as 64 hex digits (a .pub file's text, a case's ota_key)."""
    t = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", t):
        raise Usage("a release public key is 64 hex digits (the .pub file of `casectl release keygen`)")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(t))


def read_public(path: Path) -> str:
    """A .pub file's key, checked: 64 lowercase hex digits."""
    try:
        text = path.read_text().strip().lower()
    except OSError as e:
        raise Usage(f"cannot read the release public key {path}: {e.strerror}") from None
    load_public(text)
    return text


def verify(public: str, manifest: bytes, sig_hex: str) -> bool:
    """Whether sig_hex (128 hex) is the release key's signature of these manifest bytes."""
    if not re.fullmatch(r"[0-9a-f]{128}", sig_hex):
        return False
    try:
        load_public(public).verify(bytes.fromhex(sig_hex), manifest)
    except InvalidSignature:
        return False
    return True


# -- the manifest -----------------------------------------------------------------------------------
def check_version(what: str, v: str) -> str:
    if not VERSION_RE.fullmatch(v):
        raise Usage(f"{what} {v!r}: x.y.z, each part 0-9999 without leading zeros")
    return v


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def mpy_abi(mpy: dict[str, Any]) -> int:
    """sys.implementation._mpy as a case that can import the build reports it, without the arch
    bits: the files are bytecode only (docs/ota.md: the case compares the low byte, the .mpy
    version, as `casectl deploy` does)."""
    if mpy.get("arch"):
        raise ReleaseError("a release is bytecode only: build without --arch")
    return int(mpy["version"]) | (int(mpy["sub"]) << 8)


def manifest_bytes(rel: str, version: str, board: str, mpy: int, min_version: str, floor: str,
                   files: list[tuple[str, int, str]]) -> bytes:
    """The manifest as signed: compact JSON, keys in the interface's order, UTF-8."""
    if not REL_RE.fullmatch(rel):
        raise Usage(f"release id {rel!r}: 1-32 of a-z 0-9 . _ -, starting with a letter or digit")
    if board not in BOARDS:
        raise Usage(f"board {board!r}: one of {', '.join(BOARDS)}")
    for what, v in (("version", version), ("--min", min_version), ("--floor", floor)):
        check_version(what, v)
    if version_key(floor) > version_key(version):
        raise Usage(f"--floor {floor} is above the release's own version {version}",
                    "a case would then refuse this very release once confirmed")
    if not files or len(files) > MAX_FILES:
        raise ReleaseError(f"a release holds 1-{MAX_FILES} files, not {len(files)}")
    # In path order, "files" the last key, compact: the form a case reads one entry at a time
    # (lockcase/ota/manifest.py parse, docs/ota.md "Manifest").
    doc = {"v": 1, "rel": rel, "version": version, "board": board, "mpy": mpy, "min": min_version, "floor": floor,
           "files": [[p, n, h] for p, n, h in sorted(files)]}
    out = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    # One set of limits: what the case's own parser refuses is never signed.
    from lockcase.ota import manifest as case_manifest

    if len(out) > case_manifest.MAX_BYTES:
        raise ReleaseError(f"the manifest is {len(out)} bytes, over the {case_manifest.MAX_BYTES} a case reads")
    # the parser's refusal would say "bad file entry" only: name the file
    for p, _, _ in files:
        if not case_manifest._path_ok(p):  # the case's own rule, not a copy of it
            raise ReleaseError(f"a case cannot take the file {p!r}: a path is at most 96 of A-Z a-z 0-9 . _ - /, "
                               "relative, without '.' or '..' parts, and not boot.py nor confirmed")
    try:
        case_manifest.parse(out)
    except ValueError as e:
        raise ReleaseError(f"a case would refuse this manifest: {e}") from None
    return out


@dataclass
class Release:
    """A release read back: the manifest's bytes as signed, its signature, and the files' bytes."""

    manifest: bytes
    sig: str
    files: dict[str, bytes]

    @property
    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = json.loads(self.manifest)
        return d

    def check(self, public: str | None = None) -> None:
        """Every file present with its size and sha256; with `public`, the signature too."""
        d = self.doc
        for path, size, sha in d["files"]:
            data = self.files.get(path)
            if data is None:
                raise ReleaseError(f"the release misses {path}")
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise ReleaseError(f"{path} does not match the manifest (size or sha256)")
        if public is not None and not verify(public, self.manifest, self.sig):
            raise ReleaseError("the signature does not verify with this public key")


def build(board: str, key: Ed25519PrivateKey, *, rel: str | None = None, version: str | None = None,
          min_version: str = "0.0.0", floor: str = "0.0.0", firmware: Path | None = None,
          progress: Callable[[str], None] | None = None) -> Release:
    """Compile `board` exactly as `casectl build`/`deploy` do (into a scratch directory, so the
    build/<board> a deploy uses is left alone), then describe and sign it."""
    from casectl import build as b

    b.ensure_device_packages()
    src = firmware or b.FIRMWARE
    with tempfile.TemporaryDirectory(prefix="casectl-release-") as tmpd:
        out = Path(tmpd) / board
        built = b.compile_board(board, out, firmware=src, version=version, progress=progress)
        man = b.read_manifest(out)
        files = sorted((x for x in built if x.path not in NOT_IN_RELEASE), key=lambda x: x.path)
        data = {x.path: (out / x.path).read_bytes() for x in files}
    ver = man["version"]
    rel = rel or f"{board}-{ver}"
    mb = manifest_bytes(rel, ver, board, mpy_abi(man["mpy"]), min_version, floor,
                        [(x.path, x.size, x.sha256) for x in files])
    return Release(mb, key.sign(mb).hex(), data)


# -- on disk ----------------------------------------------------------------------------------------
def _safe(path: str) -> str:
    p = Path(path)
    if p.is_absolute() or ".." in p.parts or not path or path != p.as_posix():
        raise ReleaseError(f"unsafe file path in the manifest: {path!r}")
    return path


def write_dir(r: Release, out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        raise Usage(f"{out} exists and is not empty", "pick another --out")
    (out / FILES).mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_bytes(r.manifest)
    (out / SIGNATURE).write_text(r.sig + "\n")
    for path, data in r.files.items():
        target = out / FILES / _safe(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


def write_archive(r: Release, out: Path) -> Path:
    """One uncompressed tar (the .mpy files hardly compress), members in a fixed order with fixed
    times and owners, so the same release always makes the same archive."""
    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))

    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, MANIFEST, r.manifest)
        add(tar, SIGNATURE, (r.sig + "\n").encode())
        for path in sorted(r.files):
            add(tar, f"{FILES}/{_safe(path)}", r.files[path])
    tmp.replace(out)
    return out


def read(path: Path) -> Release:
    """A release directory or archive, as written above (its files as the manifest names them)."""
    if path.is_dir():
        def get(name: str) -> bytes | None:
            p = path / name
            return p.read_bytes() if p.is_file() else None
    elif path.is_file():
        try:
            with tarfile.open(path, "r") as tar:
                members = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
                blobs = {n: f.read() for n, f in members.items() if f is not None}
        except tarfile.TarError as e:
            raise Usage(f"{path} is not a release archive: {e}") from None

        def get(name: str) -> bytes | None:
            return blobs.get(name)
    else:
        raise Usage(f"no release at {path}", "pass the directory or archive `casectl release build` wrote")
    manifest, sig = get(MANIFEST), get(SIGNATURE)
    if manifest is None or sig is None:
        raise Usage(f"{path} holds no {MANIFEST} and {SIGNATURE}")
    try:
        doc = json.loads(manifest)
        names = [_safe(str(f[0])) for f in doc["files"]]
    except (ValueError, KeyError, TypeError, IndexError):
        raise ReleaseError(f"{path}: the manifest is not a release manifest") from None
    files: dict[str, bytes] = {}
    for n in names:
        data = get(f"{FILES}/{n}")
        if data is None:
            raise ReleaseError(f"{path} misses {FILES}/{n}")
        files[n] = data
    return Release(manifest, sig.decode().strip(), files)
