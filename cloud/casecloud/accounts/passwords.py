"""Console passwords: argon2id through argon2-cffi, and the rules a new password must meet.

Parameters: RFC 9106's second recommended set, argon2id with t=3 passes over m=64 MiB and p=4
lanes, a 16-byte salt and a 32-byte hash (argon2-cffi's RFC_9106_LOW_MEMORY profile). One hash or
check takes about 0.15-0.2 s on two cores and 64 MiB of memory, so at most `MAX_CONCURRENT` run at
once: a burst of logins waits rather than taking the process's memory. The parameters are written
into each PHC string ($argon2id$v=19$m=65536,t=3,p=4$...); a hash made with older parameters is
re-made at the next good login (`needs_rehash`).
"""

from __future__ import annotations

import secrets
import threading
from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # far above any passphrase; bounds the work one request can ask for
MAX_CONCURRENT = 4

_hasher = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)


class Rejected(ValueError):
    """A new password that breaks a rule; the message says which."""


def check_rules(password: str, *, email: str, display_name: str = "") -> None:
    """At least MIN_LENGTH characters, and not built from the user's own email or name: the
    local part of the email (or the name) of 4+ characters must not appear in it."""
    if len(password) < MIN_LENGTH:
        raise Rejected(f"password: at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise Rejected(f"password: at most {MAX_LENGTH} characters")
    if "\x00" in password:
        raise Rejected("password: must not contain a NUL character")
    low = password.casefold()
    local = email.split("@", 1)[0].casefold()
    words = [email.casefold(), local, *(w.casefold() for w in display_name.split())]
    if any(len(w) >= 4 and w in low for w in words):
        raise Rejected("password: must not contain your email address or name")


def hash_password(password: str) -> str:
    """The PHC string to store ($argon2id$...)."""
    with _slots:
        return _hasher.hash(password)


def verify(stored: str, password: str) -> bool:
    """True when `password` matches the stored hash. A malformed stored hash is a mismatch."""
    with _slots:
        try:
            return _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def verify_dummy(password: str) -> bool:
    """The same work as `verify` for a login whose account does not exist, is disabled or locked,
    so that its answer takes as long as a wrong password's (login.py). Always False."""
    verify(_dummy_hash(), password)
    return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


@cache
def _dummy_hash() -> str:
    """A hash of a random password with the current parameters, made once per process."""
    return hash_password(secrets.token_urlsafe(16))
