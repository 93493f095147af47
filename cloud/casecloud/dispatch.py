"""What each checked message of a batch does in the batch's transaction (batch.py): a request goes
to the policy, a hello or a beat updates the case's presence, status and desired state, events
become journal rows (for the batch's one insert), the status shown and alerts, an ack is
journaled. Nothing here signs or publishes: the replies are collected, and signed with the seqs
the batch reserves only once it has committed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from casecloud import db, desired, status
from casecloud.models import Case, Store
from casecloud.policy import Reply
from casecloud.privacy import scrub
from casecloud.releases import chunks, rollout
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.worker")  # the worker's log, as before the split

_BEAT_FIELDS = ("up", "door", "lock", "heap", "rssi", "fw")
_EVENT_ID_MAX = 40

Decide = Callable[[Session, Store, Case, dict[str, Any]], Reply]


@dataclass
class Later:
    """A request whose reply waits for a side effect after the commit (a text, a staff alert)."""

    index: int
    case_id: str
    req: dict[str, Any]
    reply: Reply


@dataclass
class Dispatch:
    """One attempt at a batch: the messages' effects on the session, and what they leave for
    after the commit. `replies` are (message index, case id, kind, body), in order."""

    rt: Runtime
    s: Session
    now: int
    decide: Decide  # a request's decision (the handler's, so a test can make it fail)
    replies: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[tuple[Any, ...]] = field(default_factory=list)  # log lines, written once committed
    # requests answered now: (store, case, request id, kind, outcome, why), logged and counted once committed
    decided: list[tuple[str, str, Any, str, str, str | None]] = field(default_factory=list)
    later: list[Later] = field(default_factory=list)

    def message(self, i: int, store: Store, case: Case, rx: int, kind: str, body: dict[str, Any]) -> int:
        """Message `i` of the batch, checked (rx: the case's window after it). Returns how many
        replies it owes the case now: each takes one of the seqs the batch reserves."""
        before = len(self.replies)
        self._message(i, store, case, rx, kind, body)
        return len(self.replies) - before

    def _message(self, i: int, store: Store, case: Case, rx: int, kind: str, body: dict[str, Any]) -> None:
        s, now, replies = self.s, self.now, self.replies
        t = body["t"]
        if kind == "req":
            if t == "fwget":  # a release's chunk (releases/chunks.py): not a shopper request, no policy
                typ, fields = chunks.serve(s, case.id, body)
                replies.append((i, case.id, "rep", {"t": typ, "re": body["id"], **fields}))
                return
            r = self.decide(s, store, case, body)
            if r.text is not None or t == "help":  # answered once the code is sent / staff told
                self.later.append(Later(i, case.id, body, r))
                return
            replies.append((i, case.id, "rep", {"t": r.t, "re": body["id"], **r.fields}))
            self.decided.append((store.id, case.id, body["id"], t, r.t, r.why))
        elif t == "hello":
            case.fw = db.case_text(body["fw"], 40)
            case.online = True
            self.notes.append(("case %s connected (fw %s)", case.id, case.fw))
            replies.append((i, case.id, "cmd", {"t": "time", "re": body["id"], "now": now, "rx": rx,
                                                 "sv": case.desired_v}))
            self._state(i, case, desired.on_hello(s, case, body.get("sv"), now))  # after the time
            self._state(i, case, rollout.on_status(s, case.id, body, now, hello=True))  # a release to fetch
        elif t == "beat":
            case.online = True
            # Only an explicit false says unsynced: a beat without the field passed the clock
            # check, so its sender's clock is set (firmware from before the field).
            case.synced = body.get("synced") is not False
            case.last_status, case.status_at = status.from_beat(
                case.last_status, {k: body[k] for k in _BEAT_FIELDS if k in body}, now)
            if case.synced:  # an unsynced case refuses commands (no_clock); its hello gets the state
                self._state(i, case, desired.on_beat(s, case, body.get("sv"), now))
                self._state(i, case, rollout.on_status(s, case.id, body, now, hello=False))
        elif t == "evts":
            start = len(self.events)
            replies.append((i, case.id, "evtack", {"t": "evtack", "re": body["id"],
                                                    "ids": self._events(store.id, case.id, body)}))
            # the door and alarms shown at once, not at the next beat; alarms become alerts
            new = self.events[start:]
            shown = status.from_events(case.last_status, case.status_at, new, now)
            if shown is not None:
                case.last_status, case.status_at = shown
            self.rt.policy.alerts.from_events(s, case, new, now)
            rollout.on_events(s, case.id, new, now)  # a release's progress (kind fw)
        elif t == "ack":
            self.rt.policy.journal(s, case, "cmd_ack", re=body["re"], ok=body["ok"], err=str(body.get("err", ""))[:60])
            rollout.on_ack(s, case.id, body, now)  # a cmd fw's answer moves the case's rollout state
            if body["ok"] is False and "sv" in body:  # a refused state: the next one goes out at once
                self._state(i, case, desired.on_refused(s, case, body["sv"], now))

    def _state(self, i: int, case: Case, parts: list[dict[str, Any]]) -> None:
        """The desired state's commands as replies of the batch (signed after its commit)."""
        self.replies += [(i, case.id, "cmd", p) for p in parts]

    def _events(self, store_id: str, case_id: str, body: dict[str, Any]) -> list[str]:
        """Rows for the batch's insert (duplicates skipped there); returns the ids to acknowledge."""
        acked: list[str] = []
        for e in body["evts"]:
            if not isinstance(e, dict) or not isinstance(e.get("i"), str) or not e["i"]:
                continue  # without an id it can be neither stored nor acknowledged
            eid = db.case_text(e["i"], _EVENT_ID_MAX)
            acked.append(e["i"])
            kind, ts, data = e.get("k"), e.get("ts"), e.get("d", {})
            if not isinstance(kind, str) or type(ts) is not int or not isinstance(data, dict):
                log.warning("case %s event %s malformed: dropped", case_id, eid)
                continue
            self.events.append({"store_id": store_id, "case_id": case_id, "event_id": eid, "source": "case",
                                "kind": db.case_text(kind, 32), "ts": ts, "received_at": self.now,
                                "member_id": None, "phone_last2": None, "data": scrub(data)})
        return acked
