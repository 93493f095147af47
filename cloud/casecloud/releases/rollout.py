"""Rollouts: a ready release sent to one case, a store, or a percentage of a cohort, in waves.

- The cases are chosen once, when the rollout is made, and put in waves: `waves` are cumulative
  percentages of them (e.g. [10, 50, 100]), in an order drawn from the rollout's id (a hash), so a
  cohort's first wave is a fair sample and not the lowest case ids.
- A case of an opened wave is sent `cmd fw` by the worker: at its hello (its first words after a
  reconnect) and, while it has not taken it, on its beats every RESEND_S; again when its download
  stalls (no progress for STALL_S). The API sends it at once to the cases online when a wave opens
  by its hand (create, resume). Each send has its own id, kept, so the case's ack is matched.
- Each case's state follows what it reports: the ack (refused: bad_key, refused: <why>; busy is
  tried again), its `fw` journal events (downloading %, staged, switching, confirmed, rolled_back,
  failed, refused: they survive resets and outages, so a late one still lands), and its hello's
  `rel` (a case running the release before it was ever told is confirmed at once; one that was
  told says the same while the release is on trial, so only its events decide).
- `step` (the periodic job, and at once after a reported failure): more than max_fail_pct of the
  opened waves' cases (those refused aside: they never changed) failed to confirm (failed or
  rolled_back) -> the rollout halts itself; otherwise the next wave opens once every case of the
  opened ones is done (confirmed, failed, rolled back, refused), or wave_after_s after the last
  opened, whichever first; after the last wave the rollout is done.
- A halt (by hand or by itself) sends the cancel (`cmd fw` with rel "") to the cases that were
  sent the release and have not switched yet; a resume sends it again. Both change the rollout
  row by compare-and-set, so two workers stepping one rollout never open a wave twice.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from casecloud import codec, db
from casecloud.models import Case, Release, Rollout, RolloutCase

RESEND_S: Final = 60  # a pending case's cmd fw again on a beat this long after the last
STALL_S: Final = 300  # a download with no progress event for this long is told again (resumes)
DONE: Final = frozenset({"confirmed", "failed", "rolled_back", "refused", "cancelled"})
FAILED: Final = frozenset({"failed", "rolled_back"})
# What a case's `fw` event may say (docs/ota.md), and the order a case goes through them: an
# event resent after a later one (same ts) never moves a case back.
STEPS: Final = {"downloading": 1, "staged": 2, "switching": 3, "confirmed": 4, "rolled_back": 4, "failed": 4,
                "refused": 4}
CANCELLABLE: Final = frozenset({"pending", "downloading", "staged"})
MAX_WAVES: Final = 10


class Invalid(ValueError):
    pass


class Conflict(Invalid):
    pass


@dataclass(frozen=True)
class Target:
    """Which cases: one `case`; every case of a `store`; or `pct` % of a cohort (the cases of
    `stores`, every store when empty, running firmware `fw` when given)."""

    case: str | None = None
    store: str | None = None
    pct: int | None = None
    stores: tuple[str, ...] = ()
    fw: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.case:
            return {"case": self.case}
        if self.store:
            return {"store": self.store}
        return {"pct": self.pct, "stores": list(self.stores), "fw": self.fw}


def _order(rollout_id: str, case_id: str) -> bytes:
    return hashlib.sha256(f"{rollout_id}:{case_id}".encode()).digest()


def _busy(s: Session, case_ids: list[str]) -> dict[str, str]:
    """Cases already in an active or halted rollout that has not finished with them: case -> rollout."""
    if not case_ids:
        return {}
    rows = s.execute(select(RolloutCase.case_id, RolloutCase.rollout_id)
                     .join(Rollout, Rollout.id == RolloutCase.rollout_id)
                     .where(Rollout.state.in_(("active", "halted")), RolloutCase.case_id.in_(case_ids),
                            RolloutCase.state.not_in(DONE)))
    return {c: r for c, r in rows}


def check_waves(waves: list[int]) -> list[int]:
    if not waves:
        return [100]
    if (len(waves) > MAX_WAVES or any(not 1 <= w <= 100 for w in waves)
            or any(b <= a for a, b in zip(waves, waves[1:], strict=False)) or waves[-1] != 100):
        raise Invalid(f"waves: up to {MAX_WAVES} cumulative percentages, rising, 1-100, the last 100 "
                      "(e.g. 10,50,100)")
    return waves


def create(s: Session, release_id: str, target: Target, now: int, by: str, *, waves: list[int] | None = None,
           wave_after_s: int | None = None, max_fail_pct: int = 20) -> Rollout:
    rel = s.get(Release, release_id)
    if rel is None:
        raise LookupError(f"no release {release_id}")
    if not rel.ready:
        raise Conflict(f"release {release_id} is not complete yet: upload its files first")
    w = check_waves(list(waves or []))
    if not 0 <= max_fail_pct <= 100:
        raise Invalid("max_fail_pct: 0-100")
    if wave_after_s is not None and wave_after_s < 0:
        raise Invalid("wave_after_s: 0 or more seconds")
    rid = "ro_" + codec.new_id()
    q = select(Case.id).order_by(Case.id)
    if target.case:
        q = q.where(Case.id == target.case)
    elif target.store:
        q = q.where(Case.store_id == target.store)
    else:
        if target.pct is None or not 1 <= target.pct <= 100:
            raise Invalid("a rollout targets a case, a store, or pct (1-100) of a cohort")
        if target.stores:
            q = q.where(Case.store_id.in_(target.stores))
        if target.fw:
            q = q.where(Case.fw == target.fw)
    ids = list(s.scalars(q))
    busy = _busy(s, ids)
    if target.case and busy:
        raise Conflict(f"case {target.case} is in rollout {busy[target.case]}: halt it first")
    ids = [c for c in ids if c not in busy]
    ids.sort(key=lambda c: _order(rid, c))
    if target.pct is not None and not (target.case or target.store):
        ids = ids[:math.ceil(len(ids) * target.pct / 100)]
    if not ids:
        raise Invalid("no case to update matches the target" + (f" ({len(busy)} in other rollouts)" if busy else ""))
    r = Rollout(id=rid, release_id=release_id, state="active", target={**target.as_dict(), "skipped": len(busy)},
                waves=w, wave=0, wave_at=now, wave_after_s=wave_after_s, max_fail_pct=max_fail_pct,
                created_by=by[:40], created_at=now)
    s.add(r)
    n = len(ids)
    ends = [math.ceil(n * p / 100) for p in w]
    for i, cid in enumerate(ids):
        wave = next(k for k, end in enumerate(ends) if i < end)
        s.add(RolloutCase(rollout_id=rid, case_id=cid, wave=wave, state="pending", updated_at=now))
    s.flush()
    return r


# -- what the worker does with a case's messages ---------------------------------------------------

def _fw_cmd(row: RolloutCase, rel: str, size: int, sig: str, now: int) -> dict[str, Any]:
    row.cmd_id = codec.new_id()
    row.sent_at = now
    row.sends += 1
    return {"t": "fw", "id": row.cmd_id, "rel": rel, "size": size, "sig": sig}


def cancel_cmd(row: RolloutCase, now: int) -> dict[str, Any]:
    return _fw_cmd(row, "", 0, "", now)


_ROLLOUTS = cast(Table, Rollout.__table__)
_ANY_OPEN = select(_ROLLOUTS.c.id).where(_ROLLOUTS.c.state.in_(("active", "halted"))).limit(1)


def _any_open(s: Session) -> bool:
    """Whether a rollout is active or halted, asked once a transaction: a worker's batch of
    greetings and heartbeats ran `on_status`'s query for each (a heartbeat cost 0.57 ms in a batch
    of 20, five times a card request), though most of the time no rollout is under way. Only the
    API opens a rollout, in a transaction of its own: one it commits while a batch is decided
    reaches the batch's cases at their next heartbeat, as it would have had it come a moment later."""
    sc = db.scratch(s)
    if "rollouts_open" not in sc:
        sc["rollouts_open"] = s.connection().execute(_ANY_OPEN).first() is not None
    return bool(sc["rollouts_open"])


def on_status(s: Session, case_id: str, body: dict[str, Any], now: int, *, hello: bool) -> list[dict[str, Any]]:
    """A hello or a beat: the `cmd fw` (or cancel) this case is owed now, if any. Notes the release
    the case says it runs; a case already running the release is confirmed."""
    if not _any_open(s):
        return []
    rows = s.execute(
        select(RolloutCase, Rollout, Release.sig, func.length(Release.manifest))
        .join(Rollout, Rollout.id == RolloutCase.rollout_id)
        .join(Release, Release.id == Rollout.release_id)
        .where(RolloutCase.case_id == case_id, Rollout.state.in_(("active", "halted")),
               RolloutCase.wave <= Rollout.wave, RolloutCase.state.not_in(DONE))).all()
    out: list[dict[str, Any]] = []
    running = body.get("rel")
    for row, r, sig, size in rows:
        if isinstance(running, str):
            row.running = running[:32]
        if r.state == "halted":
            if row.state in CANCELLABLE and row.sends:
                out.append(cancel_cmd(row, now))
            if row.state in CANCELLABLE:
                row.state, row.why, row.updated_at = "cancelled", "rollout halted", now
            continue
        if running == r.release_id and row.state == "pending" and not row.sends:
            # running it before it was ever told (an earlier rollout, by hand): nothing to send. A
            # case that was told says the same while the release is on trial: only its events
            # (confirmed, rolled_back) say how that ended.
            row.state, row.pct, row.why, row.updated_at = "confirmed", 100, "already running", now
            continue
        if row.state == "pending":
            due = hello or row.sent_at is None or now - row.sent_at >= RESEND_S
        elif row.state in ("downloading", "staged"):
            due = now - max(row.updated_at, row.sent_at or 0) >= STALL_S
        else:
            due = False  # switching: the case's own boot decides now
        if due:
            out.append(_fw_cmd(row, r.release_id, int(size), sig, now))
    return out


def on_ack(s: Session, case_id: str, body: dict[str, Any], now: int) -> bool:
    """The ack of a cmd fw we sent (matched by its id); False for any other ack."""
    re = body.get("re")
    if not isinstance(re, str):
        return False
    row = s.scalar(select(RolloutCase).where(RolloutCase.case_id == case_id, RolloutCase.cmd_id == re))
    if row is None:
        return False
    if body.get("ok") is True or row.state not in ("pending", "downloading", "staged"):
        return True
    err = str(body.get("err") or "")[:120]
    if err == "busy":  # tried again on a later beat (RESEND_S)
        row.why = "busy"
    else:
        row.state, row.why = "refused", err.removeprefix("refused: ") or "refused"
    row.updated_at = now
    return True


def on_events(s: Session, case_id: str, events: list[dict[str, Any]], now: int) -> None:
    """The case's `fw` journal events (in the order it sent them) onto its rollout rows."""
    fw = [e for e in events if e["kind"] == "fw" and isinstance(e["data"].get("rel"), str)
          and e["data"].get("st") in STEPS]
    if not fw:
        return
    rels = {e["data"]["rel"] for e in fw}
    rows = s.execute(select(RolloutCase, Rollout)
                     .join(Rollout, Rollout.id == RolloutCase.rollout_id)
                     .where(RolloutCase.case_id == case_id, Rollout.release_id.in_(rels),
                            Rollout.state != "done")).all()
    failed: list[Rollout] = []
    for row, r in rows:
        for e in fw:
            d, ts = e["data"], e["ts"]
            if d["rel"] != r.release_id or ts < row.event_ts:
                continue
            st = d["st"]
            if ts == row.event_ts and row.state in STEPS and STEPS[st] < STEPS[row.state]:
                continue  # an older event resent: not a step back
            if row.state in FAILED | {"confirmed"} and ts == row.event_ts:
                continue
            row.state, row.event_ts, row.updated_at = st, ts, now
            pct = d.get("pct")
            row.pct = 100 if st in ("staged", "switching", "confirmed") else (
                max(0, min(100, pct)) if type(pct) is int else row.pct)
            why = d.get("why")
            row.why = why[:120] if isinstance(why, str) and st in FAILED | {"refused"} else ""
            if st in FAILED and r not in failed:
                failed.append(r)
    for r in failed:  # a failure may halt its rollout now, not at the next periodic step
        step(s, r, now)


# -- the rollout as a whole ------------------------------------------------------------------------

def counts(s: Session, rollout_id: str, upto_wave: int | None = None) -> Counter[str]:
    q = select(RolloutCase.state, func.count()).where(RolloutCase.rollout_id == rollout_id)
    if upto_wave is not None:
        q = q.where(RolloutCase.wave <= upto_wave)
    return Counter({st: n for st, n in s.execute(q.group_by(RolloutCase.state))})


def _set(s: Session, r: Rollout, expect: dict[str, Any], **values: Any) -> bool:
    """Compare-and-set on the rollout's row: False when another worker changed it first."""
    q = update(Rollout).where(Rollout.id == r.id, *(getattr(Rollout, k) == v for k, v in expect.items()))
    done = getattr(s.execute(q.values(**values).execution_options(synchronize_session=False)), "rowcount", 0) == 1
    s.refresh(r)
    return done


def step(s: Session, r: Rollout, now: int) -> str | None:
    """Halt, open the next wave or finish, when it is time. Returns what it did, if anything."""
    if r.state != "active":
        return None
    c = counts(s, r.id, r.wave)
    opened = sum(c.values())
    updated = opened - c["refused"]
    failed = sum(c[k] for k in FAILED)
    if updated and failed * 100 > r.max_fail_pct * updated:
        why = f"{failed} of {updated} updated cases failed to confirm (over {r.max_fail_pct} %)"
        return "halted" if halt(s, r, now, why) else None
    last = len(r.waves) - 1
    all_done = sum(c[k] for k in DONE) == opened
    timed = r.wave_after_s is not None and now - r.wave_at >= r.wave_after_s
    if r.wave < last and (all_done or timed):
        return "wave" if _set(s, r, {"state": "active", "wave": r.wave}, wave=r.wave + 1, wave_at=now) else None
    if r.wave >= last and all_done:
        return "done" if _set(s, r, {"state": "active", "wave": r.wave}, state="done") else None
    return None


def halt(s: Session, r: Rollout, now: int, reason: str) -> bool:
    """Stop sending the release; the cases told and not yet switched get the cancel at their next
    beat (or from the API at once). Those never told are simply cancelled."""
    if not _set(s, r, {"state": "active"}, state="halted", halted_at=now, halt_reason=reason[:200]):
        return False
    s.execute(update(RolloutCase).where(RolloutCase.rollout_id == r.id, RolloutCase.state == "pending",
                                        RolloutCase.sends == 0)
              .values(state="cancelled", why="rollout halted", updated_at=now)
              .execution_options(synchronize_session=False))
    return True


def resume(s: Session, r: Rollout, now: int) -> bool:
    if not _set(s, r, {"state": "halted"}, state="active", halt_reason="", halted_at=None, wave_at=now):
        return False
    s.execute(update(RolloutCase).where(RolloutCase.rollout_id == r.id, RolloutCase.state == "cancelled")
              .values(state="pending", why="", sends=0, sent_at=None, cmd_id=None, updated_at=now)
              .execution_options(synchronize_session=False))
    return True


def cancels_due(s: Session, r: Rollout, now: int) -> list[tuple[str, dict[str, Any]]]:
    """After a halt, for the API to send at once: the cancel of every case that was told."""
    out = []
    for row in s.scalars(select(RolloutCase).where(RolloutCase.rollout_id == r.id,
                                                   RolloutCase.state.in_(CANCELLABLE), RolloutCase.sends > 0)):
        out.append((row.case_id, cancel_cmd(row, now)))
        row.state, row.why, row.updated_at = "cancelled", "rollout halted", now
    return out


def sends_due(s: Session, r: Rollout, now: int) -> list[tuple[str, dict[str, Any]]]:
    """For the API to send at once (create, resume): the cmd fw of the opened waves' pending cases
    that are online. Those offline get it at their hello."""
    rel = s.get(Release, r.release_id)
    assert rel is not None
    out = []
    rows = s.scalars(select(RolloutCase).join(Case, Case.id == RolloutCase.case_id)
                     .where(RolloutCase.rollout_id == r.id, RolloutCase.state == "pending",
                            RolloutCase.wave <= r.wave, Case.online.is_(True)))
    for row in rows:
        out.append((row.case_id, _fw_cmd(row, rel.id, len(rel.manifest), rel.sig, now)))
    return out


def summary(s: Session, r: Rollout, *, cases: bool = False) -> dict[str, Any]:
    c = counts(s, r.id)
    out: dict[str, Any] = {
        "id": r.id, "release": r.release_id, "state": r.state, "target": r.target, "waves": r.waves,
        "wave": r.wave, "wave_at": r.wave_at, "wave_after_s": r.wave_after_s, "max_fail_pct": r.max_fail_pct,
        "halt_reason": r.halt_reason, "halted_at": r.halted_at, "created_at": r.created_at,
        "created_by": r.created_by, "counts": dict(sorted(c.items())), "total": sum(c.values())}
    if cases:
        out["cases"] = [{"case": x.case_id, "wave": x.wave, "state": x.state if x.wave <= r.wave or x.state != "pending"
                         else "waiting", "pct": x.pct, "why": x.why, "running": x.running, "sends": x.sends,
                         "updated_at": x.updated_at}
                        for x in s.scalars(select(RolloutCase).where(RolloutCase.rollout_id == r.id)
                                           .order_by(RolloutCase.wave, RolloutCase.case_id))]
    return out
