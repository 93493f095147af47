"""lockcase.creds under CPython, against the standard library's hmac and hashlib.pbkdf2_hmac."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockcase import creds
from tests.device import mp_test_creds as shared

salts = st.binary(min_size=0, max_size=24).map(bytes.hex)


def test_rfc4231_tables_agree_with_stdlib():
    # The literals the MicroPython run checks are themselves right.
    for key, data, want in shared.RFC4231:
        assert hmac.new(key, data, hashlib.sha256).hexdigest().startswith(want)
    for password, salt, n, dklen, want in shared.PBKDF2:
        assert hashlib.pbkdf2_hmac("sha256", password, salt, n, dklen).hex() == want
    for kind, secret, n, want in shared.STAFF:
        secret = secret.encode() if isinstance(secret, str) else secret
        assert (
            hashlib.pbkdf2_hmac(
                "sha256", kind.encode() + b":" + secret, bytes.fromhex(shared.SALT), n
            ).hex()
            == want
        )


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_stdlib(key, msg):
    assert creds.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@settings(max_examples=60)
@given(st.binary(max_size=100), st.binary(max_size=40), st.integers(1, 40), st.integers(1, 100))
def test_pbkdf2_matches_stdlib(password, salt, iterations, dklen):
    assert creds.pbkdf2_sha256(password, salt, iterations, dklen) == hashlib.pbkdf2_hmac(
        "sha256", password, salt, iterations, dklen
    )


@settings(max_examples=40)
@given(st.text(alphabet="0123456789", min_size=1, max_size=12), salts, st.integers(1, 30))
def test_hash_pin_is_pbkdf2_of_prefixed_pin(pin, salt_hex, iterations):
    want = hashlib.pbkdf2_hmac(
        "sha256", b"pin:" + pin.encode(), bytes.fromhex(salt_hex), iterations
    ).hex()
    assert creds.hash_pin(pin, salt_hex, iterations) == want


@settings(max_examples=40)
@given(st.binary(min_size=1, max_size=10), salts, st.integers(1, 30))
def test_hash_badge_is_pbkdf2_of_prefixed_uid(uid, salt_hex, iterations):
    want = hashlib.pbkdf2_hmac("sha256", b"badge:" + uid, bytes.fromhex(salt_hex), iterations).hex()
    assert creds.hash_badge(uid, salt_hex, iterations) == want
    assert creds.hash_badge(uid.hex().upper(), salt_hex, iterations) == want


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_equal_is_equality(a, b):
    assert creds.equal(a, b) == (a == b)
    assert creds.equal(a, a)


def test_bytes_of_an_int_are_refused():
    # bytes(1234) would be 1234 zero bytes: a PIN passed as a number must not hash as that.
    with pytest.raises(TypeError):
        creds.hash_pin(1234, shared.SALT, 1)


@settings(max_examples=25)
@given(
    st.lists(
        st.text(alphabet="0123456789", min_size=4, max_size=8), min_size=1, max_size=5, unique=True
    ),
    st.text(alphabet="0123456789", min_size=4, max_size=8),
    salts,
)
def test_staff_creds_find_the_right_id(pins, guess, salt_hex):
    cfg = {
        "salt": salt_hex,
        "iter": 2,
        "pins": [
            {"id": f"s{i}", "hash": creds.hash_pin(p, salt_hex, 2)} for i, p in enumerate(pins)
        ],
        "badges": [],
    }
    sc = creds.StaffCreds(cfg)
    for i, p in enumerate(pins):
        assert sc.check_pin(p) == f"s{i}"
    assert sc.check_pin(guess) == (f"s{pins.index(guess)}" if guess in pins else None)


def test_provisioned_hash_is_accepted_by_the_case():
    # What the provisioning tool writes (CPython) is what the firmware checks.
    cfg = {
        "salt": shared.SALT,
        "iter": 1000,
        "pins": [{"id": "mgr", "hash": creds.hash_pin("4321", shared.SALT, 1000)}],
        "badges": [
            {"id": "mgr", "hash": creds.hash_badge(bytes.fromhex("04a1b2c3"), shared.SALT, 1000)}
        ],
    }
    sc = creds.StaffCreds(cfg)
    assert sc.check_pin("4321") == "mgr"
    assert sc.check_badge(bytes.fromhex("04a1b2c3")) == "mgr"
    assert sc.check_pin("4322") is None


@pytest.mark.parametrize("name", sorted(n for n in dir(shared) if n.startswith("test_")))
def test_device_tables_under_cpython(name):
    getattr(shared, name)()
