"""Tap to open through the emulated PN532: the sim case's real NFC driver reads the card, phone
or tag, the firmware asks the cloud worker through Mosquitto, and the coil energizes (or not)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from casecloud import registry
from casecloud.models import Event
from lockcase import creds
from sim.process import SimCase, SimClient
from tests.e2e.conftest import DEMO_PIN, Env, wait_for
from tests.e2e.test_cloud_unlock import PHONE, texted_code

NFC = {"driver": "pn532", "bus": "i2c"}


@pytest.fixture
def nfc_case(env: Env) -> Iterator[SimCase]:
    # A 15 s grant: the door opened after a tap is inside it on a loaded host too (with the 1.5 s
    # of env.case_config, a stall past it turned the opening into a forced entry).
    with SimCase(env.workdir / "nfccase", env.case_config(nfc=NFC, unlock_ms=15000), heap="512k") as c:
        yield c


@pytest.fixture
def cl(nfc_case: SimCase) -> Iterator[SimClient]:
    c = nfc_case.client()
    c.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"] and s["nfc"]["state"] == "idle",
               timeout=20, what="cloud synced and reader up")
    yield c
    c.close()


def member(env: Env, **kw: Any) -> str:
    with env.rt.sessions.begin() as s:
        _, app_token = registry.create_member(s, env.rt.hasher, env.rt.now(), **kw)
    return app_token


def cloud_events(env: Env, kind: str) -> list[Event]:
    with env.rt.sessions() as s:
        return [e for e in s.scalars(select(Event).where(Event.case_id == "c1")) if e.kind == kind]


def test_trusted_card_opens(env: Env, cl: SimClient) -> None:
    member(env, card="04a1b2c3d4e5f6", status="trusted")
    cl.call("card", uid="04A1B2C3D4E5F6")
    st = cl.wait_for(lambda s: s["energized"], what="trusted member's card opens")
    assert st["nfc"]["taps"] == 1


def test_phone_app_token_opens(env: Env, cl: SimClient) -> None:
    token = member(env, status="trusted")
    cl.call("phone", token=token)
    cl.wait_for(lambda s: s["energized"], what="the app's token opens")


def test_ndef_token_opens(env: Env, cl: SimClient) -> None:
    member(env, card="member-4711", status="trusted")
    cl.call("ndef", token="member-4711")
    cl.wait_for(lambda s: s["energized"], what="the tag's token opens")


def test_flagged_and_unknown_are_refused(env: Env, cl: SimClient) -> None:
    member(env, card="0badc0de", status="flagged")
    cl.call("card", uid="0badc0de")
    st = cl.wait_for(lambda s: s["entry"] == "message", what="refusal")
    assert st["display"][0].startswith("Not allowed") and not st["energized"]
    cl.call("remove")
    cl.wait_for(lambda s: s["entry"] == "idle", timeout=6, what="message gone")
    cl.call("phone", token="lt_not-a-member")
    st = cl.wait_for(lambda s: s["entry"] == "message", what="refusal")
    assert st["display"][0].startswith("Card not known") and not st["energized"]


def test_member_card_is_challenged_for_phone_and_code(env: Env, cl: SimClient) -> None:
    member(env, card="cafe0001", phone=PHONE, status="member")
    cl.call("card", uid="cafe0001")
    cl.wait_for(lambda s: s["display"][0].startswith("Not verified"), what="asked for the phone")
    cl.call("remove")
    cl.keys(PHONE + "#")
    cl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
    cl.keys(texted_code(env))
    cl.wait_for(lambda s: s["energized"], what="member verified by code")


def test_card_left_on_the_reader_asks_the_cloud_once(env: Env, cl: SimClient) -> None:
    member(env, card="04a1b2c3d4e5f6", status="trusted")
    cl.call("card", uid="04a1b2c3d4e5f6")
    cl.wait_for(lambda s: s["energized"], what="opens")
    cl.call("door", open=True)
    cl.wait_for(lambda s: s["lock"] == "open", what="open")
    cl.call("door", open=False)
    cl.wait_for(lambda s: s["lock"] == "locked", what="closed")
    wait_for(lambda: len(cloud_events(env, "granted")) == 1, timeout=20)
    time.sleep(1.5)  # fifteen polls with the card still on the case
    assert cl.state()["nfc"]["taps"] == 1
    wait_for(lambda: cl.call("events")["events"] == [], timeout=20)
    assert len(cloud_events(env, "granted")) == 1


def test_staff_badge_through_the_reader_opens_offline(env: Env, tmp_path: Any) -> None:
    cfg = env.case_config(nfc=NFC)
    cfg["staff"]["badges"] = [{"id": "badge-7", "hash": creds.hash_badge("04aabbcc", cfg["staff"]["salt"], 1000)}]
    cfg["cloud"]["host"] = "127.0.0.1"
    cfg["cloud"]["port"] = 9  # nothing listens: the cloud is unreachable
    with SimCase(tmp_path / "badgecase", cfg, heap="512k") as c:
        client = c.client()
        client.wait_for(lambda s: s["nfc"]["state"] == "idle", what="reader up")
        client.call("card", uid="04aabbcc")
        client.wait_for(lambda s: s["energized"], what="badge opens offline")
        client.close()


def test_dead_reader_is_a_fault_the_store_sees(env: Env, cl: SimClient) -> None:
    cl.call("nfc_fault", kind="dead")
    cl.wait_for(lambda s: s["nfc"]["state"] == "down", what="reader down")
    wait_for(lambda: bool(cloud_events(env, "fault")), timeout=20)
    (ev,) = cloud_events(env, "fault")
    assert ev.data["part"] == "nfc"
    cl.keys(f"**{DEMO_PIN}#")
    cl.wait_for(lambda s: s["energized"], what="the keypad still opens")
    cl.call("nfc_fault", kind="ok")
    cl.wait_for(lambda s: s["nfc"]["state"] == "idle", timeout=15, what="reader back")
    wait_for(lambda: bool(cloud_events(env, "fault_cleared")), timeout=20)
