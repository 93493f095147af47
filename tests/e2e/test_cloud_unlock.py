"""Shopper flows through the real stack: sim case firmware <-> Mosquitto <-> cloud worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from casecloud.models import Event, SmsOutbox
from casectl.simproc import SimCase, SimClient
from tests.e2e.conftest import DEMO_PIN, Env, wait_for

PHONE = "2025550143"


@pytest.fixture
def case(env: Env) -> Iterator[SimCase]:
    c = SimCase(env.workdir / "case1", env.case_config(), heap="512k")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def ctl(case: SimCase) -> Iterator[SimClient]:
    cl = case.client()
    cl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="cloud link up and synced")
    yield cl
    cl.close()


def texted_code(env: Env) -> str:
    with env.rt.sessions() as s:
        row = s.scalars(select(SmsOutbox).order_by(SmsOutbox.id.desc())).first()
        assert row is not None, "no text in the outbox"
        m = re.search(r"\b(\d{6})\b", row.body)
        assert m
        return m.group(1)


def events(env: Env, kind: str | None = None) -> list[Any]:
    with env.rt.sessions() as s:
        q = select(Event).where(Event.case_id == "c1")
        rows = list(s.scalars(q))
    return [r for r in rows if kind is None or r.kind == kind]


def test_phone_and_code_open_the_case(env: Env, ctl: SimClient) -> None:
    ctl.keys(PHONE + "#")
    st = ctl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
    assert st["display"][0].startswith("Code from SMS")
    ctl.keys(texted_code(env))
    ctl.wait_for(lambda s: s["energized"], what="coil energized")
    # Events reach the cloud and are acked (removed from the case's journal).
    wait_for(lambda: any(e.kind == "granted" for e in events(env)), timeout=20)
    wait_for(lambda: ctl.call("events")["events"] == [], timeout=20)


def test_wrong_code_is_refused_and_retried(env: Env, ctl: SimClient) -> None:
    ctl.keys(PHONE + "#")
    ctl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
    good = texted_code(env)
    ctl.keys(f"{(int(good) + 1) % 10**6:06d}")
    st = ctl.wait_for(lambda s: s["entry"] == "message", what="refusal")
    assert st["display"][0].startswith("Wrong code")
    assert not st["energized"]
    ctl.wait_for(lambda s: s["entry"] == "code", timeout=6, what="back to the code prompt")
    ctl.keys(good)
    ctl.wait_for(lambda s: s["energized"], what="coil energized")


def test_help_key_reaches_the_store(env: Env, ctl: SimClient) -> None:
    ctl.keys("#")
    st = ctl.wait_for(lambda s: s["display"][0].startswith("Staff are coming"), what="help acknowledged")
    assert not st["energized"]
    wait_for(lambda: bool(events(env, "help")), timeout=20)


def test_cloud_down_shopper_told_staff_pin_still_opens(env: Env, ctl: SimClient) -> None:
    env.loop.close()  # the worker stops: the broker is up, nobody answers
    ctl.keys(PHONE + "#")
    st = ctl.wait_for(lambda s: s["display"][0].startswith("No answer"), timeout=10, what="timeout message")
    assert "help" in st["display"][1].lower()
    ctl.keys(f"**{DEMO_PIN}#")  # the first key also dismisses the message
    ctl.wait_for(lambda s: s["energized"], what="staff PIN opens offline")


def test_broker_restart_mid_session(env: Env, case: SimCase, ctl: SimClient) -> None:
    env.restart_broker()
    ctl.wait_for(lambda s: s["cloud"]["connects"] >= 2 and s["cloud"]["synced"], timeout=40,
                 what="reconnected after the broker restart")
    ctl.keys(PHONE + "#")
    ctl.wait_for(lambda s: s["entry"] == "code", timeout=15, what="code prompt after reconnect")


def test_no_raw_phone_number_in_database_or_logs(env: Env, ctl: SimClient, case: SimCase) -> None:
    ctl.keys(PHONE + "#")
    ctl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
    ctl.keys(texted_code(env))
    ctl.wait_for(lambda s: s["energized"], what="coil energized")
    wait_for(lambda: ctl.call("events")["events"] == [], timeout=20)
    db = b"".join(p.read_bytes() for p in (env.workdir / "data").rglob("*") if p.is_file())
    assert PHONE.encode() not in db and PHONE[3:].encode() not in db
    assert PHONE not in case.console() and PHONE[3:] not in case.console()
    assert PHONE.encode() not in case.flash.read_bytes()
