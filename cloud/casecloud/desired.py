"""Desired state: the store's staff set and a case's config overrides, versioned per case.

Counting publishes told the admin nothing about a case that was offline, and incremental add/del
commands could be lost or reordered and leave a case wrong for good. Instead every change bumps
the case's `desired_v` in the same transaction; the case reports the version it applied (`sv` in
its hello and beats); while the two differ the whole state is re-sent (`state` commands, paged to
fit the 1024-byte limit), at once on a hello and with backoff on beats. Sending the whole set
makes every send idempotent: any one complete delivery leaves the case right. For that a version
must name one content: it is bumped in SQL, and its state built from what is read after (`bump`).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from casecloud import codec
from casecloud.models import Case, Staff

MAX_STAFF: Final = 32  # per store; the case refuses a larger set (its RAM holds it while staging)
RESEND_S: Final = 60  # first re-send on a beat this long after a send, doubling ...
RESEND_MAX_S: Final = 900  # ... up to this; a hello always re-sends at once
# Sizing a part with the largest header a case can have, so that every part fits once signed.
_PROBE: Final = {"case": "c" * 32, "seq": 2**53, "now": 2**40}


class Invalid(ValueError):
    pass


def pending(case: Case) -> bool:
    """0/0 is a case whose state the cloud has never managed: nothing to send."""
    return case.desired_v != 0 and case.applied_v != case.desired_v


def bump_store(s: Session, store_id: str) -> list[str]:
    """After a change to the store's staff set, in its transaction: every case of the store wants
    a new version. Returns their ids."""
    s.flush()
    # Their rows first, in id order as a worker's batch takes them (batch.py): the UPDATE alone
    # takes them in the table's order, and a batch holding one of them would deadlock with it.
    s.execute(select(Case.id).where(Case.store_id == store_id).order_by(Case.id)
              .with_for_update(key_share=True)).all()
    s.execute(update(Case).where(Case.store_id == store_id)
              .values(desired_v=Case.desired_v + 1, state_sends=0, state_sent_at=None)
              .execution_options(synchronize_session="fetch"))  # loaded rows see their new versions
    return list(s.scalars(select(Case.id).where(Case.store_id == store_id).order_by(Case.id)))


_STATE: Final = ("desired_v", "config_set", "config_applied", "state_sends", "state_sent_at")


def bump(s: Session, case: Case, *, only_from: int | None = None) -> bool:
    """The case wants a new version: desired_v + 1 in SQL (never from a value read earlier, which a
    concurrent change may have bumped already: two states would go out under one number), then its
    desired state re-read, so what is built for the new version after this is what that version
    holds. The UPDATE holds the row until the commit (PostgreSQL's row lock, SQLite's write lock):
    a concurrent bump comes after it, with the next number. only_from: bump only a case still at
    that version (False, nothing done, when another change got there first)."""
    s.flush()
    q = update(Case).where(Case.id == case.id)
    if only_from is not None:
        q = q.where(Case.desired_v == only_from)
    v = s.execute(q.values(desired_v=Case.desired_v + 1, state_sends=0, state_sent_at=None)
                  .returning(Case.desired_v).execution_options(synchronize_session=False)).scalar_one_or_none()
    if v is None:
        return False
    s.refresh(case, list(_STATE))
    return True


def check_room(s: Session, store_id: str) -> None:
    n = s.scalar(select(func.count()).select_from(Staff).where(Staff.store_id == store_id)) or 0
    if n >= MAX_STAFF:
        raise Invalid(f"a store holds at most {MAX_STAFF} staff credentials (a case keeps them all)")


def set_config(s: Session, case: Case, changes: dict[str, Any]) -> None:
    """Merge config overrides into the case's desired state and bump its version; Invalid when
    the result cannot be sent (the caller rolls back: the version is bumped first)."""
    bump(s, case)  # first: the overrides merged into are the current ones, not a stale read's
    merged = {**case.config_set, **changes}
    for k in ("staff", "cloud", "case_id", "store_id", "board"):
        if k in merged:
            raise Invalid(f"{k} cannot be changed remotely")
    parts(s, case.store_id, case.id, case.desired_v, merged)  # raises when it does not fit
    case.config_set = merged


def _fits(body: dict[str, Any]) -> bool:
    try:
        codec.encode(bytes(32), "lockcase/v1/s/c/cmd", body, **_PROBE)
    except ValueError:
        return False
    return True


def parts(s: Session, store_id: str, case_id: str, v: int, config_set: dict[str, Any]) -> list[dict[str, Any]]:
    """The `state` commands for version v: the whole staff set, packed in order, and the config
    overrides in the first part. Every part names v and the part count."""
    staff = [[st.kind, st.id, st.hash]
             for st in s.scalars(select(Staff).where(Staff.store_id == store_id).order_by(Staff.id))]
    out: list[dict[str, Any]] = [{"t": "state", "sv": v, "i": 0, "n": 99, "set": config_set, "staff": []}]
    if not _fits(out[0]):
        raise Invalid(f"case {case_id}: the config overrides do not fit one message")
    for entry in staff:
        cur = out[-1]
        cur["staff"].append(entry)
        if not _fits(cur):
            cur["staff"].pop()
            out.append({"t": "state", "sv": v, "i": len(out), "n": 99, "staff": [entry]})
    for p in out:
        p["n"] = len(out)
    return out


def _send(s: Session, case: Case, now: int) -> list[dict[str, Any]]:
    case.state_sent_at = now
    case.state_sends += 1
    return parts(s, case.store_id, case.id, case.desired_v, case.config_set)


def on_refused(s: Session, case: Case, refused: Any, now: int) -> list[dict[str, Any]]:
    """The case refused the desired state (its ack names the version). A config override the
    case's validator refuses must not hold the staff set back (a revocation would never land):
    the overrides go back to what the case last applied, in a new version sent at once. When
    they are already that, the refusal has another cause and only its cmd_ack event shows it."""
    if refused != case.desired_v or case.config_set == case.config_applied:
        return []
    if not bump(s, case, only_from=case.desired_v):  # another change came first: the refused version is gone
        return []
    case.config_set = dict(case.config_applied)
    return _send(s, case, now)


def on_hello(s: Session, case: Case, reported: Any, now: int) -> list[dict[str, Any]]:
    """A case (re)connected: its state first, when the version it reports is not the desired one.
    The report is not stored: a hello is taken even when replayed (docs/protocol.md)."""
    if case.desired_v == 0 or reported == case.desired_v:
        return []
    case.state_sends = 0  # a new connection: what was sent before may have gone nowhere
    return _send(s, case, now)


def on_beat(s: Session, case: Case, reported: Any, now: int) -> list[dict[str, Any]]:
    """A heartbeat (replay-checked): store what the case applied; re-send with backoff while it
    is behind."""
    if type(reported) is int:
        case.applied_v = reported
        if reported == case.desired_v:
            case.config_applied = case.config_set
    if not pending(case):
        return []
    wait = min(RESEND_S * 2 ** max(case.state_sends - 1, 0), RESEND_MAX_S)
    if case.state_sent_at is not None and now - case.state_sent_at < wait:
        return []
    return _send(s, case, now)
