"""`synced` apart from `online`: a case whose greeting is not answered yet still sends heartbeats
(saying `"synced": false`, with an `exp` from its unset clock); the cloud takes them, stores and
shows `synced`, and still refuses them forged, replayed, or claiming a clock they lack.

Driven through `Handler.handle` with a case signing with the firmware codec (no broker)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from casecloud.api import create_app
from casecloud.batch import Handler
from casecloud.models import Case
from casecloud.runtime import Runtime
from lockcase.uplink import codec as P
from tests.cloud.conftest import FakeClock

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}
UNSET_RTC = 946684800.0  # an ESP32's clock at boot: 2000-01-01


class Unsynced:
    """The case before its hello is answered: its clock says 2000."""

    def __init__(self, key: bytes) -> None:
        self.topics = P.topics("lockcase/v1", "s1", "c1")
        self.codec = P.Codec("c1", key, P.MemorySeqs(), clock=lambda: UNSET_RTC)

    def msg(self, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        return self.topics[kind], self.codec.sign(self.topics[kind], body)


def case_row(rt: Runtime) -> Case:
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None
        return c


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as c:
        yield c


def test_unsynced_beat_is_taken_and_shown(rt: Runtime, shop: dict[str, Any], api: TestClient) -> None:
    case = Unsynced(shop["key"])
    h = Handler(rt)
    topic, payload = case.msg("status", {"t": "beat", "up": 7, "synced": False, "door": "closed"})
    assert h.handle(topic, payload) == []  # a beat is never answered
    c = case_row(rt)
    assert c.online and not c.synced and c.last_status == {"up": 7, "door": "closed"}
    got = api.get("/v1/admin/cases/c1", headers=H).json()
    assert got["online"] is True and got["synced"] is False

    # replayed: the window refuses it even though its exp is not checked
    h.handle(topic, payload)
    assert h.rejected["replay"] == 1
    # claiming a clock it lacks: a beat without "synced": false keeps the exp check
    h.handle(*case.msg("status", {"t": "beat", "up": 8}))
    h.handle(*case.msg("status", {"t": "beat", "up": 9, "synced": True}))
    assert h.rejected["expired"] == 2
    # forged: another key
    forger = Unsynced(bytes(32))
    h.handle(*forger.msg("status", {"t": "beat", "up": 10, "synced": False}))
    assert h.rejected["bad_sig"] == 1
    assert case_row(rt).last_status == {"up": 7, "door": "closed"}


def test_synced_after_the_greeting_and_unsynced_when_gone(rt: Runtime, shop: dict[str, Any], clock: FakeClock,
                                                         api: TestClient) -> None:
    case = Unsynced(shop["key"])
    h = Handler(rt)
    (out,) = h.handle(*case.msg("status", {"t": "hello", "fw": "1.0"}))
    assert case.codec.open(out.topic, out.payload)["t"] == "time" and case.codec.synced
    assert not case_row(rt).synced  # the cloud answered; only the case's beat says it took it
    h.handle(*case.msg("status", {"t": "beat", "up": 3, "synced": True}))
    assert case_row(rt).synced and case_row(rt).online
    rows = api.get("/v1/admin/cases", headers=H).json()
    assert [(r["id"], r["online"], r["synced"]) for r in rows] == [("c1", True, True)]
    # the Last Will: offline, and so no longer synced either
    h.handle(case.topics["presence"], b"offline")
    c = case_row(rt)
    assert not c.online and not c.synced
    # a beat from firmware without the field passed the clock check: synced
    h.handle(*case.msg("status", {"t": "beat", "up": 4}))
    assert case_row(rt).synced
