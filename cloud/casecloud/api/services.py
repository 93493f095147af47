"""What the routes of one app share beyond a request's transaction: the runtime, the command
sender, the writer of the broker's files and the process's supervised tasks. One per app, kept
in `app.state` (deps.py hands it to the routes), so two apps in one process never mix them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud import desired
from casecloud.api.schemas import CmdResult
from casecloud.brokersync import BrokerSync
from casecloud.commands import Commander, NotConnected
from casecloud.models import Case
from casecloud.runtime import Runtime
from casecloud.supervise import Supervised


@dataclass
class Services:
    rt: Runtime
    commander: Commander | None  # None: commands answer 503
    syncer: BrokerSync | None  # None: this process does not write the broker's files
    tasks: list[Supervised] = field(default_factory=list)  # what /healthz reports

    @contextlib.contextmanager
    def case_change(self) -> Iterator[Session]:
        """A change to the case table: committed, then the broker's files rebuilt from it (when
        this process keeps them). Nothing is rebuilt for a change that raised."""
        with self.rt.sessions.begin() as s:
            yield s
        if self.syncer:
            self.syncer.sync_logged()

    async def command(self, case_id: str, body: dict[str, Any]) -> CmdResult:
        """A signed command, answered with the case's ack; the HTTP error that says why not."""
        if self.commander is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker connection in this process")
        try:
            ack = await self.commander.send(case_id, body, wait=self.rt.settings.cmd_timeout_s)
        except NotConnected:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not connected to the broker") from None
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}") from None
        except TimeoutError:
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "the case did not answer in time") from None
        except ValueError as e:  # codec.encode: over the 1024-byte limit of one message
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"command not sent: {e}") from None
        assert ack is not None
        return CmdResult(ok=ack["ok"], err=str(ack["err"]) if ack.get("err") else None)

    async def push_state(self, case_id: str, parts: list[dict[str, Any]], *, wait: float | None = None
                         ) -> dict[str, Any] | None:
        """Best effort, at once: what is not acknowledged here is re-sent by the worker when the
        case greets or beats. With `wait`, the ack of the last part (or None)."""
        commander = self.commander
        if commander is None or not commander.connected.is_set():
            return None
        ack = None
        with contextlib.suppress(NotConnected, KeyError, TimeoutError):
            for p in parts:
                ack = await commander.send(case_id, p, wait=wait if p is parts[-1] else None)
        return ack

    def still_pending(self, ids: list[str]) -> list[str]:
        """Those of the cases that have not applied their desired state yet."""
        with self.rt.sessions() as s:
            return [c.id for c in s.scalars(select(Case).where(Case.id.in_(ids)).order_by(Case.id))
                    if desired.pending(c)]
