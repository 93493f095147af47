"""Small counts, and why none can be worked back out (docs/analytics.md, "The rule").

1. Cells. The only counts ever computed for showing are *cells*: a store's count of one metric on
   one whole UTC day (the store-day), and its parts: each case's count that day (case-days) and
   each hour's (store-hours). Today is not a whole day: nothing of it is shown.
2. A cell from 1 to K-1 is shown as "< K" (primary suppression). Zero is shown.
3. A store-day that is shown is the sum of its case-days (and of its store-hours): if its hidden
   parts added up to less than K they could be worked out by subtracting the shown parts, so more
   parts are hidden, smallest first, until the hidden ones add up to K or more, and so much that
   each, being 1 or more (zero is shown), could still be anything from 1 to K-1 (`covers`); with no
   shown part left to hide, the store-day is hidden too (complementary suppression). What
   subtraction then yields is a sum over several cells that leaves each of them 1 to K-1 at least.
4. Everything else shown (a week, a month, a row or column total, a case over the period, a store
   in the fleet, a method's share) adds up shown cells only. A hidden cell counts as 0 there and
   the figure says it is a lower bound. So any figure is a sum of shown cells, and subtracting two
   figures (2 days minus 1 day, this week minus last, a total minus its rows) gives a sum of shown
   cells: nothing hidden.
5. Durations (time to open, help acknowledgement) are shown as p50/p90 over K or more samples only.
6. Linked metrics (GROUPS: a total and its parts, such as allow and the grants by method) are
   protected together at each cell position, in turn with rule 3 (protect): no group's shown
   members leave a hidden count alone or hidden counts adding up to less than K.

Health figures (minutes offline, boots and firmware versions, faults) count a machine's states, not
people, and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = 5
HIDDEN = f"< {K}"
Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Figure:
    """A value as shown. `value` None: a hidden cell. `partial`: a sum that left hidden cells out
    (a lower bound)."""

    value: float | None
    text: str
    partial: bool = False

    @property
    def hidden(self) -> bool:
        return self.value is None


def shown(n: int) -> bool:
    return n == 0 or n >= K


def cell(n: int, hide: bool = False) -> Figure:
    return Figure(None, HIDDEN) if hide or not shown(n) else Figure(n, str(n))


def plain(n: float, text: str | None = None) -> Figure:
    """A figure not suppressed (a health figure, a duration)."""
    return Figure(n, text if text is not None else f"{n:g}")


def total(figures: list[Figure] | tuple[Figure, ...]) -> Figure:
    """The sum of the shown figures; partial when any was hidden (or partial itself)."""
    s = sum(f.value for f in figures if f.value is not None)
    partial = any(f.hidden or f.partial for f in figures)
    n = int(s) if float(s).is_integer() else s
    return Figure(n, f"≥ {n}" if partial else str(n), partial)


def hidden_parts(parent: int, parts: Mapping[Key, int], parent_hidden: bool = False,
                 hidden: set[Key] | frozenset[Key] = frozenset()) -> set[Key]:
    """The parts of a cell to hide: those from 1 to K-1 (and `hidden`, hidden for another reason),
    and, when the parent is shown, more of the smallest until what is hidden adds up to K or more
    over two parts or more (or everything nonzero is hidden). A parent hidden for a linked metric
    (`parent_hidden`) keeps one nonzero part hidden at least, or the shown parts would add up to it."""
    hide = {k for k, n in parts.items() if not shown(n)} | set(hidden)
    if not shown(parent):
        return {k for k, n in parts.items() if n} | hide
    nonzero = [k for k in hide if parts.get(k, 0)]
    hidden_sum = sum(parts.get(k, 0) for k in hide)
    rest = sorted(((k, n) for k, n in parts.items() if k not in hide and n), key=lambda kv: kv[1])
    if parent_hidden:
        if not nonzero and rest:
            hide.add(rest[0][0])
        return hide
    count = len(nonzero)
    if not covers(hidden_sum, count):
        for k, n in rest:
            hide.add(k)
            hidden_sum += n
            count += 1
            if covers(hidden_sum, count):
                break
    return hide


def covers(hidden_sum: int, count: int) -> bool:
    """Whether `count` hidden nonzero parts adding up to `hidden_sum` (subtraction gives the sum)
    leave each of them anything from 1 to K-1: each is 1 or more (0 is shown), so one part is at
    most the sum less one for every other; that must reach K-1 (7 hidden parts adding up to 7
    would each be 1)."""
    return count == 0 or (count >= 2 and hidden_sum - (count - 1) >= K - 1)


# --- linked metrics (review M6) --------------------------------------------------------------------
# Some metrics of one cell position (a store-day, a case-day, a store-hour) are a total and its
# parts. Suppressing each on its own let subtraction give a hidden one back (allow 11 minus
# grant.phone 8: the hidden grant.card is 3). `exact`: the total is the sum of the parts (what is
# left over is taken as known, 0); otherwise the parts are a subset of the total and what is left
# (in-hours opens, calls nobody acknowledged, grants not by the trusted path) is a count never shown
# that subtraction yields.

@dataclass(frozen=True)
class Group:
    total: str
    parts: tuple[str, ...]
    exact: bool


GROUPS: tuple[Group, ...] = (
    Group("allow", ("grant.phone", "grant.card", "grant.nfc", "grant.app"), True),
    Group("allow", ("trusted",), False),
    Group("opened", ("after_hours",), False),
    Group("help", ("help_acked",), False),
)


def _unknowns(cells: Mapping[str, int], hide: set[str], g: Group) -> list[int]:
    """The nonzero counts of the group that subtraction cannot see (hidden parts, and what the
    parts leave of the total when they are a subset)."""
    out = [cells.get(p, 0) for p in g.parts if p in hide and cells.get(p, 0)]
    rest = cells.get(g.total, 0) - sum(cells.get(p, 0) for p in g.parts)
    if not g.exact and rest > 0:
        out.append(rest)
    return out


def group_gives_back(cells: Mapping[str, int], hide: set[str], g: Group) -> bool:
    """Whether the shown members of a group give a hidden count (or a small leftover) back: one
    unknown alone (its value is the shown total minus the shown parts), or several adding up to less
    than K. A leftover of K or more alone is no cell and names no one."""
    unknown = _unknowns(cells, hide, g)
    if g.total in hide:  # the total unknown too: one equation, two unknowns or more
        return cells.get(g.total, 0) > 0 and not unknown
    if not unknown:
        return False
    hidden_parts_ = [p for p in g.parts if p in hide and cells.get(p, 0)]
    if len(unknown) == 1:
        return bool(hidden_parts_) or unknown[0] < K
    return sum(unknown) < K


def linked_hidden(cells: Mapping[str, int], hide: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The metrics of one cell position to hide: the small ones, those in `hide`, and more members
    of each linked group (its smallest shown nonzero part, else its total) until no group gives a
    hidden one back."""
    out = {m for m, n in cells.items() if not shown(n)} | set(hide)
    changed = True
    while changed:
        changed = False
        for g in GROUPS:
            if not group_gives_back(cells, out, g):
                continue
            cand = sorted((cells.get(p, 0), p) for p in g.parts if p not in out and cells.get(p, 0))
            if cand:
                out.add(cand[0][1])
            elif g.total not in out and cells.get(g.total, 0):
                out.add(g.total)
            else:
                continue  # nothing left to hide in this group
            changed = True
    return out


def protect(whole: Mapping[str, int], parts: Mapping[Key, Mapping[str, int]],
            top_hidden: set[str] | frozenset[str] = frozenset()) -> tuple[set[str], dict[Key, set[str]]]:
    """One store-day: which of its metrics to hide, and which metrics of each part (case-day or
    store-hour). Each position's linked groups are protected (linked_hidden) and each metric's
    parts within their whole (hidden_parts, a part hidden for a group counting as hidden), again
    until neither rule hides more. A metric whose one nonzero part is hidden is hidden in the whole
    too (the whole would be that part)."""
    top = linked_hidden(whole, top_hidden)
    hide: dict[Key, set[str]] = {k: linked_hidden(p) for k, p in parts.items()}
    metrics = set(whole) | {m for p in parts.values() for m in p}
    changed = True
    while changed:
        changed = False
        for m in metrics:
            column = {k: p.get(m, 0) for k, p in parts.items()}
            already = {k for k in parts if m in hide[k]}
            more = hidden_parts(whole.get(m, 0), column, parent_hidden=m in top, hidden=already) - already
            for k in more:
                hide[k].add(m)
                changed = True
            hidden_nz = [k for k in parts if m in hide[k] and column[k]]
            if m not in top and whole.get(m, 0) and not covers(sum(column[k] for k in hidden_nz), len(hidden_nz)):
                top = linked_hidden(whole, top | {m})  # no shown part left to hide: the whole goes
                changed = True
        for k, p in parts.items():
            grown = linked_hidden(p, hide[k])
            if grown != hide[k]:
                hide[k] = grown
                changed = True
    return top, hide
