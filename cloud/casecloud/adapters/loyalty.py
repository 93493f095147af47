"""Who is a member: an interface, the built-in member table, and a webhook to the retailer."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from sqlalchemy import ColumnElement, String, Table, bindparam, select
from sqlalchemy.orm import Session

from casecloud import codec, db
from casecloud.models import Member
from casecloud.privacy import Hasher, last2

log = logging.getLogger("casecloud.loyalty")

STATUSES = ("member", "trusted", "flagged")
_EXT_MAX = cast(String, Member.__table__.c.external_id.type).length or 0  # the retailer's member id
_ANSWER_MAX = 64 * 1024  # a member id and a status: anything bigger is not an answer


class LoyaltyError(Exception):
    pass


@dataclass(frozen=True)
class Holder:
    """The member a token names, as its decision reads it (policy.py): a copy of the row, never
    written through. Read with Core, not as an ORM object: the ORM's own work on a query was
    most of what the lookup cost (~35 us of a lone card request)."""

    id: str
    status: str
    phone_last2: str | None

    @staticmethod
    def of(m: Member) -> Holder:
        return Holder(m.id, m.status, m.phone_last2)


class Loyalty(Protocol):
    def by_phone(self, s: Session, e164: str) -> Member | None: ...

    def by_token(self, s: Session, token: str, src: str) -> Holder | None:
        """src: nfc | card (the card_hash) or app (the app_token_hash)."""
        ...


def new_member_id() -> str:
    return "m_" + secrets.token_hex(8)


# A batch's tokens at once (prefetch), built once per extra column: building the statement cost
# as much as running it. One token (every lone request) is looked up by equality: an IN list costs
# its rendering at every execution (SQLAlchemy's post-compile step), ~20 us of a lone request.
_BY: dict[tuple[bool, bool, int], tuple[Any, ColumnElement[Any] | None]] = {}  # (app, one, id(also)) -> (Select, also)


_MEMBERS = cast(Table, Member.__table__)
# built once: building the select cost a typed number as much as running it
_BY_PHONE = select(Member).where(Member.phone_hash == bindparam("h"))


def _by_tokens(app: bool, hashes: list[str], also: ColumnElement[Any] | None) -> tuple[Any, dict[str, Any]]:
    """The statement for these hashes (rows: id, status, phone_last2, the hash[, also]), and its
    parameters."""
    one = len(hashes) == 1
    k = (app, one, id(also))
    if k not in _BY:
        c = _MEMBERS.c
        col = c.app_token_hash if app else c.card_hash
        stmt = select(c.id, c.status, c.phone_last2, col, *(() if also is None else (also,)))
        stmt = stmt.where(col == bindparam("hash") if one else col.in_(bindparam("hashes", expanding=True)))
        _BY[k] = (stmt, also)  # `also` kept alive with it: no other column can take its id
    return _BY[k][0], ({"hash": hashes[0]} if one else {"hashes": hashes})


def _stricter(a: Holder | None, b: Holder) -> Holder:
    """Of two members holding the same card or app token, the one that decides: a flagged one
    always (nothing unique in the table keeps a card from being given twice, and a flagged
    member's card must not open a case through another member's record), else the lower id,
    whatever order the database returns them in."""
    if a is None:
        return b
    if (a.status == "flagged") != (b.status == "flagged"):
        return a if a.status == "flagged" else b
    return a if a.id <= b.id else b


class BuiltinLoyalty:
    """Members kept in the cloud's own table (admin API)."""

    def __init__(self, hasher: Hasher) -> None:
        self._h = hasher

    def by_phone(self, s: Session, e164: str) -> Member | None:
        # No autoflush: nothing this transaction holds unflushed changes who has a number (members
        # are written in transactions of their own: the admin API's), while a flush here wrote the
        # batch's earlier challenges one at a time instead of with one insert at the commit.
        return s.scalars(_BY_PHONE, {"h": self._h.phone(e164)}, execution_options={"autoflush": False}).first()

    def _hash(self, s: Session, token: str) -> str:
        """The token's keyed hash, computed once per transaction (memory only, like the token)."""
        hashes: dict[str, str] = db.scratch(s).setdefault("token_hashes", {})
        h = hashes.get(token)
        if h is None:
            h = hashes[token] = self._h.token(token)
        return h

    def by_token(self, s: Session, token: str, src: str) -> Holder | None:
        app = src == "app"
        h = self._hash(s, token)
        # A batch of requests often names one card many times: look it up once per transaction.
        # (Nothing in a transaction that reads members this way writes them: the admin API's
        # changes come in transactions of their own.)
        cache: dict[tuple[bool, str], Holder | None] = db.scratch(s).setdefault("members_by_token", {})
        if (app, h) not in cache:
            stmt, by = _by_tokens(app, [h], None)
            held: Holder | None = None
            rows: Iterable[tuple[Any, ...]] = s.connection().execute(stmt, by)
            for row in rows:
                held = _stricter(held, Holder(row[0], row[1], row[2]))
            cache[(app, h)] = held
        return cache[(app, h)]

    def prefetch(self, s: Session, tokens: Iterable[tuple[str, str]], also: ColumnElement[Any] | None = None,
                 params: Mapping[str, Any] | None = None) -> list[tuple[Holder, Any]]:
        """Look up a batch's (token, src) pairs in one query a kind (cards, app tokens) for
        `by_token` to find in this transaction; returns the members found (batch.py), each with
        the value of `also`, a column the same query computes for the member's row (batch.py: the
        member's rate window, which would otherwise cost a statement of its own; bound by
        `params`), or None without one."""
        cache: dict[tuple[bool, str], Holder | None] = db.scratch(s).setdefault("members_by_token", {})
        found: list[tuple[Holder, Any]] = []
        toks = list(tokens)
        for app in (False, True):
            want = {self._hash(s, t) for t, src in toks if (src == "app") == app} - {h for a, h in cache if a == app}
            if not want:
                continue
            stmt, by = _by_tokens(app, sorted(want), also)
            rows: Iterable[tuple[Any, ...]] = s.connection().execute(stmt, {**(params or {}), **by})
            for row in rows:
                m = Holder(row[0], row[1], row[2])
                cache[(app, row[3])] = _stricter(cache.get((app, row[3])) if row[3] not in want else None, m)
                want.discard(row[3])
                found.append((m, row[4] if also is not None else None))
            for h in want:
                cache[(app, h)] = None
        return found


class WebhookLoyalty:
    """Asks the retailer's system, then mirrors the answer into the member table.

    POST <url> {"phone": "+1..."} or {"token": "...", "src": "nfc"} with header
    X-LockCase-Signature: hex HMAC-SHA256(secret, body). Answer 200 {"member": "<their id>",
    "status": "member|trusted|flagged"} or 404. The mirror keeps hashes only, so erasure and
    flagging work the same as with built-in members; the status is refreshed on every lookup.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        hasher: Hasher,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url
        self._secret = secret
        self._h = hasher
        self._clock = clock
        self._client = httpx.Client(timeout=5.0, transport=transport)
        self._local = BuiltinLoyalty(hasher)

    def _ask(self, payload: dict[str, str]) -> tuple[str, str] | None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        sig = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        try:
            r = self._client.post(
                self._url,
                content=body,
                headers={"content-type": "application/json", "x-lockcase-signature": sig},
            )
        except httpx.HTTPError as e:
            raise LoyaltyError(f"loyalty webhook unreachable: {type(e).__name__}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise LoyaltyError(f"loyalty webhook: HTTP {r.status_code}")
        try:  # the retailer's system is outside too: the parser every consumer uses (codec.parse)
            data = codec.parse(r.content, max_bytes=_ANSWER_MAX)
        except codec.Rejected:
            raise LoyaltyError("loyalty webhook: malformed answer") from None
        if not isinstance(data, dict):
            raise LoyaltyError("loyalty webhook: malformed answer")
        ext, status = data.get("member"), data.get("status")
        # an id we could not store (too long, or a NUL that PostgreSQL refuses) is malformed too
        if not isinstance(ext, str) or len(ext) > _EXT_MAX or "\x00" in ext or status not in STATUSES:
            raise LoyaltyError("loyalty webhook: malformed answer")
        return ext, status

    def _mirror(self, s: Session, ext: str, status: str) -> Member:
        m = s.scalars(select(Member).where(Member.external_id == ext)).first()
        if m is None:
            m = Member(id=new_member_id(), external_id=ext, created_at=int(self._clock()))
            s.add(m)
        m.status = status
        return m

    def by_phone(self, s: Session, e164: str) -> Member | None:
        found = self._ask({"phone": e164})
        if found is None:
            return None
        m = self._mirror(s, *found)
        m.phone_hash, m.phone_last2 = self._h.phone(e164), last2(e164)
        return m

    def by_token(self, s: Session, token: str, src: str) -> Holder | None:
        found = self._ask({"token": token, "src": src})
        if found is None:
            return None
        m = self._mirror(s, *found)
        if src == "app":
            m.app_token_hash = self._h.token(token)
        else:
            m.card_hash = self._h.token(token)
        return Holder.of(m)
