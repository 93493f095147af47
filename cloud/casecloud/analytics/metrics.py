"""What the analytics count, and how one case's events become counts per UTC hour.

Pure functions over rows already read (aggregate.py reads them): every figure of an hour is a
function of the case's events within `LOOK_S` of that hour and of the alerts overlapping it, so
recomputing a few hours from a window of events (the incremental job) and recomputing everything
(the rebuild) give the same counts. Nothing here keeps or returns an identifier: a metric is a
name from the vocabulary below and a count.

Where each figure comes from (docs/analytics.md has the table):

- requests by method: the first step of a flow, as the cloud journaled it: a `challenge` for a
  code after a typed number (phone), a `challenge` for the number after a tap (card, nfc), an
  `allow` straight away (trusted card/nfc, the app), or a `deny` at the first step; and the case's
  own `denied` for a request it refused without asking (offline, tamper latched);
- grants: the case's `granted` (the coil energized), by `source`, staff split by credential kind;
- denials: the cloud's `deny` by `why`, the case's `denied` for the reasons only it decides;
- abandoned: a code texted and no code entered within the code's lifetime (`abandon_code`); a tap
  asked for the phone number and none submitted in that time (`abandon_phone`); digits typed on
  the keypad and left unsent, the case's own `abandoned` by its `step` (`abandon_typed.phone`,
  `abandon_typed.code`);
- time to open: from the flow's first request (the tap, or the typed number's submission) to the
  `granted` (histogram `h_grant`) and to the `opened` that follows within a minute (`h_open`);
  from the flow's first key or tap, as the case measured it (the grant's `wait_ms`), to the
  `granted` (`h_first`) and on to that `opened` (`h_first_open`); door-open dwell: `opened` to
  the next `closed` (`h_dwell`);
- theft pressure: `forced`, `held_open`, `tamper`, `lockout`, `key_flood`, wrong-code bursts (the
  third wrong code within 5 minutes on one case), `after_hours` opens (store hours, hours.py);
- health: `boot` and `fw:<version>` (boots per firmware version), `fault` and `fault:<part>`,
  `offline_s` (seconds in an `offline` alert, split over the hours it spans);
- help calls: `help` alerts by the hour raised, `help_acked` and histogram `h_ack` (seconds until a
  person acknowledged, or resolved, it);
- trusted share: `allow` (every grant the cloud decided) and `trusted` (those by the fast path: a
  trusted member's card or NFC tap, no code).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

HOUR = 3600
DAY = 86_400
LOOK_S = 900  # how far a figure looks around its event: pairs and bursts span at most this
GRANT_AFTER_ALLOW_S = 60  # an allow's grant comes within seconds (the case waits 8 s at most)
OPEN_AFTER_GRANT_S = 60
BURST_S, BURST_N = 300, 3
# The farthest an event's figures look (a grant back to its allow, to the code's challenge, to the
# tap's challenge): an event changes the figures of events at most this far from it.
REACH_S = GRANT_AFTER_ALLOW_S + 2 * LOOK_S

SHOPPER = ("phone", "card", "nfc", "app")
METHODS = (*SHOPPER, "pin", "badge", "staff", "other")
CASE_REASONS = frozenset({"bad_pin", "offline", "tamper"})
REASONS = ("unknown", "bad_number", "bad_code", "expired", "flagged", "no_guests", "rate_limited",
           "unavailable", "bad_pin", "offline", "tamper", "other")
ALARMS = ("forced", "held_open", "tamper", "lockout", "key_flood")
TYPED_STEPS = ("phone", "code")  # an `abandoned` event's step: the keypad screen left
# Histogram bins: the upper edges in seconds (the last bin is everything above).
EDGES: dict[str, tuple[int, ...]] = {
    "h_grant": (2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
    "h_open": (2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
    "h_first": (2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
    "h_first_open": (2, 4, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300),
    "h_dwell": (5, 10, 20, 30, 60, 90, 120, 180, 300, 600),
    "h_ack": (30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200),
}
# A version or fault part becomes part of a metric name only in this shape (a case sends them).
_TOKEN = re.compile(r"[A-Za-z0-9._+-]{1,24}")

Counts = Counter[tuple[int, str]]  # (hour, metric) -> n


@dataclass(frozen=True)
class Ev:
    ts: int
    id: int
    source: str  # case | cloud
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class AlertRow:
    kind: str  # help | offline
    created_at: int
    first_at: int
    acked_at: int | None
    resolved_at: int | None


def hour_of(ts: int) -> int:
    return ts - ts % HOUR


def token(value: object) -> str | None:
    """A case-sent string fit for a metric name (a firmware version, a fault's part), else None."""
    return value if isinstance(value, str) and _TOKEN.fullmatch(value) and not re.search(r"\d{7}", value) else None


def bin_of(metric: str, seconds: int) -> str:
    return f"{metric}:{bisect.bisect_left(EDGES[metric], max(seconds, 0))}"


class _Window:
    """One case's events sorted by (ts, id), with lookups bounded in time."""

    def __init__(self, evs: Sequence[Ev]) -> None:
        self.evs = evs
        self.ts = [e.ts for e in evs]

    def before(self, i: int, span: int, match: Callable[[Ev], bool]) -> int | None:
        """The index of the latest event before i, at most `span` s earlier, that matches."""
        lo = self.evs[i].ts - span
        for j in range(i - 1, -1, -1):
            if self.evs[j].ts < lo:
                return None
            if match(self.evs[j]):
                return j
        return None

    def after(self, i: int, span: int, match: Callable[[Ev], bool]) -> int | None:
        hi = self.evs[i].ts + span
        for j in range(i + 1, len(self.evs)):
            if self.evs[j].ts > hi:
                return None
            if match(self.evs[j]):
                return j
        return None

    def count_in(self, lo: int, hi: int, match: Callable[[Ev], bool]) -> int:
        a, b = bisect.bisect_left(self.ts, lo), bisect.bisect_right(self.ts, hi)
        return sum(1 for e in self.evs[a:b] if match(e))


def _is(kind: str, source: str) -> Callable[[Ev], bool]:
    return lambda e: e.kind == kind and e.source == source


def _code_challenge(e: Ev) -> bool:
    return e.kind == "challenge" and e.source == "cloud" and e.data.get("need") == "code"


def _phone_challenge(e: Ev) -> bool:
    return e.kind == "challenge" and e.source == "cloud" and e.data.get("need") == "phone"


def _otp_step(e: Ev) -> bool:
    return e.source == "cloud" and e.kind in ("allow", "deny") and e.data.get("via") == "otp"


def _phone_step(e: Ev) -> bool:
    """The number answering a tap's `need: phone` challenge, whatever the cloud made of it."""
    return e.source == "cloud" and ((e.kind == "deny" and e.data.get("via") == "token") or _code_challenge(e))


def _flow_event(e: Ev) -> bool:
    return e.source == "cloud" and e.kind in ("challenge", "allow", "deny")


def _bad_code(e: Ev) -> bool:
    return e.source == "cloud" and e.kind == "deny" and e.data.get("why") == "bad_code"


def case_counts(evs: Sequence[Ev], ttl: int, staff_kind: Callable[[str], str | None],
                after_hours: Callable[[int], bool], only: Callable[[int], bool] | None = None) -> Counts:
    """Counts per (hour, metric) for one case's events (sorted by ts, id). `ttl`: the code's
    lifetime (settings.otp_ttl_s, at most LOOK_S); `only`: count only events whose hour it accepts
    (the incremental job's hours; the window it passes reaches LOOK_S around them)."""
    ttl = min(ttl, LOOK_S)
    w = _Window(evs)
    out: Counts = Counter()
    for i, e in enumerate(evs):
        h = hour_of(e.ts)
        if only is not None and not only(h):
            continue
        for metric in _event_metrics(w, i, ttl, staff_kind, after_hours):
            out[(h, metric)] += 1
    return out


def _event_metrics(w: _Window, i: int, ttl: int, staff_kind: Callable[[str], str | None],
                   after_hours: Callable[[int], bool]) -> Iterable[str]:
    e = w.evs[i]
    d = e.data
    if e.source == "cloud":
        yield from _cloud_metrics(w, i, ttl)
        return
    if e.kind == "granted":
        yield from _grant_metrics(w, i, ttl, staff_kind)
    elif e.kind == "denied":
        why = d.get("reason")
        if isinstance(why, str) and why in CASE_REASONS:
            yield f"deny.{why}"
            src = d.get("source")
            if why != "bad_pin" and src in SHOPPER:
                yield f"req.{src}"  # refused on the case: the cloud never saw it
    elif e.kind == "opened":
        yield "opened"
        if after_hours(e.ts):
            yield "after_hours"
        j = w.after(i, LOOK_S, _is("closed", "case"))
        if j is not None:
            yield bin_of("h_dwell", w.evs[j].ts - e.ts)
    elif e.kind in ALARMS:
        yield e.kind
    elif e.kind == "abandoned":
        step = d.get("step")
        yield f"abandon_typed.{step}" if step in TYPED_STEPS else "abandon_typed.other"
    elif e.kind == "fault":
        yield "fault"
        part = token(d.get("part"))
        if part:
            yield f"fault:{part}"
    elif e.kind == "boot":
        yield "boot"
        fw = token(d.get("fw"))
        yield f"fw:{fw}" if fw else "fw:unknown"


def _cloud_metrics(w: _Window, i: int, ttl: int) -> Iterable[str]:
    e = w.evs[i]
    d = e.data
    via = d.get("via")
    if e.kind == "challenge":
        if d.get("need") == "code":
            prev = w.before(i, ttl, _flow_event)
            continuation = prev is not None and _phone_challenge(w.evs[prev])
            if not continuation:
                yield "req.phone"
            nxt = w.after(i, ttl, lambda x: _otp_step(x) or _code_challenge(x) or _phone_challenge(x))
            if nxt is None or not _otp_step(w.evs[nxt]):
                yield "abandon_code"
        elif d.get("need") == "phone":
            yield f"req.{via}" if via in SHOPPER else "req.other"
            nxt = w.after(i, ttl, lambda x: _phone_step(x) or _phone_challenge(x))
            if nxt is None or _phone_challenge(w.evs[nxt]):
                yield "abandon_phone"
    elif e.kind == "allow":
        yield "allow"
        if via in ("card", "nfc"):
            yield "trusted"
        if via in ("card", "nfc", "app"):
            yield f"req.{via}"
    elif e.kind == "deny":
        why = d.get("why")
        yield f"deny.{why}" if isinstance(why, str) and why in REASONS else "deny.other"
        if via in SHOPPER:
            yield f"req.{via}"
        if _bad_code(e) and _burst_starts(w, i):
            yield "code_burst"


def _burst_starts(w: _Window, i: int) -> bool:
    """This wrong code is the BURST_N-th within BURST_S, and the one before it was not."""
    e = w.evs[i]
    if w.count_in(e.ts - BURST_S + 1, e.ts, _bad_code) < BURST_N:
        return False
    # the count at the previous wrong code, ties in ts included up to it (sorted by ts, id)
    p = w.before(i, BURST_S, _bad_code)
    if p is None:
        return True
    a = bisect.bisect_left(w.ts, w.evs[p].ts - BURST_S + 1)
    return sum(1 for x in w.evs[a:p + 1] if _bad_code(x)) < BURST_N


def _grant_metrics(w: _Window, i: int, ttl: int, staff_kind: Callable[[str], str | None]) -> Iterable[str]:
    e = w.evs[i]
    d = e.data
    ms = d.get("ms")
    if isinstance(ms, int) and ms <= 0:
        return  # the door was already open, the lock resting: nothing unlocked
    g = d.get("g")
    if d.get("recovered") and g is not None and (
            w.before(i, LOOK_S, lambda x: x.kind == "granted" and x.source == "case" and x.data.get("g") == g)
            is not None):
        return  # journaled again after a power cut: the original counts
    src = d.get("source")
    if src == "staff":
        who = d.get("who")
        kind = staff_kind(who) if isinstance(who, str) else None
        yield f"grant.{kind}" if kind in ("pin", "badge") else "grant.staff"
        return
    yield f"grant.{src}" if src in SHOPPER else "grant.other"
    if src not in SHOPPER:
        return
    wait = d.get("wait_ms")
    # the case's monotonic clock, from the first key or tap; bool is an int too
    if type(wait) is int and 0 <= wait < HOUR * 1000:
        yield bin_of("h_first", -(-wait // 1000))  # whole seconds, rounded up: a bin's upper edge
        o = w.after(i, OPEN_AFTER_GRANT_S, _is("opened", "case"))
        if o is not None:  # and on to the door opened: the case's wait plus grant to open (whole s)
            yield bin_of("h_first_open", -(-wait // 1000) + w.evs[o].ts - e.ts)
    a = w.before(i, GRANT_AFTER_ALLOW_S, _is("allow", "cloud"))
    if a is None:
        return
    start = a
    if w.evs[a].data.get("via") == "otp":
        c = w.before(a, ttl, _code_challenge)
        if c is None:
            return
        start = c
        p = w.before(c, ttl, _flow_event)
        if p is not None and _phone_challenge(w.evs[p]):
            start = p
    t0 = w.evs[start].ts
    yield bin_of("h_grant", e.ts - t0)
    o = w.after(i, OPEN_AFTER_GRANT_S, _is("opened", "case"))
    if o is not None:
        yield bin_of("h_open", w.evs[o].ts - t0)


def alert_counts(alerts: Iterable[AlertRow], now: int, only: Callable[[int], bool] | None = None) -> Counts:
    """Help calls (by the hour raised) and offline seconds (split over the hours spanned; an
    unresolved outage up to `now`)."""
    out: Counts = Counter()
    for a in alerts:
        if a.kind == "help":
            h = hour_of(a.created_at)
            if only is not None and not only(h):
                continue
            out[(h, "help")] += 1
            answered = a.acked_at if a.acked_at is not None else a.resolved_at
            if answered is not None:
                out[(h, "help_acked")] += 1
                out[(h, bin_of("h_ack", answered - a.created_at))] += 1
        elif a.kind == "offline":
            end = a.resolved_at if a.resolved_at is not None else now
            t = a.first_at
            while t < end:
                h = hour_of(t)
                nxt = min(h + HOUR, end)
                if only is None or only(h):
                    out[(h, "offline_s")] += nxt - t
                t = nxt
    return out


def percentile(hist: dict[int, int], metric: str, q: float) -> int | None:
    """The bin edge (seconds, an upper bound) below which a fraction q of the durations lie."""
    n = sum(hist.values())
    if n == 0:
        return None
    edges = EDGES[metric]
    need, seen = q * n, 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= need:
            return edges[b] if b < len(edges) else edges[-1] + 1
    return edges[-1] + 1
