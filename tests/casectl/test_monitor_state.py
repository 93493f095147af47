"""The state casectl monitor derives from console lines, for the alarms a case latches."""

from __future__ import annotations

from casectl.monitor import State, parse


def _follow(*lines: str) -> State:
    st = State()
    for i, text in enumerate(lines):
        st.apply(parse(text, float(i)))
    return st


def test_a_latched_tamper_alarm_outlives_the_switch_closing() -> None:
    # the case still refuses shoppers until staff reset it: the technician must see the alarm
    st = _follow("event: tamper {}", "event: tamper_cleared {'latched': True}")
    assert st.alarms == ["tamper"]
    assert _follow("event: tamper {}", "event: tamper_cleared {'latched': True}", "event: tamper_reset {'by': 'staff'}"
                   ).alarms == []


def test_an_unlatched_tamper_alarm_ends_with_the_switch() -> None:
    assert _follow("event: tamper {}", "event: tamper_cleared {'latched': False}").alarms == []
