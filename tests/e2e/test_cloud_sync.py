"""A case that connects while no cloud worker listens (docs/provisioning.md's own order: the cloud
started before the broker, so its worker is still backing off when the case arrives) keeps
greeting until it is answered, then takes shopper requests; the cloud shows it synced, apart from
online, in its API and in `casectl status`."""

from __future__ import annotations

import time
from pathlib import Path

from casecloud import registry
from casecloud.models import Case
from sim.process import SimCase
from tests.casectl.conftest import CloudServer, cli
from tests.e2e.conftest import cloud_env, wait_for


def test_case_greets_until_a_late_worker_answers(tmp_path: Path) -> None:
    with cloud_env(tmp_path, ("c1",), start_worker=False) as env:
        with env.rt.sessions.begin() as s:
            registry.create_member(s, env.rt.hasher, env.rt.now(), card="04a1b2c3d4", status="trusted")
        api = CloudServer(tmp_path / "data").start()  # the HTTP API on the same database
        try:
            with SimCase(tmp_path / "case1", env.case_config(), heap="512k") as case:
                cl = case.client()
                # Connected to the broker, greeted into the void: nobody subscribed, no session kept.
                cl.wait_for(lambda s: s["cloud"] and s["cloud"]["up"], timeout=20, what="link up")
                time.sleep(1.0)  # its first greeting is gone (no worker to queue it for)
                assert not cl.state()["cloud"]["synced"]

                env.start_worker()
                cl.wait_for(lambda s: s["cloud"]["synced"], timeout=40, what="synced once the worker listens")
                assert cl.state()["cloud"]["connects"] == 1  # by greeting again, not by reconnecting

                cl.call("tap", uid="04A1B2C3D4", src="nfc")
                cl.wait_for(lambda s: s["energized"], timeout=10, what="a trusted member's card opens")

                def synced_in_db() -> bool:
                    with env.rt.sessions() as s:
                        c = s.get(Case, "c1")
                        return bool(c and c.online and c.synced)

                wait_for(synced_in_db, timeout=20)
                st = cli("status", "--cloud", api.url, "--json")
                assert st.code == 0, st.all
                (c1,) = st.json()["cases"]
                assert c1["id"] == "c1" and c1["online"] is True and c1["synced"] is True
                human = cli("status", "--cloud", api.url)
                assert human.code == 0, human.all
                assert "synced" in human.out
                row = next(line for line in human.out.splitlines() if "c1" in line)
                assert row.count("yes") == 2, human.out  # online and synced
                cl.close()
        finally:
            api.stop()
