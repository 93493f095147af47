"""The release store: a release is uploaded as its manifest (the exact bytes signed) and signature,
checked at once against the fleet's release public keys (settings.release_keys), then file by file,
each checked against the manifest's size and sha256. It is `ready`, and may be rolled out, only
once every file is in. Nothing a case is ever sent comes from anywhere but these checked bytes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casecloud.models import Release, ReleaseFile

REL_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
VERSION_RE: Final = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})")
HEX64: Final = re.compile(r"[0-9a-f]{64}")
# The boards a case names itself by (board.NAME), and the .mpy format each runs: the cloud refuses
# a release no case could import rather than let a whole rollout be refused case by case.
BOARDS: Final = frozenset({"esp32s3", "picow", "sim"})
MPY_VERSIONS: Final = frozenset({6})  # the low byte of sys.implementation._mpy (MicroPython >= 1.22)
MAX_FILES: Final = 255
MAX_FILE_BYTES: Final = 256 * 1024
MAX_MANIFEST_BYTES: Final = 32 * 1024


class Refused(ValueError):
    """An upload the store will not take; the message says why."""


class Conflict(Refused):
    pass


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def keys(release_keys: list[str]) -> list[str]:
    """The configured release public keys, checked: 64 lowercase hex digits each."""
    out = [k.strip().lower() for k in release_keys]
    for k in out:
        if not HEX64.fullmatch(k):
            raise Refused("settings release_keys: each key is 64 hex digits (casectl release keygen's .pub)")
    return out


def signed_by(manifest: bytes, sig: str, release_keys: list[str]) -> str | None:
    """The key among release_keys whose signature sig (128 lowercase hex) is, or None."""
    if not re.fullmatch(r"[0-9a-f]{128}", sig):
        return None
    for k in keys(release_keys):
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(k)).verify(bytes.fromhex(sig), manifest)
        except InvalidSignature:
            continue
        return k
    return None


@dataclass(frozen=True)
class Manifest:
    rel: str
    version: str
    board: str
    mpy: int
    min: str
    floor: str
    files: list[tuple[str, int, str]]


def parse(manifest: bytes) -> Manifest:
    """The manifest's fields, each checked (docs/ota.md, "Protocol"); Refused says which is wrong."""
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise Refused(f"manifest over {MAX_MANIFEST_BYTES} bytes")
    try:
        d = json.loads(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused("manifest: not UTF-8 JSON") from None
    if not isinstance(d, dict) or d.get("v") != 1:
        raise Refused("manifest: not a version 1 manifest (v: 1)")
    rel, version, board, mpy = d.get("rel"), d.get("version"), d.get("board"), d.get("mpy")
    if not isinstance(rel, str) or not REL_RE.fullmatch(rel):
        raise Refused("manifest: rel must be 1-32 of a-z 0-9 . _ -, starting with a letter or digit")
    for name in ("version", "min", "floor"):
        v = d.get(name)
        if not isinstance(v, str) or not VERSION_RE.fullmatch(v):
            raise Refused(f"manifest: {name} must be x.y.z")
    if board not in BOARDS:
        raise Refused(f"manifest: unknown board {board!r} (known: {', '.join(sorted(BOARDS))})")
    if type(mpy) is not int or (mpy & 0xFF) not in MPY_VERSIONS or mpy >> 10:
        raise Refused(f"manifest: unknown .mpy ABI {mpy!r} (bytecode of .mpy version "
                      f"{', '.join(map(str, sorted(MPY_VERSIONS)))}, no arch bits)")
    assert isinstance(version, str)
    if version_key(d["floor"]) > version_key(version):
        raise Refused("manifest: floor is above the release's own version")
    files = d.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise Refused(f"manifest: files must list 1-{MAX_FILES} files")
    out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for f in files:
        if not (isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and type(f[1]) is int
                and isinstance(f[2], str)):
            raise Refused("manifest: each file is [path, size, sha256]")
        path, size, sha = f
        if (not path or len(path) > 200 or path.startswith("/") or "\\" in path or path in seen
                or any(part in ("", ".", "..") for part in path.split("/"))):
            raise Refused(f"manifest: bad or repeated file path {path[:60]!r}")
        if path == "boot.py":
            raise Refused("manifest: boot.py is not updated over the air (docs/ota.md)")
        if not 0 <= size <= MAX_FILE_BYTES or not HEX64.fullmatch(sha):
            raise Refused(f"manifest: {path}: size 0-{MAX_FILE_BYTES} and a sha256 of 64 lowercase hex digits")
        seen.add(path)
        out.append((path, size, sha))
    return Manifest(rel, version, board, mpy, d["min"], d["floor"], out)


def create(s: Session, manifest: bytes, sig: str, release_keys: list[str], now: int, by: str) -> Release:
    """A new release from its manifest and signature, verified; its files come next (put_file)."""
    if not keys(release_keys):
        raise Refused("no release public key is configured (settings release_keys): nothing can be verified")
    m = parse(manifest)
    key = signed_by(manifest, sig, release_keys)
    if key is None:
        raise Refused("the signature does not verify with any of the fleet's release keys")
    if s.get(Release, m.rel) is not None:
        raise Conflict(f"release {m.rel} exists already (a release id names one content)")
    floor_check(s, m)
    r = Release(id=m.rel, version=m.version, board=m.board, mpy=m.mpy, min_version=m.min, floor=m.floor,
                manifest=manifest, sig=sig, key=key, files=len(m.files), size=sum(f[1] for f in m.files),
                ready=False, created_by=by[:40], created_at=now)
    s.add(r)
    s.add_all(ReleaseFile(release_id=m.rel, idx=i, path=p, size=n, sha256=h) for i, (p, n, h) in enumerate(m.files))
    s.flush()
    return r


def highest_floor(s: Session, board: str) -> tuple[str, str] | None:
    """(floor, release) of the board's published releases with the highest floor, or None."""
    rows = list(s.execute(select(Release.floor, Release.id).where(Release.board == board)))
    return max(((f, r) for f, r in rows), key=lambda x: version_key(x[0]), default=None)


def floor_check(s: Session, m: Manifest) -> None:
    """A release may not lower the anti-rollback floor of its board's releases (a lower floor would
    let an old signed release back in where a case does not hold the highest itself). Its version
    is then not below it either: parse() refuses a floor above the version."""
    top = highest_floor(s, m.board)
    if top is None:
        return
    floor, rel = top
    if version_key(m.floor) < version_key(floor):
        raise Refused(f"manifest: floor {m.floor} is below {floor}, the floor of {rel} already published for "
                      f"{m.board}: build with --floor {floor} or higher")


def put_file(s: Session, rel: str, idx: int, data: bytes) -> Release:
    """File idx's bytes: refused unless they are the manifest's (size and sha256). The release is
    ready once every file is in. Putting the same bytes again changes nothing."""
    r = s.get(Release, rel)
    f = s.get(ReleaseFile, (rel, idx))
    if r is None or f is None:
        raise LookupError(f"no file {idx} in release {rel}")
    if len(data) != f.size or hashlib.sha256(data).hexdigest() != f.sha256:
        raise Refused(f"file {idx} ({f.path}) does not match the manifest's size and sha256")
    f.data = data
    s.flush()
    missing = s.scalar(select(func.count()).select_from(ReleaseFile)
                       .where(ReleaseFile.release_id == rel, ReleaseFile.data.is_(None))) or 0
    r.ready = missing == 0
    return r


def missing(s: Session, rel: str) -> list[int]:
    return list(s.scalars(select(ReleaseFile.idx).where(ReleaseFile.release_id == rel, ReleaseFile.data.is_(None))
                          .order_by(ReleaseFile.idx)))


def summary(r: Release) -> dict[str, Any]:
    return {"id": r.id, "version": r.version, "board": r.board, "mpy": r.mpy, "min": r.min_version,
            "floor": r.floor, "files": r.files, "size": r.size, "ready": r.ready, "key": r.key,
            "created_at": r.created_at, "created_by": r.created_by}
