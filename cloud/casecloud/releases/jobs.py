"""The rollouts' periodic step (rollout.step: halt, next wave, done), run by the worker side
(tasks.py) every rollout_check_every_s; a failed run is logged and the next one still comes."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from casecloud.models import Rollout
from casecloud.releases import rollout
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.releases")


def step_all(rt: Runtime) -> list[tuple[str, str]]:
    """One pass over the active rollouts, each in its own transaction. Returns (rollout, what)."""
    done: list[tuple[str, str]] = []
    with rt.sessions() as s:
        ids = list(s.scalars(select(Rollout.id).where(Rollout.state == "active").order_by(Rollout.id)))
    for rid in ids:
        try:
            with rt.sessions.begin() as s:
                r = s.get(Rollout, rid)
                what = rollout.step(s, r, rt.now()) if r is not None else None
                reason = r.halt_reason if r is not None else ""
        except Exception:
            log.exception("rollout %s: step failed", rid)
            continue
        if what:
            done.append((rid, what))
            if what == "halted":
                log.warning("rollout %s halted itself: %s", rid, reason)
            else:
                log.info("rollout %s: %s", rid, what)
    return done


async def rollout_loop(rt: Runtime) -> None:
    while True:
        try:
            await asyncio.to_thread(step_all, rt)
        except Exception:
            log.exception("rollout step failed")
        await asyncio.sleep(rt.settings.rollout_check_every_s)
