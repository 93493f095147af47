"""One store-day's published figures taken together (the issue 14 audit): what suppress.protect
decides one equation at a time, checked over all of them at once, and more hidden where needed.

The linked metrics (suppress.GROUPS) make a store-day a table: each position (the store-day, a
case-day, a store-hour) is a row whose total is the sum of its parts (`allow` of its grants by
method; the parts of a non-exact group plus a count never shown, such as in-hours opens), and each
metric is a column whose store-day is the sum of its case-days, and again of its store-hours. Rows
and columns together gave hidden counts back that each alone did not (store-day phone 11 and card
14, one case's phone 5 and card 9, another's `allow` 9 with nfc and app 0: a third case's phone
and card were 1 each). A hidden count is known to be 1 or more (0 is shown).

`exposed` narrows every hidden count's range by bound propagation over all these equations;
`settle` hides more (the smallest shown count of an equation that pins one) until every hidden
count could still be any of K-1 values or more. Bound propagation over-approximates the ranges an
attacker can reach (it ignores what only integer reasoning over several equations at once gives),
so this finds and closes what it sees, without proving there is nothing else.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from casecloud.analytics.suppress import GROUPS, K, linked_hidden

LINKED = tuple(sorted({g.total for g in GROUPS} | {p for g in GROUPS for p in g.parts}))
Pos = tuple[str, Hashable]  # ("S", None), ("c", case id), ("h", hour of day)
Var = tuple[Pos, str]  # a position's metric, or its implicit rest ("rest:<group index>")


def _equations(positions: list[Pos]) -> list[tuple[list[Var], Var]]:
    eqs: list[tuple[list[Var], Var]] = []
    for p in positions:
        for i, g in enumerate(GROUPS):
            parts: list[Var] = [(p, m) for m in g.parts]
            if not g.exact:
                parts.append((p, f"rest:{i}"))
            eqs.append((parts, (p, g.total)))
    whole: Pos = ("S", None)
    columns = [*LINKED, *(f"rest:{i}" for i, g in enumerate(GROUPS) if not g.exact)]
    for kind in ("c", "h"):
        members = [p for p in positions if p[0] == kind]
        if members:
            eqs += [([(p, m) for p in members], (whole, m)) for m in columns]
    return eqs


def _propagate(eqs: list[tuple[list[Var], Var]], lo: dict[Var, int], hi: dict[Var, int], passes: int = 60) -> None:
    """Narrow every range over the equations, `passes` times at most (bounds can creep down a cycle
    of equations one at a time; stopping early leaves ranges wider, never wrong)."""
    changed = True
    while changed and passes:
        passes -= 1
        changed = False
        for parts, tot in eqs:
            slo = sum(lo[v] for v in parts)
            shi = sum(hi[v] for v in parts)
            if slo > lo[tot]:
                lo[tot], changed = slo, True
            if shi < hi[tot]:
                hi[tot], changed = shi, True
            for v in parts:
                nlo, nhi = lo[tot] - (shi - hi[v]), hi[tot] - (slo - lo[v])
                if nlo > lo[v] or nhi < hi[v]:
                    slo, shi = slo - lo[v], shi - hi[v]
                    lo[v], hi[v] = max(lo[v], nlo), min(hi[v], nhi)
                    slo, shi = slo + lo[v], shi + hi[v]
                    changed = True


def _tables(cells: Mapping[Pos, Mapping[str, int]], hidden: Mapping[Pos, set[str]]
            ) -> tuple[list[tuple[list[Var], Var]], dict[Var, int], dict[Var, int], dict[Var, int]]:
    positions = list(cells)
    eqs = _equations(positions)
    # no count of a store-day exceeds the sum of all its linked counts: a finite top for every range
    big = sum(cells[("S", None)].get(m, 0) for m in LINKED) + 1
    lo: dict[Var, int] = {}
    hi: dict[Var, int] = {}
    true: dict[Var, int] = {}
    for p, c in cells.items():
        for m in LINKED:
            n = c.get(m, 0)
            true[(p, m)] = n
            if m in hidden[p]:
                lo[(p, m)], hi[(p, m)] = (1 if n else 0), big
            else:
                lo[(p, m)] = hi[(p, m)] = n
        for i, g in enumerate(GROUPS):
            if not g.exact:
                true[(p, f"rest:{i}")] = c.get(g.total, 0) - sum(c.get(m, 0) for m in g.parts)
                lo[(p, f"rest:{i}")], hi[(p, f"rest:{i}")] = 0, big  # never shown
    return eqs, lo, hi, true


def exposed(cells: Mapping[Pos, Mapping[str, int]], hidden: Mapping[Pos, set[str]]) -> dict[Var, tuple[int, int]]:
    """The hidden counts whose range, from all the equations together, holds fewer than K-1
    values (a count of 1 to K-1 must keep the whole of 1 to K-1 open), with that range."""
    eqs, lo, hi, true = _tables(cells, hidden)
    _propagate(eqs, lo, hi)
    out: dict[Var, tuple[int, int]] = {}
    for (p, m), n in true.items():
        if m.startswith("rest:") or m not in hidden[p] or not n:
            continue
        if hi[(p, m)] - lo[(p, m)] < K - 2:
            out[(p, m)] = (lo[(p, m)], hi[(p, m)])
    return out


def settle(cells: Mapping[Pos, Mapping[str, int]], hidden: dict[Pos, set[str]]) -> bool:
    """Hide more until nothing is exposed: for an exposed count, the smallest shown nonzero count
    of an equation it is in (a part before a total, a case-day or store-hour before the store-day),
    each position's linked groups kept whole (linked_hidden). Returns whether anything was added."""
    added = False
    for _ in range(500):
        found = exposed(cells, hidden)
        if not found:
            return added
        eqs, lo, hi, true = _tables(cells, hidden)
        target = min(found, key=str)
        best: tuple[int, int, int, str] | None = None
        pick: Var | None = None
        for parts, tot in eqs:
            if target not in parts and target != tot:
                continue
            for v in (*parts, tot):
                p, m = v
                if m.startswith("rest:") or m in hidden[p] or not true[v]:
                    continue
                rank = (0 if v != tot else 1, 0 if p[0] != "S" else 1, true[v], str(v))
                if best is None or rank < best:
                    best, pick = rank, v
        if pick is None:
            return added  # nothing shown left around it: bound propagation's limit, not closable here
        p, m = pick
        hidden[p] = linked_hidden(cells[p], hidden[p] | {m})
        added = True
    return added
