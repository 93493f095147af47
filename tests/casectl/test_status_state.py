"""`casectl status` shows per case the staff/config version applied against the one desired, and
marks the cases that have not applied it yet (pending)."""

from __future__ import annotations

import httpx

from casecloud import registry
from casecloud.models import Case
from tests.casectl.conftest import TOKEN, CloudServer, cli


def test_status_shows_applied_against_desired_and_marks_pending(cloud: CloudServer) -> None:
    with cloud.rt.sessions.begin() as s:
        for cid in ("c1", "c2"):
            registry.register_case(s, "s1", cid, cloud.rt.now())
    r = httpx.post(f"{cloud.url}/v1/admin/stores/s1/staff", json={"kind": "pin", "hash": "ab" * 32},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201 and r.json()["pending"] == ["c1", "c2"]
    with cloud.rt.sessions.begin() as s:  # c2 reported it applied (a beat)
        c2 = s.get(Case, "c2")
        assert c2 is not None
        c2.applied_v = c2.desired_v

    st = cli("status", "--cloud", cloud.url, "--json")
    assert st.code == 0, st.all
    rows = {c["id"]: c for c in st.json()["cases"]}
    assert (rows["c1"]["applied_v"], rows["c1"]["desired_v"], rows["c1"]["pending"]) == (0, 1, True)
    assert (rows["c2"]["applied_v"], rows["c2"]["desired_v"], rows["c2"]["pending"]) == (1, 1, False)

    human = cli("status", "--cloud", cloud.url)
    assert human.code == 0, human.all
    line = {cid: next(x for x in human.out.splitlines() if f" {cid} " in f" {x} ") for cid in ("c1", "c2")}
    assert "v0/v1 pending" in line["c1"], human.out
    assert "v1/v1" in line["c2"] and "pending" not in line["c2"], human.out
