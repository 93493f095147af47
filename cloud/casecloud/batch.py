"""The worker's batch handler: checks what cases send, decides, and signs the answers, in one
database transaction per batch. No MQTT here (worker.py receives, publishes and acknowledges).

The worker takes whatever the broker has delivered (at least one message, at most
`worker.MAX_BATCH`) and hands it to `Handler.decide`, which checks and decides every message of
the batch in ONE database transaction:

1. on PostgreSQL, lock the batch's case rows in id order (`db.lock_in_order`) before anything
   writes them: two workers' batches that share cases then queue for them instead of each
   holding some rows the other waits for (a deadlock, which PostgreSQL breaks after a second by
   failing one batch); then read the cases (keys, replay windows) and stores in one query;
2. check each message in order (docs/protocol.md), sliding each case's window in memory, and
   decide it (policy; what each kind of message does: dispatch.py), which adds rows to the
   transaction; rate counters are summed once per key and written with one upsert (policy.py),
   case events with one INSERT ... ON CONFLICT DO NOTHING;
3. per case, one UPDATE moves the stored window by compare-and-set and reserves the seqs of the
   replies; if another worker moved a window first, the whole batch is rolled back and redone
   (on SQLite, whose reads lock nothing; on PostgreSQL the rows are the batch's from step 1, and
   the compare-and-set stays as the guard it was);
4. commit, then sign the replies with the reserved seqs (the worker publishes them). On SQLite the
   commit does not wait for the disk: durability.py says when it is synced, and why that is safe.

Nothing is published before the commit, so whatever a case is told (allowed, events stored) is
committed, and survives any process's crash (events acknowledged are on disk too, and the rest
once the WAL is synced right after); a crash before the commit loses the batch's decisions and
nothing else. Replies that must
wait for something outside the database (the text with a code, the staff notified of a help call)
are finished after the commit (`Decided.finish`) without holding up the rest of the batch.

`Handler.handle` / `handle_batch` are the synchronous forms (tests, tools).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from casecloud import channel, codec, db, keyring, logs, metrics
from casecloud.backpressure import Load, deadline
from casecloud.dispatch import Dispatch, Later
from casecloud.models import Case, Event, Member, Store
from casecloud.outage import DatabaseUnavailable, is_outage
from casecloud.policy import Reply, deny
from casecloud.ratelimit import RateLimits
from casecloud.runtime import Runtime

log = logging.getLogger("casecloud.worker")  # the worker's log, as before the split

_ATTEMPTS = 10  # a batch redone this often after losing a window race goes one by one
_EVENTS = cast(Table, Event.__table__)
_CASE_ID = cast(Table, Case.__table__).c.id
_KEYS = 50_000  # opened case keys kept (a fleet's cases: 40,000)
_CASES_T = cast(Table, Case.__table__)
# A reply signed after the commit (Handler.sign): its seq taken, and what signing it needs, at once
_TAKE_SEQ = (update(_CASES_T).where(_CASES_T.c.id == bindparam("cid")).values(tx_seq=_CASES_T.c.tx_seq + 1)
             .returning(_CASES_T.c.tx_seq, _CASES_T.c.store_id, _CASES_T.c.key_sealed))
# A batch's cases and stores, and the case and store rate windows its requests check (ratelimit.py)
_CASES_AND = (select(Case, Store, RateLimits.window_sum("case", Case.id), RateLimits.window_sum("store", Case.store_id))
              .join(Store, Store.id == Case.store_id))
_CASES = _CASES_AND.where(Case.id.in_(bindparam("ids", expanding=True)))
# A batch of one case's messages (every lone request): an IN list costs its rendering at every
# execution (SQLAlchemy's post-compile step, ~20 us of a lone request), an equality nothing more
_ONE_CASE = _CASES_AND.where(Case.id == bindparam("id"))
# A member's rate window, read with the member by the loyalty's prefetch (one statement for both)
_MEMBER_WINDOW = RateLimits.window_sum("member", Member.id)


@dataclass(frozen=True)
class Out:
    topic: str
    payload: bytes


@dataclass
class _Window:
    """One case's replay window while a batch is checked, and the replies the batch owes it."""

    case: Case
    key: bytes
    seen: tuple[int, int]
    rx: int
    mask: int
    accepted: bool = False
    replies: int = 0


@dataclass
class Decided:
    """A committed batch: per message (in order), the replies to publish now; and what is finished
    after the commit (`finish`, which may block on a carrier or a webhook)."""

    handler: Handler
    ready: list[list[Out]]
    later: list[Later] = field(default_factory=list)
    synced: bool = True  # False: committed, not yet on disk (the worker has the WAL synced next)

    @property
    def pending(self) -> bool:
        return bool(self.later) or self.handler.rt.policy.alerts_pending

    def finish(self) -> list[list[Out]]:
        """Texts codes, delivers staff alerts, then signs the replies that waited for them.
        Returns them per message, like `ready`. Never raises."""
        h = self.handler
        rt = h.rt
        outs: list[list[Out]] = [[] for _ in self.ready]
        for w in self.later:
            try:
                r = rt.policy.after_commit(rt.sessions, w.reply)
                log.info("case %s %s -> %s %s", w.case_id, w.req["t"], r.t, r.why or "",
                         extra=logs.ids(case=w.case_id, req=w.req.get("id")))
                metrics.decided(w.req["t"], r.t, r.why)
                outs[w.index].append(h.sign(w.case_id, "rep", {"t": r.t, "re": w.req["id"], **r.fields}))
            except Exception:
                log.exception("failed to finish a request of case %s", w.case_id)
        try:
            rt.policy.flush_alerts(rt.sessions, wait=False)  # on the delivery threads, retried there
        except Exception:
            log.exception("failed to deliver alerts")
        return outs


def _clocked(body: dict[str, Any]) -> bool:
    """Its `exp` was checked against the clock (codec.check_env): all but a hello and an unsynced beat."""
    return body["t"] != "hello" and not (body["t"] == "beat" and body.get("synced") is False)


def _superseded(checked: dict[int, tuple[Case, _Window, int, dict[str, Any]]]) -> set[int]:
    """The checked hellos that a later hello of the same case in the batch, with a higher seq
    (signed after it), supersedes. One `time` syncs a case, which refuses any answer after it as
    a replay (docs/protocol.md; firmware before issue 15 took only the answer to its last hello),
    so an overloaded worker, whose queue is longer than the cases' repeat interval, would spend
    its time on answers nobody takes. The newest hello does all an older one would (fw, online, the
    desired state, a release to fetch). A later hello with a lower seq is none the newer (a copy
    replayed by someone, or the case's seq file lost): both are answered, as before."""
    out: set[int] = set()
    newest: dict[str, int] = {}  # case id -> the highest seq of its hellos later in the batch
    for i in sorted(checked, reverse=True):
        case, _, _, body = checked[i]
        if body["t"] != "hello":
            continue
        seq = body["seq"]
        later = newest.get(case.id)
        if later is not None and later > seq:
            out.add(i)
        else:
            newest[case.id] = seq
    return out


class _LostRace(Exception):
    pass


class _Late(Exception):
    """Requests of the batch whose deadline passed before it could commit: redo it without them."""

    def __init__(self, late: set[int]) -> None:
        super().__init__(f"{len(late)} late")
        self.late = late


class PartlyDecided(DatabaseUnavailable):
    """The database went away while a batch was redone one by one: `decided` holds the messages
    committed before it (a prefix of the batch), to answer and acknowledge; the rest is held."""

    def __init__(self, decided: Decided) -> None:
        super().__init__(len(decided.ready))
        self.decided = decided


class Handler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rejected: Counter[str] = Counter()
        self.load = Load()
        self._keys: dict[str, bytes] = {}  # sealed case key -> the key (_key)
        self._asked: dict[tuple[str, bytes], float | None] = {}  # the last `deadlines`, for `decide`

    # --- entry points ------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> list[Out]:
        """One message, side effects included. Never raises for anything a case can send."""
        return self.handle_batch([(topic, payload)])[0]

    def handle_batch(self, msgs: Sequence[tuple[str, bytes]]) -> list[list[Out]]:
        """A batch, side effects included: the replies per message, in order."""
        d = self.decide(msgs)
        later = d.finish() if d.pending else [[] for _ in msgs]
        self.rt.policy.wait_alerts()
        return [a + b for a, b in zip(d.ready, later, strict=True)]

    def deadlines(self, msgs: Sequence[tuple[str, bytes]]) -> list[float | None]:
        """Per message, when its case stops waiting (backpressure.deadline). Kept for the next
        `decide` of these messages, which the worker asks without them (once it has shed the
        late ones): each payload is parsed for its deadline once, not twice."""
        st = self.rt.settings
        out: list[float | None] = []
        for t, p in msgs:
            try:
                out.append(deadline(t, p, st.req_wait_s, st.reply_margin_s))
            except Exception:  # outside decide()'s guard: one message must cost only itself here too
                log.exception("no deadline for a message on %s: it is decided, not shed", t)
                out.append(None)
        self._asked = {(t, p): d for (t, p), d in zip(msgs, out, strict=True)}
        return out

    def _deadlines(self, msgs: Sequence[tuple[str, bytes]]) -> list[float | None]:
        """The deadlines `deadlines` gave for these messages, or anew. A deadline depends on the
        message and the settings alone, so a kept one is the one it would compute now."""
        asked, self._asked = self._asked, {}
        try:
            return [asked[(t, p)] for t, p in msgs]
        except KeyError:
            return self.deadlines(msgs)

    def decide(self, msgs: Sequence[tuple[str, bytes]], deadlines: Sequence[float | None] | None = None
               ) -> Decided:
        """Check and decide a batch in one transaction (module docstring). Never raises for
        anything a case (or an impostor) can send: a batch that fails is redone one message at a
        time, so one bad message costs only its own answer. Raises DatabaseUnavailable when the
        database is away (outage.py): then no message is to blame, and none is answered.
        deadlines: per message, when its case stops waiting (backpressure.py); a request still
        undecided then is journaled `late` instead."""
        dl = list(deadlines) if deadlines is not None else self._deadlines(msgs)
        try:
            return self._batch(msgs, dl)
        except DatabaseUnavailable:
            raise
        except Exception as e:
            if is_outage(self.rt.engine, e):
                raise DatabaseUnavailable() from e
            if len(msgs) == 1:
                log.exception("failed on a message on %s", msgs[0][0])
                return Decided(self, [[]])
            log.exception("a batch of %d failed; handling its messages one by one", len(msgs))
            return self._one_by_one(msgs, dl)

    def _one_by_one(self, msgs: Sequence[tuple[str, bytes]], dl: list[float | None]) -> Decided:
        out = Decided(self, [])
        for i, m in enumerate(msgs):
            try:
                d = self.decide([m], dl[i:i + 1])
            except DatabaseUnavailable as e:
                raise PartlyDecided(out) from e
            out.ready.append(d.ready[0])
            out.synced = out.synced and d.synced
            out.later += [replace(w, index=i) for w in d.later]
        return out

    # --- the batch ---------------------------------------------------------------------------

    def _batch(self, msgs: Sequence[tuple[str, bytes]], dl: list[float | None]) -> Decided:
        # Size, JSON and topic need no database: once, whatever the retries.
        pre: list[codec.Envelope | codec.Topic | str] = []
        for topic, payload in msgs:
            try:
                if topic.endswith("/" + codec.PRESENCE):
                    pre.append(codec.parse_topic(topic))
                else:
                    pre.append(codec.unwrap(topic, payload))
            except codec.Rejected as e:
                pre.append(e.reason)
        late: set[int] = set()
        ahead = 0.0
        for _ in range(_ATTEMPTS):
            t0 = time.monotonic()
            try:
                return self._attempt(msgs, pre, dl, late, ahead)
            except _LostRace:
                continue
            except _Late as e:  # the redo journals them late: no decision, no rate count
                late |= e.late
                # and those the redo itself would make late, or it could be redone again and again
                ahead = time.monotonic() - t0
        if len(msgs) > 1:
            return self._one_by_one(msgs, dl)
        self.rejected["replay"] += 1  # lost the race every time: treat as not accepted
        metrics.REJECTED.labels("replay").inc()
        log.warning("rejected replay on %s (window contended)", msgs[0][0])
        return Decided(self, [[]])

    def _attempt(self, msgs: Sequence[tuple[str, bytes]], pre: list[codec.Envelope | codec.Topic | str],
                 dl: list[float | None], late: set[int], ahead: float = 0.0) -> Decided:
        rt = self.rt
        now = rt.now()
        decided: list[int] = []  # requests decided (not late): checked against their deadline at the end
        late_now = 0
        rejected: list[tuple[str, str]] = []
        ids = {p.case if isinstance(p, codec.Topic) else p.topic.case for p in pre if not isinstance(p, str)}
        with rt.batch_sessions() as s:
            fx = Dispatch(rt, s, now, self._decide)
            cases: dict[str, Case] = {}
            stores: dict[str, Store] = {}
            if ids:
                # first, so what is read next is what the batch holds until its commit
                db.lock_in_order(s, _CASE_ID, ids)
                # with the rate windows of each case and store: one statement (docs/cloud.md)
                rates = rt.policy.rates
                sums: list[tuple[str, str, int]] = []
                stmt, by = (_ONE_CASE, {"id": next(iter(ids))}) if len(ids) == 1 else (_CASES, {"ids": list(ids)})
                for case, store, n_case, n_store in s.execute(stmt, {**by, "since": rates.since()}):
                    cases[case.id], stores[store.id] = case, store
                    sums += [("case", case.id, n_case), ("store", store.id, n_store)]
                rates.seed(s, sums)
            windows: dict[str, _Window] = {}
            checked: dict[int, tuple[Case, _Window, int, dict[str, Any]]] = {}  # index -> case, window, rx, body
            for i, ((topic, _payload), p) in enumerate(zip(msgs, pre, strict=True)):  # the checks, in order
                if isinstance(p, str):
                    rejected.append((p, topic))
                    continue
                if isinstance(p, codec.Topic):  # presence: a hint, not signed (below)
                    continue
                case = cases.get(p.topic.case)
                if case is None or case.store_id != p.topic.store:
                    rejected.append(("unknown_case", topic))
                    continue
                w = windows.get(case.id)
                if w is None:
                    w = windows[case.id] = _Window(case, self._key(s, case), (case.rx_seq, case.rx_mask),
                                                   case.rx_seq, case.rx_mask)
                try:
                    body, rx, mask = codec.check_env(w.key, topic, p, now, w.rx, w.mask)
                    if body["exp"] <= rt.replay_floor and _clocked(body):  # durability.recover
                        raise codec.Rejected("replay")
                except codec.Rejected as e:
                    rejected.append((e.reason, topic))
                    continue
                w.rx, w.mask = rx, mask
                w.accepted = True
                checked[i] = (case, w, rx, body)
            self._prefetch(s, checked)
            superseded = _superseded(checked)
            for i, ((_topic, payload), p) in enumerate(zip(msgs, pre, strict=True)):  # the decisions, in order
                if isinstance(p, codec.Topic):
                    case = cases.get(p.case)
                    if case is not None and case.store_id == p.store:
                        case.online = payload.strip() == b"online"
                        if not case.online:
                            case.synced = False  # gone: its next connection greets anew
                        else:
                            rt.policy.alerts.resolve(s, case.store_id, case.id, ("offline",), now, "case: online")
                        case.last_seen = now
                    continue
                if (got := checked.get(i)) is None or isinstance(p, str):
                    continue
                case, w, rx, body = got
                if i in superseded:  # checked (its seq is in the window), acknowledged, not answered
                    continue
                if p.topic.kind == "req" and (due := dl[i]) is not None:
                    over = rt.clock() - due
                    if i in late or over + ahead > 0:  # its case has given up: no decision, no count
                        if body["t"] != "fwget":  # a release's chunk is no shopper's: asked again, not journaled
                            rt.policy.late(s, case, body["t"], max(int(over * 1000), 0))
                        fx.notes.append(("case %s %s -> late by %d ms", case.id, body["t"], int(over * 1000)))
                        late_now += 1
                        continue
                    decided.append(i)
                w.replies += fx.message(i, stores[case.store_id], case, rx, p.topic.kind, body)
            db.insert_ignore(s, _EVENTS, fx.events, ("case_id", "event_id"))
            # in id order, as step 1 locked them; the version read (or bumped to, desired.on_refused):
            # a change since redoes the batch
            moves = [channel.Advance(cid, w.seen, (w.rx, w.mask), w.case.tx_seq, w.replies, w.case.desired_v)
                     for cid, w in sorted(windows.items()) if w.accepted]
            if not channel.advance(s, moves, now):
                s.rollback()
                raise _LostRace()
            # The last moment before the decisions become final: an allow must not be committed
            # (nor counted against the limits) for a case that has stopped waiting for it. The
            # commit's own work (journal insert, rate upsert, alerts, which may wait on another
            # worker's lock, the flush) is done first, so only the commit itself comes after this check.
            db.prepare_commit(s)
            t = rt.clock()
            overdue = {i for i in decided if (due := dl[i]) is not None and t > due}
            if overdue:
                s.rollback()
                raise _Late(overdue)
            s.commit()
        # On disk before the answers when a case will delete what they acknowledge; the rest is
        # answered now and synced right after (worker.py), an OS crash between covered by
        # durability.recover.
        synced = rt.wal is None
        if rt.wal is not None and any(kind == "evtack" for _, _, kind, _ in fx.replies):
            rt.wal.sync()
            synced = True
        self.load.late += late_now
        metrics.LATE.inc(late_now)
        next_seq = {m.case_id: m.tx + 1 for m in moves}
        # Committed: from here on nothing may send the batch back (it would be refused as replays).
        metrics.SUPERSEDED.inc(len(superseded))
        for reason, topic in rejected:
            self.rejected[reason] += 1
            metrics.REJECTED.labels(reason).inc()
            log.warning("rejected %s on %s", reason, topic)  # never the payload: it may hold a number
        for note in fx.notes:
            log.info(*note)
        for store_id, cid, rid, t, outcome, why in fx.decided:
            log.info("case %s %s -> %s %s", cid, t, outcome, why or "", extra=logs.ids(cid, store_id, rid))
            metrics.decided(t, outcome, why)
        d = Decided(self, [[] for _ in msgs], fx.later, synced)
        st = rt.settings
        for i, cid, kind, body in fx.replies:
            w = windows[cid]
            seq, next_seq[cid] = next_seq[cid], next_seq[cid] + 1  # a failed reply still uses its seq
            try:
                topic, payload = channel.sign(w.key, w.case.store_id, cid, kind, body, seq, now, st.msg_ttl_s,
                                              st.topic_prefix)
            except Exception:  # e.g. too large: this reply is lost, not the others
                log.exception("case %s: %s reply not signed", cid, kind)
                continue
            d.ready[i].append(Out(topic, payload))
        return d

    def _prefetch(self, s: Session, checked: dict[int, tuple[Case, _Window, int, dict[str, Any]]]) -> None:
        """The cards and app tokens the batch's requests name, with their members' rate windows,
        in one query (a kind), for the policy to read from the transaction's caches: a batch of
        requests with different cards costs what one does (docs/cloud.md)."""
        prefetch = getattr(self.rt.policy.loyalty, "prefetch", None)
        toks = [(b["tok"][:128], b["src"]) for _, _, _, b in checked.values() if b["t"] == "token"]
        if prefetch is None or not toks:
            return
        rates = self.rt.policy.rates
        found = prefetch(s, toks, _MEMBER_WINDOW, {"since": rates.since()})
        rates.seed(s, [("member", m.id, n) for m, n in found])

    def _key(self, s: Session, case: Case) -> bytes:
        return self._opened(s, case.id, case.key_sealed)

    def _opened(self, s: Session, case_id: str, sealed: str | None) -> bytes:
        """The case's key, opened once per sealed value (a tenth of a message's checks otherwise):
        a rotated or rewrapped key is another value, so an old one is never used for it. Read by
        the deciding thread and by `finish`'s (dict operations are atomic)."""
        key = self._keys.get(sealed) if sealed is not None else None
        if key is None:
            if sealed is None:
                raise keyring.KeyringError(f"case {case_id} has no sealed key (run seal_legacy)")
            key = keyring.of(s).open(sealed)
            if len(self._keys) >= _KEYS:
                with contextlib.suppress(RuntimeError, KeyError, StopIteration):  # the other thread's eviction
                    del self._keys[next(iter(self._keys))]  # the oldest
            self._keys[sealed] = key
        return key

    def _decide(self, s: Session, store: Store, case: Case, body: dict[str, Any]) -> Reply:
        p = self.rt.policy
        t = body["t"]
        if t == "phone":
            sid = body.get("sid")
            return p.on_phone(s, store, case, body["num"][:24], db.case_text(sid, 32) if isinstance(sid, str) else None)
        if t == "otp":
            return p.on_otp(s, store, case, db.case_text(body["sid"], 32), body["code"][:12])
        if t == "token":
            return p.on_token(s, store, case, body["tok"][:128], body["src"])
        if t == "help":
            why = body.get("why")
            return p.on_help(s, store, case, why if isinstance(why, str) else None)
        return deny("unavailable")

    def sign(self, case_id: str, kind: str, body: dict[str, Any]) -> Out:
        """Sign one message in its own transaction (takes the next seq). One statement takes the
        seq and reads what signing needs; the key comes from `_opened` (the row's sealed value, so
        a key rotated since the batch is the one used). Raises channel.UnknownCase for a case
        deleted since."""
        st = self.rt.settings
        with self.rt.sessions.begin() as s:
            row = s.connection().execute(_TAKE_SEQ, {"cid": case_id}).first()
            if row is None:
                raise channel.UnknownCase()
            seq, store_id, sealed = row
            key = self._opened(s, case_id, sealed)
        topic, payload = channel.sign(key, store_id, case_id, kind, body, int(seq), self.rt.now(), st.msg_ttl_s,
                                      st.topic_prefix)
        return Out(topic, payload)
