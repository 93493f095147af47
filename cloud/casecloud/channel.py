"""The signed channel to and from one case, with its seq state kept in the database.

Several processes (the API's command sender, one or more workers) may sign for the same case. The
API takes an outgoing seq with one atomic UPDATE ... RETURNING (`seal`); a worker's batch moves the
replay window and reserves its replies' seqs by compare-and-set on both (`advance`) and is redone
when another process got there first. The same compare-and-set checks the case's desired-state
version (desired.py): the state a batch sends is labelled with the version it read, so a change
committed since then sends the batch back too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from casecloud import codec, keyring
from casecloud.models import Case, Store

_CASES = cast(Table, Case.__table__)
_ADVANCE = (
    update(_CASES)
    .where(_CASES.c.id == bindparam("cid"), _CASES.c.rx_seq == bindparam("rx0"), _CASES.c.rx_mask == bindparam("m0"),
           _CASES.c.tx_seq == bindparam("tx0"), _CASES.c.desired_v == bindparam("v0"))
    .values(rx_seq=bindparam("rx"), rx_mask=bindparam("m"), tx_seq=bindparam("tx"), last_seen=bindparam("now"))
)


class UnknownCase(codec.Rejected):
    def __init__(self) -> None:
        super().__init__("unknown_case")


def next_seq(s: Session, case_id: str) -> int:
    stmt = update(Case).where(Case.id == case_id).values(tx_seq=Case.tx_seq + 1).returning(Case.tx_seq)
    seq = s.execute(stmt).scalar_one()
    return int(seq)


def seal(s: Session, case: Case, kind: str, body: dict[str, Any], now: int, ttl: int = codec.TTL,
         prefix: str = codec.PREFIX) -> tuple[str, dict[str, Any], bytes]:
    """Sign a cloud -> case message. Returns (topic, full body, payload)."""
    topic = codec.topic(case.store_id, case.id, kind, prefix)
    full, payload = codec.encode(keyring.case_key(s, case), topic, body, case=case.id,
                                 seq=next_seq(s, case.id), now=now, ttl=ttl)
    return topic, full, payload


def lookup(s: Session, where: codec.Topic) -> tuple[Store, Case]:
    case = s.get(Case, where.case)
    if case is None or case.store_id != where.store:
        raise UnknownCase()
    store = s.get(Store, case.store_id)
    assert store is not None  # foreign key
    return store, case


def peek(s: Session, topic_name: str, payload: bytes, now: int) -> tuple[Store, Case, dict[str, Any]]:
    """Every check of docs/protocol.md for a case -> cloud message except the replay window, which
    is left alone: for a second reader of the same traffic (the API waiting for an ack), which
    must not consume the seq the worker (the window's one owner) will also see; it matches acks by
    unguessable command ids instead."""
    env = codec.unwrap(topic_name, payload)
    store, case = lookup(s, env.topic)
    body = codec.verify(keyring.case_key(s, case), topic_name, env)
    codec.fresh(body, now)
    return store, case, body


@dataclass(frozen=True)
class Advance:
    """One case's seq state after a batch: the window moved from `seen` to `to`, and `reserve`
    outgoing seqs taken after `tx` (the batch signs with tx + 1 .. tx + reserve); `desired_v`, the
    desired-state version the batch's state commands were built for (its own bumps included)."""

    case_id: str
    seen: tuple[int, int]
    to: tuple[int, int]
    tx: int
    reserve: int
    desired_v: int


def advance(s: Session, moves: Sequence[Advance], now: int) -> bool:
    """After a batch: move every case's replay window and outgoing seq by compare-and-set, and mark
    the cases seen at `now`, in one multi-row statement.

    False when any case's stored state is no longer what the batch read (another worker moved the
    window, the API took a seq for a command, a staff or config change bumped its desired version):
    the batch must then be rolled back and redone.
    """
    if not moves:
        return True
    params = [{"cid": m.case_id, "rx0": m.seen[0], "m0": m.seen[1], "tx0": m.tx, "rx": m.to[0], "m": m.to[1],
               "tx": m.tx + m.reserve, "v0": m.desired_v, "now": now} for m in moves]
    conn = s.connection()
    if len(params) > 1 and conn.dialect.supports_sane_multi_rowcount:
        return conn.execute(_ADVANCE, params).rowcount == len(params)
    return all(conn.execute(_ADVANCE, p).rowcount == 1 for p in params)


def sign(key: bytes, store_id: str, case_id: str, kind: str, body: dict[str, Any], seq: int, now: int,
         ttl: int = codec.TTL, prefix: str = codec.PREFIX) -> tuple[str, bytes]:
    """Sign a cloud -> case message with a seq reserved earlier (`advance`). Returns (topic, payload)."""
    topic = codec.topic(store_id, case_id, kind, prefix)
    _, payload = codec.encode(key, topic, body, case=case_id, seq=seq, now=now, ttl=ttl)
    return topic, payload


# Half the bound one message may move a window: a case that bounds its window as the cloud does
# still takes the cloud's first message after a resync.
RESYNC_TX_JUMP = codec.MAX_JUMP // 2


def resync(s: Session, case_id: str, now: int) -> bool:
    """Admin: the case's next message signed from now on re-establishes the replay window at its seq
    (codec.resync_mask: a message captured before cannot), and the cloud's outgoing seq moves
    RESYNC_TX_JUMP ahead, so the case takes the cloud's messages again should it have seen higher
    seqs (a database restored from a backup). False when there is no such case."""
    done = s.execute(update(Case).where(Case.id == case_id)
                     .values(rx_mask=codec.resync_mask(now), tx_seq=Case.tx_seq + RESYNC_TX_JUMP))
    return getattr(done, "rowcount", 0) == 1


def resync_all(s: Session, now: int) -> int:
    """`resync` for every case at once (after the database was restored from a backup: `python -m
    casecloud after-restore`, docs/operations.md). Returns how many cases."""
    done = s.execute(update(Case).values(rx_mask=codec.resync_mask(now), tx_seq=Case.tx_seq + RESYNC_TX_JUMP))
    return int(getattr(done, "rowcount", 0))
