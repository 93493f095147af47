"""The chunk server: a case's `req fwget {rel, f, off}` answered with `rep fwdata {d}` (base64 of up
to 512 bytes of the manifest, f = -1, or of file f, from off) or `rep deny {why}`.

These are not shopper requests: dispatch.py hands them here before the policy, so they count
against no rate limit, journal no decision and reach no analytics. A case is served only a
release that is ready and that an active rollout has sent it (its wave opened): anything else is
`no_release`, so a case cannot pull releases it was not given. Two indexed reads a chunk, the
bytes cut out by the database (substr), never a whole file read for 512 bytes of it."""

from __future__ import annotations

import base64
from typing import Any, Final

from sqlalchemy import LargeBinary, func, select
from sqlalchemy.orm import Session

from casecloud.models import Release, ReleaseFile, Rollout, RolloutCase

CHUNK: Final = 512  # bytes a reply carries: its base64 keeps the signed envelope under 1024 bytes
_FAR: Final = 1 << 24


def serve(s: Session, case_id: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(reply type, fields): ("fwdata", {"d": ...}) or ("deny", {"why": ...})."""
    rel, f, off = body["rel"], body["f"], body["off"]
    targeted = s.scalar(
        select(RolloutCase.case_id)
        .join(Rollout, Rollout.id == RolloutCase.rollout_id)
        .join(Release, Release.id == Rollout.release_id)
        .where(RolloutCase.case_id == case_id, Rollout.release_id == rel, Rollout.state == "active",
               RolloutCase.wave <= Rollout.wave, Release.ready.is_(True))
        .limit(1))
    if targeted is None:
        return "deny", {"why": "no_release"}
    if f < -1 or off < 0:
        return "deny", {"why": "bad_range"}
    start = min(off, _FAR) + 1  # SQL counts from 1; no column is _FAR long (PostgreSQL's substr takes an int4)
    if f == -1:
        row = s.execute(select(func.length(Release.manifest),
                               func.substr(Release.manifest, start, CHUNK, type_=LargeBinary))
                        .where(Release.id == rel)).one_or_none()
    else:
        row = s.execute(select(ReleaseFile.size, func.substr(ReleaseFile.data, start, CHUNK, type_=LargeBinary))
                        .where(ReleaseFile.release_id == rel, ReleaseFile.idx == f)).one_or_none()
    if row is None:
        return "deny", {"why": "bad_range"}
    size, data = row
    if off >= size:
        return "fwdata", {"d": ""}
    return "fwdata", {"d": base64.b64encode(bytes(data or b"")).decode()}
