"""Writes ota_v1.json: signed test releases for the case's over-the-air update (docs/ota.md).

Signed on the host with `cryptography`'s Ed25519 (independent of the case's verifier, so a bug in
the verifier cannot also bend the vectors) from a fixed seed: Ed25519 is deterministic, so the
file is the same on every run and tests/host/test_ota_vectors.py checks that it still is. The
device tests (tests/device/mp_test_ota*.py) read it under MicroPython.

Run: .venv/bin/python tests/vectors/make_ota_v1.py
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

OUT = Path(__file__).with_name("ota_v1.json")
SEED = hashlib.sha256(b"lockcase test release key").digest()
OTHER_SEED = hashlib.sha256(b"lockcase some other key").digest()
MPY = 6 | (3 << 8)  # the Unix port's .mpy format (version 6.3): what mpy-cross emits today


def _bytes(label: str, n: int) -> bytes:
    out = b""
    block = label.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


# Tiny stand-ins for a firmware's files: the update never looks inside them. main.py is real
# MicroPython, so a test that switches to the release can see it run.
FILES = {
    "main.py": b"# a test release's main.py\nRELEASE = 'r2'\n\n\ndef main():\n    print('RELEASE r2 main')\n",
    # the board contract's part that boot.py uses, so a test can watch boot.py switch to it
    "board.py": (b"NAME = 'sim'\nSAFE = []\nFIRST = []\n\n\ndef lock_safe():\n    SAFE.append(1)\n\n\n"
                 b"def adopt(first):\n    FIRST.append(first)\n\n\ndef fatal(exc):\n    raise exc\n"),
    "lockcase/app.mpy": _bytes("app", 1500),
    "lockcase/ota/x.mpy": _bytes("x", 700),
    "umqtt/simple.mpy": _bytes("umqtt", 1100),
}


def key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_hex(k: Ed25519PrivateKey) -> str:
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def manifest(rel: str = "r2", **over: Any) -> bytes:
    m: dict[str, Any] = {
        "v": 1, "rel": rel, "version": "0.2.0", "board": "sim", "mpy": MPY, "min": "0.1.0", "floor": "0.1.0",
        "files": [[p, len(b), hashlib.sha256(b).hexdigest()] for p, b in sorted(FILES.items())],
    }
    m.update(over)
    return json.dumps(m, separators=(",", ":")).encode()


def release(name: str, man: bytes, seed: bytes = SEED, files: dict[str, bytes] | None = None,
            why: str | None = None, st: str | None = None) -> dict[str, Any]:
    rel = json.loads(man)["rel"]
    return {
        "name": name, "rel": rel, "manifest": man.decode(), "sig": key(seed).sign(man).hex(),
        "files": {p: base64.b64encode(b).decode() for p, b in (files or FILES).items()},
        "st": st, "why": why,
    }


def build() -> dict[str, Any]:
    tampered = dict(FILES)
    tampered["lockcase/ota/x.mpy"] = b"X" + FILES["lockcase/ota/x.mpy"][1:]
    return {
        "key": public_hex(key(SEED)),
        "other_key": public_hex(key(OTHER_SEED)),
        "releases": [
            release("good", manifest()),
            release("good3", manifest("r3", version="0.3.0", floor="0.3.0")),
            release("tampered", manifest(), files=tampered, st="failed", why="hash lockcase/ota/x.mpy"),
            release("wrong_key", manifest(), seed=OTHER_SEED, st="refused", why="bad signature"),
            release("other_board", manifest(board="picow"), st="refused", why="board picow"),
            release("other_mpy", manifest(mpy=5), st="refused", why="mpy 5"),
            release("below_min", manifest(min="0.2.0"), st="refused", why="below min 0.2.0"),
            release("below_floor", manifest(version="0.1.5"), st="refused", why="below floor 0.2.0"),
            release("path_escape", manifest(files=[["../config.json", 2, hashlib.sha256(b"{}").hexdigest()],
                                                   ["main.py", 1, hashlib.sha256(b"x").hexdigest()]]),
                    st="refused", why="manifest: bad file entry"),
        ],
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
