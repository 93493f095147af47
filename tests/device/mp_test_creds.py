# lockcase.creds under MicroPython, against published vectors and values from CPython's hmac and
# hashlib.pbkdf2_hmac (tests/host/test_creds.py checks the same tables under CPython, so the
# provisioning tool and the case agree on every hash).
from binascii import hexlify

from lockcase import creds

# RFC 4231 section 4: (key, data, HMAC-SHA-256 hex; case 5 is truncated to 128 bits)
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]

# (password, salt, iterations, dklen, hex): RFC 7914 section 11 and the widely used
# PBKDF2-HMAC-SHA256 set (checked against hashlib.pbkdf2_hmac on the host).
PBKDF2 = [
    (
        b"passwd",
        b"salt",
        1,
        64,
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
    ),
    (
        b"password",
        b"salt",
        1,
        32,
        "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
    ),
    (
        b"password",
        b"salt",
        2,
        32,
        "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
    ),
    (
        b"password",
        b"salt",
        4096,
        32,
        "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
    ),
    (
        b"passwordPASSWORDpassword",
        b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
        4096,
        40,
        "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1c635518c7dac47e9",
    ),
    (b"pass\x00word", b"sa\x00lt", 4096, 16, "89b69d0516f829893c696226650a8687"),
]

SALT = "5f3a9c0e7b1d4286a0c4e9f21b7d3e68"
UID = b"\x04\xa1\xb2\xc3\xd4\xe5\xf6"
# (kind, secret, iterations, hex) = hashlib.pbkdf2_hmac("sha256", b"<kind>:" + secret, salt, iterations)
STAFF = [
    ("pin", "1234", 1000, "244f07226e8ee5d5fe10100c12bbc0bfdf556c3dbf8ae8a5b7dfb2221d627e2f"),
    ("pin", "987654", 1000, "89ebd273dd5d06452f7abca4a517898e5553f2248a2d461665b36668c9ffd5e7"),
    ("pin", "1234", 1, "5aa0c189b060e1ed03ee4d42f58f5c6cfa0fc52459023e1e6dfc095bf878b983"),
    ("badge", UID, 1000, "196a3b35006aa1b8bcc0a8ac34f6061f186a810499c303567033cf36fac1a913"),
]


def _hex(b):
    return hexlify(b).decode()


def _cfg(iterations=1000):
    return {
        "salt": SALT,
        "iter": iterations,
        "pins": [
            {"id": "ana", "hash": STAFF[0][3]},
            {"id": "bo", "hash": STAFF[1][3]},
            {"id": "broken", "hash": "not hex"},
            {"id": "short", "hash": "abcd"},
        ],
        "badges": [{"id": "cy", "hash": STAFF[3][3]}],
    }


def test_hmac_rfc4231():
    for key, data, want in RFC4231:
        got = _hex(creds.hmac_sha256(key, data))
        assert got[: len(want)] == want, (key, got)


def test_hmac_accepts_text():
    assert creds.hmac_sha256("Jefe", "what do ya want for nothing?") == creds.hmac_sha256(
        b"Jefe", b"what do ya want for nothing?"
    )


def test_pbkdf2_vectors():
    for password, salt, iterations, dklen, want in PBKDF2:
        assert _hex(creds.pbkdf2_sha256(password, salt, iterations, dklen)) == want, (
            password,
            iterations,
        )


def test_pbkdf2_rejects_zero_iterations():
    try:
        creds.pbkdf2_sha256(b"p", b"s", 0)
    except ValueError:
        return
    raise AssertionError("0 iterations accepted")


def test_hash_pin_and_badge_match_cpython():
    for kind, secret, iterations, want in STAFF:
        fn = creds.hash_pin if kind == "pin" else creds.hash_badge
        assert fn(secret, SALT, iterations) == want, (kind, secret)
    assert creds.hash_badge(_hex(UID), SALT, 1000) == STAFF[3][3]


def test_pin_and_badge_are_domain_separated():
    assert creds.hash_pin("1234", SALT, 1) != creds.hash_badge(b"1234", SALT, 1)


def test_equal():
    assert creds.equal(b"abc", b"abc")
    assert not creds.equal(b"abc", b"abd")
    assert not creds.equal(b"abc", b"ab")
    assert not creds.equal(b"", b"a")
    assert creds.equal(b"", b"")
    assert creds.equal("abc", b"abc")


def test_check_pin():
    sc = creds.StaffCreds(_cfg())
    assert sc.check_pin("1234") == "ana"
    assert sc.check_pin("987654") == "bo"
    assert sc.check_pin("1235") is None
    assert sc.check_pin("") is None
    assert sc.check_pin(None) is None
    assert sc.check_pin(1234) is None


def test_check_badge():
    sc = creds.StaffCreds(_cfg())
    assert sc.check_badge(UID) == "cy"
    assert sc.check_badge(bytearray(UID)) == "cy"
    assert sc.check_badge(_hex(UID)) == "cy"
    assert sc.check_badge(b"\x04\xa1\xb2\xc3\xd4\xe5\xf7") is None
    assert sc.check_badge(b"") is None
    assert sc.check_badge("zz") is None
    assert sc.check_badge(None) is None
    # a PIN typed as a badge never matches: the hashes are domain-separated
    assert sc.check_badge(b"1234") is None


def test_wrong_salt_or_iterations_match_nothing():
    cfg = _cfg()
    cfg["salt"] = "00" + SALT[2:]
    assert creds.StaffCreds(cfg).check_pin("1234") is None
    assert creds.StaffCreds(_cfg(999)).check_pin("1234") is None
    bad = _cfg()
    bad["salt"] = "xyz"
    assert creds.StaffCreds(bad).check_pin("1234") is None
    bad["salt"] = SALT
    bad["iter"] = 0
    assert creds.StaffCreds(bad).check_pin("1234") is None


def test_empty_config():
    for cfg in (None, {}, {"salt": "", "iter": 1000, "pins": [], "badges": []}):
        sc = creds.StaffCreds(cfg)
        assert sc.check_pin("1234") is None
        assert sc.check_badge(UID) is None


def test_every_entry_is_compared():
    calls = []
    real = creds.equal

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    creds.equal = counting
    try:
        cfg = _cfg(1)
        cfg["pins"] = [{"id": f"p{i}", "hash": creds.hash_pin("1234", SALT, 1)} for i in range(5)]
        assert creds.StaffCreds(cfg).check_pin("1234") == "p0"  # first match wins...
        assert len(calls) == 5  # ...but all five were compared
        del calls[:]
        assert creds.StaffCreds(cfg).check_pin("0000") is None
        assert len(calls) == 5
    finally:
        creds.equal = real


def test_hmac_in_parts_and_its_cached_pads():
    # The codec hashes topic, newline and body in turn, with the cloud key's pads kept between
    # messages (issue 10): the parts give the whole message's MAC, and a key changed in place (a
    # bytearray) or another key is never signed with the pads of the one before.
    key = bytes(range(32))
    whole = creds.hmac_sha256(key, b"lockcase/v1/s1/c1/req\n{}")
    assert creds.hmac_sha256(key, "lockcase/v1/s1/c1/req", "\n", "{}") == whole
    assert creds.hmac_sha256(bytes(range(1, 33)), "lockcase/v1/s1/c1/req\n{}") != whole
    assert creds.hmac_sha256(key, "lockcase/v1/s1/c1/req\n{}") == whole
    k = bytearray(key)
    before = creds.hmac_sha256(k, b"m")
    k[0] ^= 1
    after = creds.hmac_sha256(k, b"m")  # the same object, straight after: no other key between
    assert before == creds.hmac_sha256(key, b"m") and after != before


def test_a_check_runs_without_the_cases_collection_threshold_and_restores_it():
    # Under the running case's gc.threshold(4096) a 1,000-round check ran ~100 collections (a
    # staff badge's tap 9 -> 41 ms p50 in make bench): the threshold is off for the rounds, and
    # back afterwards, also when a round fails.
    import gc

    if not hasattr(gc, "threshold"):  # CPython (test_creds runs these there too): no threshold to hold
        assert creds.pbkdf2_sha256(b"pw", b"salt", 10) == creds.pbkdf2_sha256(b"pw", b"salt", 10)
        return
    seen = []
    real = creds._hmac

    def spy(ipad, opad, msg):
        seen.append(gc.threshold())
        if len(seen) == 5 and fail[0]:
            raise MemoryError
        return real(ipad, opad, msg)

    fail = [False]
    want = creds.pbkdf2_sha256(b"pw", b"salt", 10)
    gc.threshold(4096)
    creds._hmac = spy
    try:
        assert creds.pbkdf2_sha256(b"pw", b"salt", 10) == want
        assert seen and all(t == -1 for t in seen), seen
        assert gc.threshold() == 4096
        fail[0] = True
        seen.clear()
        try:
            creds.pbkdf2_sha256(b"pw", b"salt", 10)
            assert False, "the failing round did not raise"
        except MemoryError:
            pass
        assert gc.threshold() == 4096
    finally:
        creds._hmac = real
        gc.threshold(-1)

