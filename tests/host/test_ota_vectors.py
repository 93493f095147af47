"""The signed test releases of the case's OTA tests (tests/vectors/ota_v1.json) are what
tests/vectors/make_ota_v1.py writes, and check out with cryptography's own Ed25519: a verifier bug
on the case cannot hide behind a vector that was made to fit it."""

from __future__ import annotations

import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.vectors import make_ota_v1


def test_the_committed_vectors_are_current() -> None:
    assert json.loads(make_ota_v1.OUT.read_text()) == make_ota_v1.build()


def test_signatures_verify_with_cryptography_except_the_wrong_key() -> None:
    v = json.loads(make_ota_v1.OUT.read_text())
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["key"]))
    for r in v["releases"]:
        try:
            pub.verify(bytes.fromhex(r["sig"]), r["manifest"].encode())
            ok = True
        except InvalidSignature:
            ok = False
        assert ok is (r["name"] != "wrong_key"), r["name"]
