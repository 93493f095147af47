"""Small counts, and why none can be worked back out (docs/analytics.md, "The rule").

1. Cells. The only counts ever computed for showing are *cells*: a store's count of one metric on
   one whole UTC day (the store-day), and its parts: each case's count that day (case-days) and
   each hour's (store-hours). Today is not a whole day: nothing of it is shown.
2. A cell from 1 to K-1 is shown as "< K" (primary suppression). Zero is shown.
3. A store-day that is shown is the sum of its case-days (and of its store-hours): if its hidden
   parts added up to less than K they could be worked out by subtracting the shown parts, so more
   parts are hidden, smallest first, until the hidden ones add up to K or more (complementary
   suppression). What subtraction then yields is a sum of K or more over several cells.
4. Everything else shown (a week, a month, a row or column total, a case over the period, a store
   in the fleet, a method's share) adds up shown cells only. A hidden cell counts as 0 there and
   the figure says it is a lower bound. So any figure is a sum of shown cells, and subtracting two
   figures (2 days minus 1 day, this week minus last, a total minus its rows) gives a sum of shown
   cells: nothing hidden.
5. Durations (time to open, help acknowledgement) are shown as p50/p90 over K or more samples only.

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


def hidden_parts(parent: int, parts: Mapping[Key, int]) -> set[Key]:
    """The parts of a cell to hide: those from 1 to K-1, and, when the parent is shown, more of
    the smallest until what is hidden adds up to K or more (or everything nonzero is hidden)."""
    hide = {k for k, n in parts.items() if not shown(n)}
    if not shown(parent):
        return {k for k, n in parts.items() if n}
    hidden_sum = sum(parts[k] for k in hide)
    if 0 < hidden_sum < K:
        for k, n in sorted(((k, n) for k, n in parts.items() if k not in hide and n), key=lambda kv: kv[1]):
            hide.add(k)
            hidden_sum += n
            if hidden_sum >= K:
                break
    return hide
