"""LockCase cloud protocol v1, the cloud's side (docs/protocol.md is the contract).

The firmware twin is firmware/lockcase/cloud/protocol.py; tests/vectors/protocol_v1.json is checked
against both so the two cannot drift. The checks run in the same order on both sides so the same
bad message yields the same reason code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

VERSION: Final = 1
PREFIX: Final = "lockcase/v1"
MAX_BYTES: Final = 1024
TTL: Final = 30
WINDOW: Final = 16
_MASK: Final = (1 << WINDOW) - 1

UP_KINDS: Final = ("req", "evt", "status", "ack")
DOWN_KINDS: Final = ("rep", "cmd", "evtack")
PRESENCE: Final = "presence"

# kind -> type -> required (field, code); codes: s str, i int, b bool, l list, d dict.
SCHEMA: Final[dict[str, dict[str, tuple[tuple[str, str], ...]]]] = {
    "req": {
        "phone": (("num", "s"),),
        "otp": (("sid", "s"), ("code", "s")),
        "token": (("tok", "s"), ("src", "s")),
        "help": (),
    },
    "evt": {"evts": (("evts", "l"),)},
    "status": {"hello": (("fw", "s"),), "beat": (("up", "i"),)},
    "ack": {"ack": (("re", "s"), ("ok", "b"))},
    "rep": {
        "allow": (("re", "s"), ("grant", "s")),
        "challenge": (("re", "s"), ("sid", "s"), ("need", "s"), ("ttl", "i")),
        "deny": (("re", "s"), ("why", "s")),
        "ok": (("re", "s"),),
    },
    "cmd": {
        "unlock": (("grant", "s"),),
        "relock": (),
        "reset_tamper": (),
        "staff": (("op", "s"), ("kind", "s"), ("sid", "s")),
        "config": (("set", "d"),),
        "state": (("sv", "i"), ("i", "i"), ("n", "i"), ("staff", "l")),
        "time": (("re", "s"), ("now", "i"), ("rx", "i")),
    },
    "evtack": {"evtack": (("re", "s"), ("ids", "l"))},
}
_HEAD: Final = (("v", "i"), ("case", "s"), ("id", "s"), ("seq", "i"), ("exp", "i"), ("t", "s"))
_TYPES: Final[dict[str, type]] = {"s": str, "i": int, "b": bool, "l": list, "d": dict}

# Store and case ids become topic levels: no '/', '+', '#', nothing a shell or URL would mangle.
ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

REASONS: Final = (
    "too_large",
    "bad_json",
    "bad_topic",
    "unknown_case",
    "bad_sig",
    "bad_version",
    "wrong_case",
    "bad_type",
    "bad_field",
    "expired",
    "replay",
    "no_clock",
)


class Rejected(Exception):
    """A message refused with a protocol reason code (never an unhandled error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Topic:
    store: str
    case: str
    kind: str


@dataclass(frozen=True)
class Envelope:
    topic: Topic
    p: str
    s: str


def topic(store: str, case: str, kind: str, prefix: str = PREFIX) -> str:
    return f"{prefix}/{store}/{case}/{kind}"


def parse_topic(name: str, prefix: str = PREFIX) -> Topic:
    parts = name.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != prefix:
        raise Rejected("bad_topic")
    if parts[4] not in SCHEMA and parts[4] != PRESENCE:
        raise Rejected("bad_topic")
    return Topic(parts[2], parts[3], parts[4])


def signature(key: bytes, topic_name: str, p: str) -> str:
    return hmac.new(key, f"{topic_name}\n{p}".encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, topic_name: str, p: str) -> bytes:
    env = {"p": p, "s": signature(key, topic_name, p)}
    return json.dumps(env, separators=(",", ":")).encode()


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def new_id() -> str:
    return secrets.token_hex(6)


def unwrap(topic_name: str, payload: bytes) -> Envelope:
    """Size, envelope shape and topic: everything that can be checked before the key is known."""
    if len(payload) > MAX_BYTES:
        raise Rejected("too_large")
    try:
        env = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Rejected("bad_json") from None
    if not isinstance(env, dict) or not isinstance(env.get("p"), str):
        raise Rejected("bad_json")
    if not isinstance(env.get("s"), str):
        raise Rejected("bad_json")
    where = parse_topic(topic_name)
    if where.kind not in SCHEMA:  # presence is plain text, never an envelope
        raise Rejected("bad_topic")
    return Envelope(where, env["p"], env["s"])


def _typed(value: Any, code: str) -> bool:
    # bool is an int subclass in Python but not a valid int field on the wire.
    return type(value) is _TYPES[code]


def _check_fields(body: dict[str, Any], fields: tuple[tuple[str, str], ...]) -> None:
    for name, code in fields:
        if name not in body or not _typed(body[name], code):
            raise Rejected("bad_field")


def verify(key: bytes, topic_name: str, env: Envelope) -> dict[str, Any]:
    """Signature, then body shape. No clock and no seq: see `fresh` and `window`."""
    try:
        sig = bytes.fromhex(env.s)
    except ValueError:
        raise Rejected("bad_sig") from None
    try:
        signed = f"{topic_name}\n{env.p}".encode()
    except UnicodeEncodeError:  # a lone surrogate: no case's firmware can produce one
        raise Rejected("bad_json") from None
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig):
        raise Rejected("bad_sig")
    try:
        body = json.loads(env.p)
        # Escaped lone surrogates ("\\ud800") parse, but no database can store the text.
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError):
        raise Rejected("bad_json") from None
    if not isinstance(body, dict):
        raise Rejected("bad_json")
    if type(body.get("v")) is not int or body["v"] != VERSION:
        raise Rejected("bad_version")
    _check_fields(body, _HEAD)
    if body["case"] != env.topic.case:
        raise Rejected("wrong_case")
    fields = SCHEMA.get(env.topic.kind, {}).get(body["t"])
    if fields is None:
        raise Rejected("bad_type")
    _check_fields(body, fields)
    return body


def fresh(body: dict[str, Any], now: int) -> None:
    if now > body["exp"]:
        raise Rejected("expired")


def window(rx: int, mask: int, seq: int) -> tuple[int, int]:
    """Replay window: the new (rx, mask), or Rejected("replay").

    rx is the highest seq accepted; bit k of mask means rx - k was accepted. Seqs a little below rx
    are still taken once because the cloud's API and worker publish on separate connections.
    """
    if seq > rx:
        shift = seq - rx
        return seq, ((mask << shift) | 1) & _MASK if shift < WINDOW else 1
    k = rx - seq
    if k >= WINDOW or mask & (1 << k):
        raise Rejected("replay")
    return rx, mask | (1 << k)


def restored_mask(rx: int) -> int:
    """The mask to use when only rx survived (every seq up to rx counts as seen)."""
    return _MASK if rx else 0


def check(
    key: bytes, topic_name: str, payload: bytes, now: int, rx: int, mask: int
) -> tuple[dict[str, Any], int, int]:
    """The whole receive pipeline for a message to the cloud, state passed in and out.

    A `hello` is exempt from the clock (the case does not know the time yet) and from the replay
    window (a case that lost its seq file must still be able to resynchronize); the worker only
    advances rx for a hello that is also new. A `beat` that says `"synced": false` is exempt from
    the clock only: its `exp` comes from the case's unset clock, it changes nothing but the
    case's shown status, and the replay window still refuses it replayed.
    """
    return check_env(key, topic_name, unwrap(topic_name, payload), now, rx, mask)


def check_env(
    key: bytes, topic_name: str, env: Envelope, now: int, rx: int, mask: int
) -> tuple[dict[str, Any], int, int]:
    """`check` for an envelope already unwrapped (size, JSON and topic checked)."""
    body = verify(key, topic_name, env)
    if body["t"] == "hello":
        try:
            return (body, *window(rx, mask, body["seq"]))
        except Rejected:
            return body, rx, mask
    if not (body["t"] == "beat" and body.get("synced") is False):
        fresh(body, now)
    return (body, *window(rx, mask, body["seq"]))


def encode(
    key: bytes, topic_name: str, body: dict[str, Any], *, case: str, seq: int, now: int, ttl: int = TTL
) -> tuple[dict[str, Any], bytes]:
    """Fill the header and sign. Returns the full body and the payload to publish."""
    kind = topic_name.rsplit("/", 1)[-1]
    if body.get("t") not in SCHEMA.get(kind, {}):
        raise ValueError(f"no type {body.get('t')!r} on {kind}")
    full = {"v": VERSION, "case": case, "id": body.get("id") or new_id(), "seq": seq, "exp": now + ttl}
    full.update({k: v for k, v in body.items() if k not in full})
    payload = seal(key, topic_name, dumps(full))
    if len(payload) > MAX_BYTES:
        raise ValueError("too_large")
    return full, payload
