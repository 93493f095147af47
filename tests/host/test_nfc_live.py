"""The NFC reader in the live sim: the real firmware and PN532 driver against the emulated PN532
(boards/sim/pn532.py) on each of its buses, driven through the control socket (docs/sim.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockcase import creds
from sim.demo import DEMO_PIN, demo_config
from sim.process import SimCase, SimClient

BADGE = "04aabbcc"


def nfc_config(bus: str = "i2c", **nfc: Any) -> dict[str, Any]:
    cfg = demo_config()
    # A grant outlasting anything the tests do in it (cycle_door after a tap): with 1 s, a loaded
    # host opened the door after the grant had ended, a forced entry instead of an opening.
    cfg.update(unlock_ms=15000, pull_in_ms=200)
    cfg["nfc"] = {"driver": "pn532", "bus": bus, **nfc}
    salt = cfg["staff"]["salt"]
    cfg["staff"]["badges"] = [{"id": "badge-7", "hash": creds.hash_badge(BADGE, salt, 1000)}]
    return cfg


@pytest.fixture(params=["i2c", "spi", "uart"])
def bus(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ctl(tmp_path: Path, bus: str) -> Iterator[SimClient]:
    with SimCase(tmp_path / "case", nfc_config(bus)) as case:
        cl = case.client()
        cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="reader up")
        yield cl
        cl.close()


@pytest.fixture
def i2c_ctl(tmp_path: Path) -> Iterator[SimClient]:
    with SimCase(tmp_path / "case", nfc_config("i2c")) as case:
        cl = case.client()
        cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="reader up")
        yield cl
        cl.close()


def events(cl: SimClient, kind: str | None = None) -> list[dict[str, Any]]:
    evs = cl.call("events", after=0, limit=500)["events"]
    return [e for e in evs if kind is None or e["type"] == kind]


def cycle_door(cl: SimClient) -> None:
    cl.call("door", open=True)
    cl.wait_for(lambda s: s["lock"] == "open", what="door open")
    cl.call("door", open=False)
    cl.wait_for(lambda s: s["lock"] == "locked", what="relocked")


def test_staff_badge_tap_opens(ctl: SimClient) -> None:
    assert ctl.call("card", uid=BADGE)["ok"]
    st = ctl.wait_for(lambda s: s["energized"], what="coil energized by the badge")
    assert st["display"][0].startswith("Open the door")
    granted = events(ctl, "granted")
    assert len(granted) == 1 and granted[0]["source"] == "staff" and granted[0]["who"] == "badge-7"
    assert st["nfc"]["taps"] == 1 and st["nfc"]["errors"] == 0


def test_card_left_on_the_reader_opens_once(i2c_ctl: SimClient) -> None:
    cl = i2c_ctl
    cl.call("card", uid=BADGE)
    cl.wait_for(lambda s: s["energized"], what="first open")
    cycle_door(cl)
    time.sleep(1.0)  # ten polls with the badge still on the case
    st = cl.state()
    assert not st["energized"] and st["nfc"]["taps"] == 1 and len(events(cl, "granted")) == 1
    cl.call("remove")
    cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="card gone")
    cl.call("card", uid=BADGE)
    cl.wait_for(lambda s: s["energized"], what="second tap opens")
    assert len(events(cl, "granted")) == 2


def test_unknown_card_phone_and_tag_go_to_the_cloud(i2c_ctl: SimClient) -> None:
    # No cloud configured here: each credential that is not a staff badge is refused as
    # offline, which shows it took the cloud path and not the local one.
    cl = i2c_ctl
    for cmd, args, src in (("card", {"uid": "04010203"}, "nfc"), ("phone", {"token": "lt_abc"}, "app"),
                           ("ndef", {"token": "member-1"}, "card")):
        cl.call(cmd, **args)
        st = cl.wait_for(lambda s: s["display"][0].startswith("Service offline"), what=f"{cmd} refused")
        assert not st["energized"]
        cl.call("remove")
        cl.wait_for(lambda s: s["nfc"]["state"] == "idle" and s["entry"] == "idle", timeout=6, what="idle")
        assert events(cl, "denied")[-1]["source"] == src
    assert events(cl, "granted") == []


def test_phone_without_the_app_is_told(i2c_ctl: SimClient) -> None:
    i2c_ctl.call("phone", token="lt_abc", app=False)
    st = i2c_ctl.wait_for(lambda s: s["display"][0].startswith("Open store app"), what="hint")
    assert not st["energized"]


def test_reader_dies_keypad_still_works_then_recovers(i2c_ctl: SimClient) -> None:
    cl = i2c_ctl
    cl.call("nfc_fault", kind="dead")
    cl.wait_for(lambda s: s["nfc"]["state"] == "down", what="reader down")
    faults = events(cl, "fault")
    assert len(faults) == 1 and faults[0]["part"] == "nfc"
    cl.keys(f"**{DEMO_PIN}#")
    cl.wait_for(lambda s: s["energized"], what="staff PIN opens while the reader is dead")
    cycle_door(cl)
    cl.call("nfc_fault", kind="ok")
    cl.wait_for(lambda s: s["nfc"]["state"] == "idle", timeout=15, what="reader back")
    assert len(events(cl, "fault_cleared")) == 1 and len(events(cl, "fault")) == 1
    cl.call("card", uid=BADGE)
    cl.wait_for(lambda s: s["energized"], what="badge opens after recovery")


def test_garbage_and_timeouts_keep_the_lock_closed(i2c_ctl: SimClient) -> None:
    cl = i2c_ctl
    cl.call("watch")
    cl.call("card", uid=BADGE)
    cl.wait_for(lambda s: s["energized"], what="badge opens")
    cycle_door(cl)
    cl.call("remove")
    cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="card gone")
    while not cl.stream.empty():
        cl.stream.get_nowait()
    for kind in ("garbage", "corrupt", "timeout"):
        cl.call("nfc_fault", kind=kind)
        cl.call("card", uid=BADGE)
        time.sleep(1.5)
        cl.call("remove")
    st = cl.state()
    opened = [m for m in list(cl.stream.queue) if m.get("ev") == "out" and m["name"] == "lock" and m["value"]]
    assert opened == [] and not st["energized"] and st["lock"] == "locked"
    assert len(events(cl, "granted")) == 1
    assert st["nfc"]["errors"] > 0
    cl.call("nfc_fault", kind="ok")
    cl.call("card", uid=BADGE)
    cl.wait_for(lambda s: s["energized"], timeout=40, what="badge opens once the reader is sane")


def test_case_without_a_reader(tmp_path: Path) -> None:
    cfg = demo_config()
    cfg.pop("nfc")  # the demo case has a reader; this one has none
    with SimCase(tmp_path / "case", cfg) as case:
        cl = case.client()
        r = cl.call("card", uid=BADGE)
        assert not r["ok"] and "no NFC reader" in r["error"]
        assert "nfc" not in cl.state()
        cl.close()


def test_reader_not_answering_at_boot_is_a_fault_not_a_crash(tmp_path: Path) -> None:
    cfg = nfc_config("i2c", addr=0x25)  # the PN532 is at 0x24: nothing answers at 0x25
    with SimCase(tmp_path / "case", cfg) as case:
        cl = case.client()
        cl.wait_for(lambda s: s["nfc"]["state"] == "down", what="reader reported down")
        faults = events(cl, "fault")
        assert faults and faults[0]["part"] == "nfc" and "bus error" in faults[0]["error"]
        cl.keys(f"**{DEMO_PIN}#")
        cl.wait_for(lambda s: s["energized"], what="the keypad works")
        cl.close()


def test_mfrc522_reader(tmp_path: Path) -> None:
    cfg = nfc_config("spi")
    cfg["nfc"]["driver"] = "mfrc522"
    with SimCase(tmp_path / "case", cfg) as case:
        cl = case.client()
        st = cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="reader up")
        assert st["nfc"]["chip"] == "mfrc522"
        cl.call("card", uid=BADGE)
        cl.wait_for(lambda s: s["energized"], what="badge opens through the MFRC522")
        cycle_door(cl)
        cl.call("remove")
        cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="card gone")
        cl.call("phone", token="lt_abc")
        cl.wait_for(lambda s: s["display"][0].startswith("Service offline"), what="app token to the cloud")
        assert events(cl, "denied")[-1]["source"] == "app"
        cl.close()
