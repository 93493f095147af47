"""A generated stretch of store life, written straight into the events and alerts tables as the
worker would have stored it: shoppers by phone (some abandoning), trusted and untrusted taps,
app unlocks, wrong-code bursts, forced doors, help calls, outages, boots, staff PINs. With member
ids and phone digits on the events, so the privacy tests can look for them in the aggregates.

Used by tests/cloud/test_analytics*.py (a month) and bench/analytics_bench.py (a million events).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from casecloud.analytics.suppress import GROUPS, K
from casecloud.models import Alert, Case, Event, Staff, Store

MEMBER_IDS = [f"m_{i:08x}deadbeef" for i in range(40)]
PHONE_LAST2 = ["42", "17", "93"]
STAFF_IDS = ["s_0123456789ab", "s_ba9876543210"]
FW = ["1.4.2", "1.5.0"]


def seed(s: Session, stores: int, cases: int, now: int) -> list[tuple[str, str]]:
    """Stores st0.., each with `cases` cases cN-M, and two staff credentials in st0."""
    out = []
    for i in range(stores):
        sid = f"st{i}"
        s.add(Store(id=sid, name=f"Store {i}", created_at=now))
        s.flush()
        for j in range(cases):
            cid = f"c{i}-{j}"
            s.add(Case(id=cid, store_id=sid, name=f"Case {j}", mqtt_password_hash="x", fw=FW[j % 2],
                       created_at=now))
            out.append((sid, cid))
    s.add(Staff(id=STAFF_IDS[0], store_id="st0", kind="pin", hash="0" * 64, created_at=now))
    s.add(Staff(id=STAFF_IDS[1], store_id="st0", kind="badge", hash="1" * 64, created_at=now))
    s.flush()
    return out


class Gen:
    """Flows on one case, appended as event rows (cloud and case sides, ts in order)."""

    def __init__(self, rng: random.Random, store: str, case: str) -> None:
        self.rng, self.store, self.case = rng, store, case
        self.rows: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.g = 0

    def ev(self, side: str, kind: str, ts: int, member: str | None = None, last2: str | None = None,
           late: int = 0, **data: Any) -> None:
        eid = ("c-" if side == "cloud" else "j") + secrets.token_hex(6)
        self.rows.append({"store_id": self.store, "case_id": self.case, "event_id": eid, "source": side,
                          "kind": kind, "ts": ts, "received_at": ts + late, "member_id": member,
                          "phone_last2": last2, "data": data})

    def grant(self, t: int, src: str, who: str | None = None) -> int:
        self.g += 1
        self.ev("case", "granted", t, source=src, who=who or "-", ms=3000, g=self.g)
        t += self.rng.randint(1, 4)
        self.ev("case", "opened", t, source=src)
        t += self.rng.randint(5, 200)
        self.ev("case", "closed", t, after=1)
        return t

    def flow(self, t: int) -> int:
        r = self.rng.random()
        m = self.rng.choice(MEMBER_IDS)
        l2 = self.rng.choice(PHONE_LAST2)
        if r < 0.35:  # phone: number, code texted, code typed (or abandoned, or wrong)
            self.ev("cloud", "challenge", t, m, l2, need="code")
            x = self.rng.random()
            if x < 0.15:
                return t + 200  # abandoned
            t += self.rng.randint(8, 40)
            if x < 0.25:
                self.ev("cloud", "deny", t, m, l2, why="bad_code", via="otp")
                t += self.rng.randint(3, 10)
            self.ev("cloud", "allow", t, m, l2, grant="g_" + secrets.token_hex(6), via="otp")
            return self.grant(t + 1, "phone")
        if r < 0.55:  # a tap: trusted goes straight through
            src = self.rng.choice(["card", "nfc"])
            if self.rng.random() < 0.5:
                self.ev("cloud", "allow", t, m, l2, grant="g_x", via=src)
                return self.grant(t + 1, src)
            self.ev("cloud", "challenge", t, m, need="phone", via=src)
            if self.rng.random() < 0.2:
                return t + 200  # never typed the number
            t += self.rng.randint(10, 30)
            self.ev("cloud", "challenge", t, m, l2, need="code")
            t += self.rng.randint(8, 30)
            self.ev("cloud", "allow", t, m, l2, grant="g_y", via="otp")
            return self.grant(t + 1, src)
        if r < 0.65:
            self.ev("cloud", "allow", t, m, l2, grant="g_z", via="app")
            return self.grant(t + 1, "app")
        if r < 0.72:
            self.ev("cloud", "deny", t, None, None, why=self.rng.choice(["unknown", "bad_number", "no_guests"]),
                    via=self.rng.choice(["phone", "card"]))
            return t + 5
        if r < 0.75:  # a burst of wrong codes
            self.ev("cloud", "challenge", t, m, l2, need="code")
            for _ in range(self.rng.randint(3, 5)):
                t += self.rng.randint(5, 20)
                self.ev("cloud", "deny", t, m, l2, why="bad_code", via="otp")
            return t
        if r < 0.80:
            who = self.rng.choice(STAFF_IDS)
            return self.grant(t, "staff", who)
        if r < 0.83:
            self.ev("case", "forced", t)
            return t + 30
        if r < 0.85:
            self.ev("case", "held_open", t, s=60)
            return t + 5
        if r < 0.87:
            self.ev("case", "denied", t, source="phone", reason="offline", last2=l2)
            return t + 5
        if r < 0.89:
            self.ev("cloud", "help_call", t, why="")
            acked = t + self.rng.randint(20, 600) if self.rng.random() < 0.8 else None
            self.alerts.append({"store_id": self.store, "case_id": self.case, "kind": "help", "severity": "normal",
                                "state": "resolved", "detail": "help", "count": 1,
                                "first_at": t, "last_at": t, "created_at": t, "acked_at": acked,
                                "acked_by": "Staff Person" if acked else None, "resolved_by": "Staff Person",
                                "resolved_at": (acked or t + 1200) + 60})
            return t + 5
        if r < 0.895:
            self.ev("case", "boot", t, reset="power", provisioned=True, fw=self.rng.choice(FW))
            self.ev("case", "fault", t + 1, part="nfc", error="no chip")
            return t + 10
        if r < 0.90:
            end = t + self.rng.randint(400, 5000)
            self.alerts.append({"store_id": self.store, "case_id": self.case, "kind": "offline", "severity": "high",
                                "state": "resolved", "detail": "offline", "count": 1, "first_at": t, "last_at": t,
                                "created_at": t + 300, "resolved_at": end, "resolved_by": "case: online"})
            return end
        self.ev("case", "lockout", t, s=30, level=1)
        return t + 30


def month_rows(s: Session | None, start: int, days: int, *, stores: int = 2, cases: int = 3,
               per_case_day: int = 40, seed_: int = 7) -> Iterator[Gen]:
    """Seed the stores and cases (unless `s` is None: seeded already), then yield each case's
    generated `days` from `start` (not written)."""
    rng = random.Random(seed_)
    ids = seed(s, stores, cases, start) if s is not None else [
        (f"st{i}", f"c{i}-{j}") for i in range(stores) for j in range(cases)]
    for sid, cid in ids:
        gen = Gen(rng, sid, cid)
        for d in range(days):
            t = start + d * 86_400 + rng.randint(0, 3600)
            for _ in range(rng.randint(per_case_day // 2, per_case_day)):
                t = gen.flow(t + rng.randint(30, 86_400 // per_case_day))
        yield gen


def month(s: Session, start: int, days: int, **kw: Any) -> int:
    """Generate and write `days` of events from `start` for every case; returns the number of events."""
    return sum(write(s, gen) for gen in month_rows(s, start, days, **kw))


def write(s: Session, gen: Gen) -> int:
    for chunk in _chunks(gen.rows, 5000):
        s.execute(insert(Event), chunk)
    for a in gen.alerts:
        s.add(Alert(**a))
    s.flush()
    return len(gen.rows)


def _chunks(rows: list[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), n):
        yield rows[i:i + n]


def linked_give_back(true: dict[str, int], shown: dict[str, int | None]) -> list[str]:
    """What an attacker gets back from one position's shown figures by subtracting within a linked
    group: a hidden count alone (the total minus the other parts), or a small leftover."""
    found = []
    for g in GROUPS:
        t = shown.get(g.total, 0)
        hidden = [p for p in g.parts if shown.get(p, 0) is None and true.get(p, 0)]
        if t is None:
            if true.get(g.total, 0) and g.exact and not hidden:
                found.append(f"{g.total} = sum of its shown parts")
            continue
        rest = t - sum(shown.get(p, 0) or 0 for p in g.parts)
        if g.exact and len(hidden) == 1:
            found.append(f"{hidden[0]} = {g.total} - shown parts = {rest}")
        elif not g.exact and not hidden and 0 < rest < K:
            found.append(f"{g.total} minus its parts = {rest}")
        elif not g.exact and len(hidden) == 1 and true.get(g.total, 0) == true.get(hidden[0], 0):
            found.append(f"{hidden[0]} = {g.total}")
        elif 0 < rest < K and hidden:
            found.append(f"{g.total}: hidden parts add up to {rest}")
    return found


def pinned_by_bounds(equations: list[tuple[list[str], str]], lo: dict[str, int], hi: dict[str, int]) -> dict[str, int]:
    """What an attacker narrows to one value by bound propagation over the published figures'
    equations (each: parts summing to a total): the cells whose [lo, hi] (a shown cell [v, v], a
    hidden one [1, a bound], a count never shown [0, a bound]) closes to a single value."""
    lo, hi = dict(lo), dict(hi)
    before = {k for k in lo if lo[k] != hi[k]}
    changed = True
    while changed:
        changed = False
        for parts, tot in equations:
            slo, shi = sum(lo[p] for p in parts), sum(hi[p] for p in parts)
            if slo > lo[tot] or shi < hi[tot]:
                lo[tot], hi[tot], changed = max(lo[tot], slo), min(hi[tot], shi), True
            for p in parts:
                nlo, nhi = lo[tot] - (shi - hi[p]), hi[tot] - (slo - lo[p])
                if nlo > lo[p] or nhi < hi[p]:
                    lo[p], hi[p], changed = max(lo[p], nlo), min(hi[p], nhi), True
                    slo, shi = sum(lo[q] for q in parts), sum(hi[q] for q in parts)
    return {k: lo[k] for k in before if lo[k] == hi[k]}
