"""Shopper flows through the real stack: sim case firmware <-> Mosquitto <-> cloud worker."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from casecloud.models import Event, SmsOutbox
from sim.process import SimCase, SimClient
from tests.e2e.conftest import DEMO_PIN, Env, broker_files_ctx, wait_for

PHONE = "2025550143"



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


def add_member(env: Env, **kw: Any) -> None:
    from casecloud import registry

    with env.rt.sessions.begin() as s:
        registry.create_member(s, env.rt.hasher, env.rt.now(), **kw)


def test_trusted_member_card_opens_at_once(env: Env, ctl: SimClient) -> None:
    add_member(env, card="04a1b2c3d4e5f6", status="trusted")
    ctl.call("tap", uid="04A1B2C3D4E5F6", src="nfc")
    ctl.wait_for(lambda s: s["energized"], what="trusted member opens")


def test_flagged_member_is_refused(env: Env, ctl: SimClient) -> None:
    add_member(env, card="0badc0de", status="flagged")
    ctl.call("tap", uid="0badc0de", src="nfc")
    st = ctl.wait_for(lambda s: s["entry"] == "message", what="refusal")
    assert st["display"][0].startswith("Not allowed") and not st["energized"]


def test_member_is_challenged_for_phone_and_code(env: Env, ctl: SimClient) -> None:
    add_member(env, card="cafe0001", phone=PHONE, status="member")
    ctl.call("tap", uid="cafe0001", src="nfc")
    st = ctl.wait_for(lambda s: s["display"][0].startswith("Not verified"), what="asked for the phone")
    assert not st["energized"]
    ctl.keys(PHONE + "#")
    ctl.wait_for(lambda s: s["entry"] == "code", what="code prompt")
    ctl.keys(texted_code(env))
    ctl.wait_for(lambda s: s["energized"], what="member verified by code")


def test_staff_badge_opens_without_the_cloud(env: Env, tmp_path: Any) -> None:
    from lockcase import creds

    cfg = env.case_config()
    cfg["staff"]["badges"] = [{"id": "badge-7", "hash": creds.hash_badge("04aabbccdd", cfg["staff"]["salt"], 1000)}]
    cfg["cloud"]["host"] = "127.0.0.1"
    cfg["cloud"]["port"] = 9  # nothing listens: the cloud is unreachable
    with SimCase(tmp_path / "badgecase", cfg, heap="512k") as c:
        cl = c.client()
        cl.call("tap", uid="04aabbccdd", src="nfc")
        cl.wait_for(lambda s: s["energized"], what="badge opens offline")
        cl.close()


def test_offline_for_an_hour_delivers_every_event(env: Env, case: SimCase, ctl: SimClient) -> None:
    env.broker_ctx.__exit__(None, None, None)  # the broker goes away
    ctl.wait_for(lambda s: not s["cloud"]["up"], timeout=20, what="link down")
    for _ in range(15):  # 30 events while offline, then an hour passes
        ctl.door(True)  # held open until the case has seen it, not for a wall-clock 80 ms
        ctl.door(False)
    ctl.call("advance", ms=3600 * 1000)
    pending = ctl.call("events", limit=500)["events"]
    assert len(pending) >= 30
    env.broker_ctx = broker_files_ctx(env.workdir, env.secrets, port=env.port)
    env.broker_ctx.__enter__()
    wait_for(lambda: ctl.call("events")["events"] == [], timeout=90)
    stored = {e.event_id for e in events(env)}
    kinds = [e.kind for e in events(env)]
    assert kinds.count("forced") >= 15 and kinds.count("closed") >= 15
    assert {str(p["id"]) for p in pending} <= stored
