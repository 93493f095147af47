"""Case keys encrypted at rest: whoever reads the database (a backup, a replica, a stolen disk)
does not get the keys that sign unlocks.

Each case's HMAC key is stored sealed with Fernet (AES-128-CBC + HMAC-SHA256, from
`cryptography`) under the key-encryption keys of the settings (`key_encryption_keys`, newest
first; by default one generated into the data dir, owner-only). `MultiFernet` opens a key sealed
under any of them and seals under the first, so rotation is: put a new key first, restart, call
`rewrap` (the admin API's `POST /v1/admin/keys/rewrap`), then drop the old key.

The keyring travels with the runtime's session factory (`Session.info`), so whatever has a
session (registry, channel) seals and opens keys without another argument threaded through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from casecloud.models import Case

INFO = "casecloud.keyring"
log = logging.getLogger("casecloud.keyring")


class KeyringError(Exception):
    pass


class Keyring:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyringError("no key-encryption key")
        try:
            self._f = MultiFernet([Fernet(k) for k in keys])
        except ValueError as e:  # not 32 url-safe base64 bytes: say which setting, not the key
            raise KeyringError(f"key_encryption_keys: {e}") from None
        self._primary = Fernet(keys[0])

    def seal(self, key: bytes) -> str:
        return self._primary.encrypt(key).decode()

    def open(self, sealed: str) -> bytes:
        try:
            return self._f.decrypt(sealed.encode())
        except InvalidToken:
            raise KeyringError("a case key is sealed under a key-encryption key that is not configured") from None

    def rotate(self, sealed: str) -> str:
        return self._f.rotate(sealed.encode()).decode()


def of(s: Session) -> Keyring:
    kr = s.info.get(INFO)
    if kr is None:
        raise KeyringError("this session has no keyring (make sessions with db.make_sessions(engine, keyring))")
    return kr


def case_key(s: Session, case: Case) -> bytes:
    """The case's HMAC key, in clear, for signing and checking now (never stored so)."""
    if case.key_sealed is None:
        raise KeyringError(f"case {case.id} has no sealed key (run seal_legacy)")
    return of(s).open(case.key_sealed)


def seal_legacy(s: Session) -> int:
    """Seal the keys of rows from before sealing (clear `key_hex`) and blank the clear column.
    Run at every start; a no-op once done. Returns how many were sealed."""
    kr = of(s)
    n = 0
    for cid, key_hex in s.execute(select(Case.id, Case.key_hex).where(Case.key_hex.is_not(None))).all():
        assert key_hex is not None
        s.execute(update(Case).where(Case.id == cid, Case.key_hex == key_hex)
                  .values(key_sealed=kr.seal(bytes.fromhex(key_hex)), key_hex=None))
        n += 1
    return n


def check(s: Session) -> None:
    """At start: every sealed case key opens under the configured keys. None opening is a
    misconfiguration (a key_encryption_key file lost and generated anew, a process given other
    keys than the rest), said now rather than by every message of every case failing: raises
    KeyringError. Some not opening (an old key dropped before `rewrap`) is logged, naming them."""
    kr = of(s)
    sealed = s.execute(select(Case.id, Case.key_sealed).where(Case.key_sealed.is_not(None))).all()
    shut = []
    for cid, key in sealed:
        try:
            kr.open(key or "")
        except KeyringError:
            shut.append(cid)
    if sealed and len(shut) == len(sealed):
        raise KeyringError(f"none of the {len(sealed)} case keys opens under the configured key-encryption keys: "
                           "set key_encryption_keys (or restore <data_dir>/key_encryption_key) to the keys "
                           "the cases were sealed under")
    if shut:
        log.error("%d case keys do not open under the configured key-encryption keys (sealed under a key "
                  "dropped before rewrap?): %s", len(shut), ", ".join(shut[:20]))


def rewrap(s: Session) -> int:
    """Re-seal every case key under the first key-encryption key (after a rotation). Compare-and-set
    per row, so a rotate of the case key racing with this wins. Returns how many rows changed."""
    kr = of(s)
    n = 0
    for cid, sealed in s.execute(select(Case.id, Case.key_sealed).where(Case.key_sealed.is_not(None))).all():
        assert sealed is not None
        res = s.execute(update(Case).where(Case.id == cid, Case.key_sealed == sealed)
                        .values(key_sealed=kr.rotate(sealed)))
        n += int(getattr(res, "rowcount", 0) or 0)
    return n
