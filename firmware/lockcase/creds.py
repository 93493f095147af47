# Staff credentials: PINs and badge UIDs are stored only as salted PBKDF2-HMAC-SHA256 hashes, so
# a config.json read off a stolen case does not give away the PINs of the whole store.
#
# MicroPython has hashlib.sha256 but neither hmac nor pbkdf2_hmac, so both are built here. The
# provisioning tool imports hash_pin/hash_badge from this module under CPython: the same code on
# both interpreters is what guarantees the case accepts what was provisioned.

import gc
import hashlib
from binascii import hexlify, unhexlify

from lockcase.compat import const

_BLOCK = const(64)  # SHA-256 block size
_IPAD = const(0x36)
_OPAD = const(0x5C)


def _bytes(x):
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("expected str or bytes")  # bytes(1234) would silently be 1234 zero bytes


def _pads(key):
    key = _bytes(key)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (_BLOCK - len(key))
    return bytes(b ^ _IPAD for b in key), bytes(b ^ _OPAD for b in key)


def _hmac(ipad, opad, msg):
    # No hash .copy() on MicroPython, so the padded key is rehashed each time.
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


# The pads of the last key hmac_sha256 was given: the case signs and checks every cloud message
# with its one key, whose pads (three 64-byte copies) were made again for each. Never a PIN's
# (pbkdf2_sha256 keeps its own), so no PIN outlives its check in RAM.
_key = None
_key_pads = (b"", b"")


def hmac_sha256(key, *msg):
    """HMAC-SHA-256 of msg, given whole or in parts (hashed in turn: no joined copy is made)."""
    global _key, _key_pads
    if key is not _key or type(key) is not bytes:  # a bytearray could change under the cache
        _key_pads = _pads(key)
        _key = key if type(key) is bytes else None
    ipad, opad = _key_pads
    inner = hashlib.sha256(ipad)
    for m in msg:
        try:
            inner.update(m)  # MicroPython hashes a str's UTF-8 bytes where they are
        except TypeError:  # CPython wants bytes (and an int is refused by _bytes)
            inner.update(_bytes(m))
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def pbkdf2_sha256(password, salt, iterations, dklen=32):
    """RFC 8018 PBKDF2 with HMAC-SHA-256."""
    if iterations < 1 or dklen < 1:
        raise ValueError("iterations and dklen must be positive")
    ipad, opad = _pads(password)
    salt = _bytes(salt)
    out = b""
    block = 1
    # Each round leaves some 400 bytes of garbage: under the running case's gc.threshold(4096)
    # (lockcase.startup) a badge or PIN check of 1,000 rounds ran about 100 collections, and a
    # staff badge's tap to coil went from 9 to 41 ms p50 on the Unix port (make bench), more on a
    # chip. The threshold is off for the check: the heap still collects when it is full, and the
    # garbage is all small and short-lived. (CPython, for casectl, has no gc.threshold.)
    th = getattr(gc, "threshold", None)
    was = th() if th is not None else -1
    if th is not None:
        th(-1)
    try:
        while len(out) < dklen:
            u = _hmac(ipad, opad, salt + block.to_bytes(4, "big"))
            # XOR of the rounds as one big int: one operation per round instead of 32 byte ops.
            acc = int.from_bytes(u, "big")
            for _ in range(iterations - 1):
                u = _hmac(ipad, opad, u)
                acc ^= int.from_bytes(u, "big")
            out += acc.to_bytes(32, "big")
            block += 1
    finally:
        if th is not None:
            th(was)
    return out[:dklen]


def equal(a, b):
    """Constant-time comparison: the time taken does not depend on where a and b differ."""
    a = _bytes(a)
    b = _bytes(b)
    diff = len(a) ^ len(b)
    if diff:
        b = a  # still walk a whole input so a length mismatch costs the same
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _uid(uid):
    # Readers hand over raw bytes; the config tools and logs write UIDs as hex.
    if isinstance(uid, str):
        return unhexlify(uid)
    return _bytes(uid)


def _hash(kind, secret, salt_hex, iterations):
    return pbkdf2_sha256(kind + secret, unhexlify(salt_hex), iterations)


def hash_pin(pin, salt_hex, iterations):
    # The domain prefixes keep a PIN from ever matching a badge whose UID has the same bytes.
    return hexlify(_hash(b"pin:", _bytes(pin), salt_hex, iterations)).decode()


def hash_badge(uid_bytes, salt_hex, iterations):
    return hexlify(_hash(b"badge:", _uid(uid_bytes), salt_hex, iterations)).decode()


def _entries(items):
    out = []
    for e in items or ():
        try:
            h = unhexlify(e["hash"])
            ident = e["id"]
        except (KeyError, TypeError, ValueError):
            continue  # a malformed entry can never match; config validation reports it
        if len(h) == 32:
            out.append((ident, h))
    return out


class StaffCreds:
    def __init__(self, staff_cfg):
        cfg = staff_cfg or {}
        self._salt = cfg.get("salt", "")
        self._iter = cfg.get("iter", 1000)
        self._pins = _entries(cfg.get("pins"))
        self._badges = _entries(cfg.get("badges"))
        self.v = cfg.get("v", 0)  # the cloud's state version this set came with

    def _check(self, kind, secret, entries):
        if not entries:
            return None
        try:
            digest = _hash(kind, secret, self._salt, self._iter)
        except (TypeError, ValueError):
            return None
        found = None
        # Every entry is compared, match or not, so the time does not tell which one matched.
        for ident, h in entries:
            if equal(digest, h) and found is None:
                found = ident
        return found

    def check_pin(self, pin):
        if not isinstance(pin, str) or not pin:
            return None
        return self._check(b"pin:", pin.encode(), self._pins)

    def check_badge(self, uid):
        try:
            uid = _uid(uid)
        except (TypeError, ValueError):
            return None
        if not uid:
            return None
        return self._check(b"badge:", uid, self._badges)
