"""A case's shown status (`Case.last_status`) from its heartbeats and, between them, its events.

A heartbeat comes once a minute; a forced door would read "closed, locked" until the next one.
So the door, lock and alarm events (firmware/lockcase/lock.py) update the status as they arrive.
`Case.status_at` is when the newest information applied was true: a heartbeat's is its arrival,
an event's its own ts. An event older than that (a journal delivered late, a batch sent again) changes nothing,
so a late "opened" never overrides a newer heartbeat's "closed".

`alarms` lists what is active on the case: `forced` (door open without a grant), `held_open`
(the door open too long) until the door closes, and `tamper` from the tamper switch until the
latched alarm is reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# event -> (fields set, alarms raised, alarms cleared)
_EVENTS: dict[str, tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]] = {
    "forced": ({"door": "open", "lock": "forced"}, ("forced",), ()),
    "opened": ({"door": "open", "lock": "open"}, (), ()),
    "held_open": ({"door": "open"}, ("held_open",), ()),
    "closed": ({"door": "closed", "lock": "locked"}, (), ("forced", "held_open")),
    "relocked": ({"lock": "locked"}, (), ()),
    "tamper": ({}, ("tamper",), ()),
    "tamper_reset": ({}, (), ("tamper",)),
}
KINDS = frozenset(_EVENTS) | {"granted"}
_DOOR_ALARMS = ("forced", "held_open")


def _alarms(st: dict[str, Any]) -> set[str]:
    a = st.get("alarms")
    return {x for x in a if isinstance(x, str)} if isinstance(a, list) else set()


def _put(st: dict[str, Any], alarms: set[str]) -> dict[str, Any]:
    st = dict(st)
    if alarms:
        st["alarms"] = sorted(alarms)
    else:
        st.pop("alarms", None)
    return st


def from_beat(prev: dict[str, Any] | None, fields: dict[str, Any], now: int) -> tuple[dict[str, Any], int]:
    """A heartbeat is the case's present: it replaces the door and lock, keeps the tamper alarm
    (a beat does not report it), and clears the door alarms once the door is closed."""
    alarms = _alarms(prev or {})
    if fields.get("door") == "closed":
        alarms -= set(_DOOR_ALARMS)
    if fields.get("lock") == "forced":
        alarms.add("forced")
    return _put(fields, alarms), now


def kind_of(row: dict[str, Any]) -> str:
    """An event's kind as status and alerts read it: the tamper switch closing ends the tamper
    alarm only where the case does not latch it (`latched` false). Without the field (firmware
    from before it) the alarm is taken as latched, ending at `tamper_reset`."""
    kind = row["kind"]
    if kind == "tamper_cleared":
        d = row.get("data")
        if isinstance(d, dict) and d.get("latched") is False:
            return "tamper_reset"
    return kind


def from_events(prev: dict[str, Any] | None, prev_at: int | None, rows: Sequence[dict[str, Any]], now: int
                ) -> tuple[dict[str, Any], int] | None:
    """The status and its time after a case's events (in the order the case sent them); None
    when none of them is newer than what is shown."""
    st = dict(prev or {})
    at = prev_at or 0
    alarms = _alarms(st)
    changed = False
    for r in rows:
        kind, ts = kind_of(r), r["ts"]
        if kind not in KINDS or ts < at or ts > now + 60:  # older than shown, or from a wrong clock
            continue
        if kind == "granted":
            d = r.get("data") or {}
            if not isinstance(d.get("ms"), int) or d["ms"] <= 0:
                continue  # "door already open" or nothing energized
            fields: dict[str, str] = {"lock": "released"}
            raised: tuple[str, ...] = ()
            cleared: tuple[str, ...] = ()
        else:
            fields, raised, cleared = _EVENTS[kind]
        st.update(fields)
        alarms = (alarms - set(cleared)) | set(raised)
        at = ts
        changed = True
    return (_put(st, alarms), at) if changed else None
