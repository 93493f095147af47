"""LockCase cloud protocol v1, the cloud's side (docs/protocol.md is the contract).

The firmware twin is firmware/lockcase/uplink/codec.py; tests/vectors/protocol_v1.json is checked
against both so the two cannot drift. The checks run in the same order on both sides so the same
bad message yields the same reason code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from lockcase.uplink import codec as _case

VERSION: Final[int] = _case.VERSION
PREFIX: Final[str] = _case.PREFIX
MAX_BYTES: Final[int] = _case.MAX_BYTES
TTL: Final[int] = _case.TTL
WINDOW: Final[int] = _case.WINDOW
_MASK: Final = (1 << WINDOW) - 1
# How far one accepted message may move a replay window ahead. A case skips at most 63 seqs per
# reboot (it reserves them 64 at a time) and signs a few messages a minute that may never arrive
# (a worker down for weeks, a broker dropping its queue), so a real case stays far below this;
# a seq beyond it (a corrupt seq file) would otherwise cut the case off for good.
MAX_JUMP: Final = 1 << 20
# A window waiting for an admin resync keeps it as -(the exp a message must pass): see `check_env`.
RESYNC_MARGIN: Final = 5  # seconds of clock error between a synced case and the cloud
MAX_DEPTH: Final = 16  # nesting of arrays and objects; real messages use 4
INT_MIN: Final = -(1 << 63)
INT_MAX: Final = (1 << 63) - 1  # every number fits a signed 64-bit column

UP_KINDS: Final = ("req", "evt", "status", "ack")
DOWN_KINDS: Final = ("rep", "cmd", "evtack")
PRESENCE: Final = "presence"

# kind -> type -> required (field, code), and the header every body has; codes: s str, i int,
# b bool, l list, d dict. One source for both sides: the firmware's codec, which imports under
# CPython (it is written once, where RAM is scarce, and read here).
SCHEMA: Final[dict[str, dict[str, tuple[tuple[str, str], ...]]]] = _case.SCHEMA
_HEAD: Final[tuple[tuple[str, str], ...]] = _case.HEAD
_TYPES: Final[dict[str, type]] = {"s": str, "i": int, "b": bool, "l": list, "d": dict}

# Store and case ids become topic levels: no '/', '+', '#', nothing a shell or URL would mangle.
ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# One spelling per signature: hexdigest()'s, so a message has exactly one valid envelope.
SIG_RE: Final = re.compile(r"[0-9a-f]{64}")

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


# One encoder: json.dumps with any argument builds a new one for every call (the worker signs a
# reply per request, and seals it).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))


def seal(key: bytes, topic_name: str, p: str) -> bytes:
    env = {"p": p, "s": signature(key, topic_name, p)}
    return _ENCODER.encode(env).encode()


def dumps(body: dict[str, Any]) -> str:
    return _ENCODER.encode(body)


def new_id() -> str:
    return secrets.token_hex(6)


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):  # 1e999: no JSON column (PostgreSQL's) can store what it becomes
        raise ValueError("number out of range")
    return x


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json takes them, nothing else does


# One decoder: json.loads with hooks would build a new one (and its scanner) for every message.
_DECODER: Final = json.JSONDecoder(parse_float=_float, parse_constant=_constant)


def _unfit(value: Any, levels: int = MAX_DEPTH) -> bool:
    """More than `levels` arrays and objects nested (it looks no deeper), or an integer outside
    signed 64 bits. One walk over the parsed value: a few microseconds for a batch of events, where
    a parse_int hook or stripping strings from the text to count brackets cost several times that.
    Input deeper than the parser's recursion limit never gets here (RecursionError)."""
    if type(value) is int:
        return not INT_MIN <= value <= INT_MAX
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    if levels == 0:
        return True
    for item in items:
        if (type(item) is int and not INT_MIN <= item <= INT_MAX) or (
                isinstance(item, dict | list) and _unfit(item, levels - 1)):
            return True
    return False


def parse(data: str | bytes, max_bytes: int = MAX_BYTES) -> Any:
    """JSON from outside the service (a case, the broker, anyone on it): the only way to read it.

    Raises Rejected: `too_large` over `max_bytes`; `bad_json` for anything that is not UTF-8 JSON,
    nests deeper than MAX_DEPTH (the parser recurses: 1,000 `[` raised RecursionError), or holds a
    number no column takes (an integer outside signed 64 bits, a float that is not finite).
    """
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeError:  # a lone surrogate
        raise Rejected("bad_json") from None
    if len(raw) > max_bytes:
        raise Rejected("too_large")
    try:
        text = raw.decode() if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except (ValueError, UnicodeError, RecursionError):
        raise Rejected("bad_json") from None
    if _unfit(value):
        raise Rejected("bad_json")
    return value


def unwrap(topic_name: str, payload: bytes) -> Envelope:
    """Size, envelope shape and topic: everything that can be checked before the key is known."""
    env = parse(payload)
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
    if not SIG_RE.fullmatch(env.s):
        raise Rejected("bad_sig")
    sig = bytes.fromhex(env.s)
    try:
        signed = f"{topic_name}\n{env.p}".encode()
    except UnicodeEncodeError:  # a lone surrogate: no case's firmware can produce one
        raise Rejected("bad_json") from None
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig):
        raise Rejected("bad_sig")
    body = parse(env.p)
    # Escaped lone surrogates ("\\ud800") parse, but no database can store the text. Only an escape
    # can make one: env.p itself has none (it was encoded to UTF-8 above), so a body without a
    # "\\u" is spared the encoding (a third of this function's time).
    if "\\u" in env.p:
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
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
    are still taken once because the cloud's API and worker publish on separate connections. A
    seq more than MAX_JUMP above rx is refused too. A negative mask marks a resync pending
    (`resync_mask`): the window holds meanwhile as if only rx had survived.
    """
    if mask < 0:  # only rx survived: every seq up to it counts as seen
        mask = _MASK if rx else 0
    if seq > rx:
        shift = seq - rx
        if shift > MAX_JUMP:
            raise Rejected("replay")
        return seq, ((mask << shift) | 1) & _MASK if shift < WINDOW else 1
    k = rx - seq
    if k >= WINDOW or mask & (1 << k):
        raise Rejected("replay")
    return rx, mask | (1 << k)


def resync_mask(now: int) -> int:
    """The mask an admin resync stores (rx is kept): the next message the case signs after `now`
    (its `exp` says so) re-establishes the window at its seq, whatever the window says.

    A message signed before the resync cannot: its `exp` is at most now + TTL, or it would not be
    the case's (a synced case's clock is the cloud's, within RESYNC_MARGIN). So a captured message
    replayed after a resync is refused as before, while a case whose seq jumped beyond MAX_JUMP
    (a corrupt seq file) or fell below the window comes back with its next beat or request.
    """
    return -(now + TTL + RESYNC_MARGIN)


def resync_pending(mask: int) -> bool:
    return mask < 0


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
    clocked = not (body["t"] == "beat" and body.get("synced") is False)
    if clocked:
        fresh(body, now)
    try:
        return (body, *window(rx, mask, body["seq"]))
    except Rejected:
        # Only a message whose exp proves it was signed after the resync (a hello or an unsynced
        # beat proves nothing: their exp is not checked) and not in the future.
        if clocked and resync_pending(mask) and -mask < body["exp"] <= now + TTL + RESYNC_MARGIN:
            # Everything up to its seq counts as seen: a message signed before it (a lower seq)
            # may be one signed before the resync.
            return body, body["seq"], _MASK
        raise


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
