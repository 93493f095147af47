"""The console's release pages (HQ only; docs/ota.md): the releases and their rollouts, a new
rollout from the form, one rollout's progress per case from the cases' own reports, halt and
resume; refused to a manager, and to a form without the CSRF token."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from casecloud import registry
from casecloud.accounts import users
from casecloud.adapters.notify import RecordingNotifier
from casecloud.batch import Handler
from casecloud.releases import store
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.test_desired import Device
from tests.cloud.test_releases import PUB, make
from tests.web.test_console_pages import PW, client, signed_in

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data = tmp_path_factory.mktemp("console-releases") / "data"
    r = build(Settings(data_dir=data, admin_token=SecretStr("boot"), release_keys=[PUB]), notifier=RecordingNotifier())
    now = r.now()
    keys = {}
    with r.sessions.begin() as s:
        registry.create_store(s, "s1", now, name="Store s1")
        for cid in ("c1", "c2"):
            keys[cid] = registry.register_case(s, "s1", cid, now)[1].key_hex
        for email, role, stores in (("mgr@example.com", "manager", ("s1",)), ("hq@example.com", "hq", ())):
            users.create(s, now, email=email, password=PW, role=role, stores=stores, display_name=role.title())
        m, sig, files = make()
        store.create(s, m, sig, [PUB], now, "tests")
        for i, d in enumerate(files):
            store.put_file(s, "sim-1.1.0", i, d)
    r.case_keys = keys  # type: ignore[attr-defined]
    yield r
    r.engine.dispose()


def test_hq_starts_follows_halts_and_resumes_a_rollout(rt: Runtime) -> None:
    api, csrf = signed_in(rt, "hq@example.com")
    page = api.get("/console/hq/releases")
    assert page.status_code == 200 and "sim-1.1.0" in page.text and "No rollouts." in page.text
    assert 'href="/console/hq/releases"' in page.text  # in the HQ navigation
    no_csrf = api.post("/console/hq/rollouts", data={"release": "sim-1.1.0", "target": "store", "value": "s1"})
    assert no_csrf.status_code == 403
    bad = api.post("/console/hq/rollouts", data={"csrf_token": csrf, "release": "sim-1.1.0", "target": "pct",
                                                  "value": "lots", "waves": "100"})
    assert bad.status_code == 422 and "invalid literal" in bad.text  # the page says why
    r = api.post("/console/hq/rollouts", data={"csrf_token": csrf, "release": "sim-1.1.0", "target": "store",
                                                "value": "s1", "waves": "50,100", "wave_after_s": "",
                                                "max_fail_pct": "20"})
    assert r.status_code == 303, r.text
    where = r.headers["location"]
    rid = where.split("/")[-1].split("?")[0]
    shown = api.get(where)
    assert shown.status_code == 200 and "Rollout started." in shown.text and "pending" in shown.text
    # the first wave's case reports its download: the page shows it
    with rt.sessions() as s:
        from casecloud.models import RolloutCase

        first = s.query(RolloutCase).filter_by(rollout_id=rid, wave=0).one().case_id
    dev = Device(bytes.fromhex(rt.case_keys[first]), rt.clock, first)  # type: ignore[attr-defined]
    h = Handler(rt)
    assert [m["t"] for m in dev.read(h.handle(*dev.msg("status", {"t": "hello", "fw": "1.0.0"})))] == ["time", "fw"]
    h.handle(*dev.msg("evt", {"t": "evts", "evts": [{"i": "e1", "k": "fw", "ts": rt.now(),
                                                      "d": {"rel": "sim-1.1.0", "st": "downloading", "pct": 40}}]}))
    shown = api.get(f"/console/hq/rollouts/{rid}").text
    assert 'value="40"' in shown and "40 %" in shown and "waiting" in shown  # wave 2 waits
    # on a phone a row is a card of labelled lines: the waiting case's card has no empty ones
    waiting = shown.split("waiting", 1)[1].split("</tr>", 1)[0]
    assert "data-label" not in waiting and 'data-label="Progress"' in shown, waiting
    halted = api.post(f"/console/hq/rollouts/{rid}/halt", data={"csrf_token": csrf, "reason": "field reports"})
    assert halted.status_code == 303
    shown = api.get(halted.headers["location"]).text
    assert "halted: field reports" in shown and "Resume the rollout" in shown
    assert api.post(f"/console/hq/rollouts/{rid}/resume", data={"csrf_token": csrf}).status_code == 303
    assert "▶ active" in api.get(f"/console/hq/rollouts/{rid}").text
    listed = api.get("/console/hq/releases").text
    assert rid in listed and "1 of 2" in listed
    assert api.get("/console/hq/rollouts/ro_nope").status_code == 404


def test_a_manager_gets_no_release_page(rt: Runtime) -> None:
    api, csrf = signed_in(rt, "mgr@example.com")
    assert api.get("/console/hq/releases").status_code == 403
    assert api.post("/console/hq/rollouts", data={"csrf_token": csrf, "release": "sim-1.1.0", "target": "store",
                                                   "value": "s1"}).status_code == 403
    anon: TestClient = client(rt)
    assert anon.get("/console/hq/releases").status_code == 303  # to the login page
