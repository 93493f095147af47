"""The release store: a release is uploaded as its manifest (the exact bytes signed) and signature,
checked at once against the fleet's release public keys (settings.release_keys), then file by file,
each checked against the manifest's size and sha256. It is `ready`, and may be rolled out, only
once every file is in. Nothing a case is ever sent comes from anywhere but these checked bytes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casecloud.models import Release, ReleaseFile
from lockcase.ota import manifest as case_manifest  # one set of limits: the case's own checks

HEX64: Final = re.compile(r"[0-9a-f]{64}")
# The boards a case names itself by (board.NAME), and the .mpy format each runs: the cloud refuses
# a release no case could import rather than let a whole rollout be refused case by case.
BOARDS: Final = frozenset({"esp32s3", "picow", "sim"})
MPY_VERSIONS: Final = frozenset({6})  # the low byte of sys.implementation._mpy (MicroPython >= 1.22)
MAX_FILES: Final = 255  # (a manifest of the case's 16 KiB holds fewer)


class Refused(ValueError):
    """An upload the store will not take; the message says why."""


class Conflict(Refused):
    pass


def version_key(v: str) -> tuple[int, ...]:
    return case_manifest.version(v) or ()


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
    """The manifest's fields, checked first exactly as a case checks them (the firmware's own
    lockcase/ota/manifest.py: its size, paths, versions, entries, main.py), then for what a case
    cannot judge alone: a known board and .mpy format, a floor not above the version. Refused says
    which is wrong."""
    if len(manifest) > case_manifest.MAX_BYTES:
        raise Refused(f"manifest over {case_manifest.MAX_BYTES} bytes (what a case reads)")
    try:
        d = case_manifest.parse(manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(f"manifest: {e or 'not JSON'} (a case would refuse it)") from None
    board, mpy = d["board"], d["mpy"]
    if board not in BOARDS:
        raise Refused(f"manifest: unknown board {board!r} (known: {', '.join(sorted(BOARDS))})")
    if (mpy & 0xFF) not in MPY_VERSIONS or mpy >> 10:
        raise Refused(f"manifest: unknown .mpy ABI {mpy!r} (bytecode of .mpy version "
                      f"{', '.join(map(str, sorted(MPY_VERSIONS)))}, no arch bits)")
    if version_key(d["floor"]) > version_key(d["version"]):
        raise Refused("manifest: floor is above the release's own version")
    if len(d["files"]) > MAX_FILES:
        raise Refused(f"manifest: more than {MAX_FILES} files")
    files = [(str(p), int(n), str(h)) for p, n, h in d["files"]]
    return Manifest(d["rel"], d["version"], board, mpy, d["min"], d["floor"], files)


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
