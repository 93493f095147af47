"""A store's opening hours (the `store_hours` row): what counts as an after-hours open.

`week` holds seven entries, Monday first: `[open, close]` in minutes after local midnight
(0 <= open < close <= 1440, whole hours only), or None for a day the store is closed. Whole hours,
because a boundary a manager can move minute by minute splits the door opens of an hour into
counts that subtraction gives back (review M5); hours apply from today on (api/analytics.py). No row: the store set no hours
and no open counts as after hours. Local time is the store's IANA zone (`tz`), daylight saving
included (zoneinfo).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.models import StoreHours

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class BadHours(ValueError):
    pass


@functools.cache
def _zones() -> frozenset[str]:
    # the zone directory's own links to the server's zone are not a store's
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def validate(tz: str, week: Any) -> list[list[int] | None]:
    """The hours as stored, or BadHours saying what is wrong."""
    if not isinstance(tz, str) or len(tz) > 64:
        raise BadHours("tz: an IANA time zone name such as Europe/Berlin")
    if tz not in _zones():  # not any file under the zone directory: "localtime" is the server's
        raise BadHours(f"tz: unknown time zone {tz[:64]!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadHours(f"tz: unknown time zone {tz[:64]!r}") from None
    if not isinstance(week, list) or len(week) != 7:
        raise BadHours("week: seven entries, Monday first, each [open, close] in minutes or null")
    out: list[list[int] | None] = []
    for i, day in enumerate(week):
        if day is None:
            out.append(None)
            continue
        ok = (isinstance(day, list) and len(day) == 2 and all(type(m) is int for m in day)
              and 0 <= day[0] < day[1] <= 1440)
        if not ok:
            raise BadHours(f"week[{i}] ({WEEKDAYS[i]}): [open, close] with 0 <= open < close <= 1440, or null")
        if day[0] % 60 or day[1] % 60:
            raise BadHours(f"week[{i}] ({WEEKDAYS[i]}): whole hours only (minutes a multiple of 60)")
        out.append([day[0], day[1]])
    return out


def after_hours_rule(tz: str, week: list[list[int] | None]) -> Callable[[int], bool]:
    zone = ZoneInfo(tz)

    def closed(ts: int) -> bool:
        t = dt.datetime.fromtimestamp(ts, zone)
        day = week[t.weekday()] if len(week) == 7 else None
        if day is None:
            return True
        m = t.hour * 60 + t.minute
        return not day[0] <= m < day[1]

    return closed


def _never(_ts: int) -> bool:
    return False


def rules(s: Session) -> dict[str, Callable[[int], bool]]:
    """store id -> is this time after hours; stores without hours are left out (never)."""
    out: dict[str, Callable[[int], bool]] = {}
    for row in s.scalars(select(StoreHours)):
        try:
            out[row.store_id] = after_hours_rule(row.tz, validate(row.tz, row.week))
        except BadHours:
            continue  # stored before a check existed: counted as no hours, not a failed job
    return out


def rule_for(rules_: dict[str, Callable[[int], bool]], store_id: str) -> Callable[[int], bool]:
    return rules_.get(store_id, _never)
