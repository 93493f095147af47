"""Stores, cases, members and staff credentials: the operations behind the admin API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud import keyring
from casecloud.adapters.loyalty import STATUSES, new_member_id
from casecloud.broker import password_hash
from casecloud.codec import ID_RE
from casecloud.models import Case, Member, Staff, Store
from casecloud.phones import to_e164
from casecloud.privacy import Hasher, last2


class Invalid(ValueError):
    pass


class Conflict(ValueError):
    pass


@dataclass(frozen=True)
class CaseSecrets:
    """Shown once, at registration or rotation: the cloud keeps the key but only a hash of the password."""

    key_hex: str
    mqtt_username: str
    mqtt_password: str


def create_store(s: Session, store_id: str, now: int, *, name: str = "", country: str = "US",
                 notify_url: str | None = None, guests_allowed: bool = True) -> Store:
    if not ID_RE.match(store_id):
        raise Invalid("store id: 1-32 of a-z 0-9 _ -, starting with a letter or digit")
    if len(country) != 2:
        raise Invalid("country: a two-letter ISO code")
    if s.get(Store, store_id) is not None:
        raise Conflict(f"store {store_id} exists")
    st = Store(id=store_id, name=name, country=country.upper(), notify_url=notify_url,
               guests_allowed=guests_allowed, created_at=now)
    s.add(st)
    s.flush()  # column defaults become visible on the object
    return st


def _new_secrets(case_id: str) -> tuple[CaseSecrets, str]:
    sec = CaseSecrets(secrets.token_bytes(32).hex(), case_id, secrets.token_urlsafe(24))
    return sec, password_hash(sec.mqtt_password)


def register_case(s: Session, store_id: str, case_id: str, now: int, *, name: str = "") -> tuple[Case, CaseSecrets]:
    if not ID_RE.match(case_id):
        raise Invalid("case id: 1-32 of a-z 0-9 _ -, starting with a letter or digit")
    if s.get(Store, store_id) is None:
        raise Invalid(f"no store {store_id}")
    if s.get(Case, case_id) is not None:
        raise Conflict(f"case {case_id} exists")
    sec, pw_hash = _new_secrets(case_id)
    case = Case(id=case_id, store_id=store_id, name=name, key_sealed=keyring.of(s).seal(bytes.fromhex(sec.key_hex)),
                mqtt_password_hash=pw_hash, created_at=now)
    s.add(case)
    s.flush()
    return case, sec


def rotate_case(s: Session, case_id: str) -> tuple[Case, CaseSecrets]:
    """New key and broker password. The seq counters carry on: messages signed with the old key no
    longer verify anyway, and a reset would make the case refuse the cloud's lower seqs as replays."""
    case = s.get(Case, case_id)
    if case is None:
        raise Invalid(f"no case {case_id}")
    sec, pw_hash = _new_secrets(case_id)
    case.key_sealed, case.mqtt_password_hash = keyring.of(s).seal(bytes.fromhex(sec.key_hex)), pw_hash
    case.key_hex = None  # a legacy clear key must not outlive its rotation
    case.key_version += 1
    # Not synced until it greets with the new key: what `casectl provision --force` waits for.
    case.synced = False
    return case, sec


def create_member(s: Session, h: Hasher, now: int, *, phone: str | None = None, country: str = "US",
                  card: str | None = None, status: str = "member", external_id: str | None = None
                  ) -> tuple[Member, str]:
    """Returns the member and its app token (shown once; only its hash is kept)."""
    if status not in STATUSES:
        raise Invalid("status: member, trusted or flagged")
    m = Member(id=new_member_id(), external_id=external_id, status=status, created_at=now)
    if phone is not None:
        e164 = to_e164(phone, country)
        if e164 is None:
            raise Invalid("phone: not a valid number")
        m.phone_hash = h.phone(e164)
        if s.scalars(select(Member).where(Member.phone_hash == m.phone_hash)).first():
            raise Conflict("a member has this phone number")
        m.phone_last2 = last2(e164)
    if card:
        m.card_hash = h.token(card)
    if external_id and s.scalars(select(Member).where(Member.external_id == external_id)).first():
        raise Conflict("a member has this external id")
    app_token = "lt_" + secrets.token_urlsafe(24)
    m.app_token_hash = h.token(app_token)
    s.add(m)
    s.flush()
    return m, app_token


def set_member_status(s: Session, member_id: str, status: str) -> Member:
    if status not in STATUSES:
        raise Invalid("status: member, trusted or flagged")
    m = s.get(Member, member_id)
    if m is None:
        raise Invalid(f"no member {member_id}")
    m.status = status
    return m


def add_staff(s: Session, store_id: str, kind: str, hash_hex: str, now: int, label: str = "") -> Staff:
    if kind not in ("pin", "badge"):
        raise Invalid("kind: pin or badge")
    if len(hash_hex) != 64 or any(c not in "0123456789abcdef" for c in hash_hex):
        raise Invalid("hash: 64 lowercase hex digits, computed as for config.json's staff entries")
    if s.get(Store, store_id) is None:
        raise Invalid(f"no store {store_id}")
    st = Staff(id="s_" + secrets.token_hex(6), store_id=store_id, kind=kind, hash=hash_hex, label=label,
               created_at=now)
    s.add(st)
    s.flush()
    return st
