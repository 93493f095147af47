"""After the database was restored from a backup (`python -m casecloud after-restore`,
docs/operations.md): what the backup's state gets wrong about the cases, set right for all of them.

- Seqs: the cloud's outgoing seq is back where it was at the backup, below what the cases have
  seen since, so each case would refuse the cloud's messages as replays; and the stored replay
  windows are old. `channel.resync_all`: the admin resync of docs/protocol.md for every case (the
  outgoing seq 2^19 ahead, the window re-established by the case's next message).
- Desired state (desired.py): a version must name one content, and the versions the cases applied
  since the backup name contents the database no longer has. Every managed case's version jumps
  `DESIRED_JUMP` ahead (and is sent at once), so no version a case holds can equal the restored
  one: each case is sent the restored staff set and config, and reports it applied.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import update
from sqlalchemy.orm import Session

from casecloud import channel
from casecloud.models import Case

# Far beyond the changes a fleet makes between a backup and its restore (each staff change is one).
DESIRED_JUMP: Final = 1 << 16


def after_restore(s: Session, now: int) -> tuple[int, int]:
    """In the caller's transaction. Returns (cases resynchronized, cases whose desired state moved)."""
    n = channel.resync_all(s, now)
    moved = s.execute(update(Case).where(Case.desired_v != 0)
                      .values(desired_v=Case.desired_v + DESIRED_JUMP, state_sends=0, state_sent_at=None))
    return n, int(getattr(moved, "rowcount", 0))
