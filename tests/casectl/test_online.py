"""provision's last step against the real cloud API: a case that does not come online ends in a
clear error (status 15), not a reported success. test_watch.py has the case that does come online."""

from __future__ import annotations

import pytest

from casecloud import registry
from casectl.cloudapi import Cloud
from casectl.errors import CaseOffline
from casectl.provision import wait_online
from tests.casectl.conftest import TOKEN, CloudServer


def test_a_case_that_never_connects_is_reported_offline(cloud: CloudServer) -> None:
    with cloud.rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c1", cloud.rt.now())
    with Cloud(cloud.url, TOKEN) as cl, pytest.raises(CaseOffline) as e:
        wait_online(cl, "c1", timeout_s=1.0, poll_s=0.2)
    assert "not back online after 1 s: not connected to the broker" in e.value.message
    assert e.value.exit_code == 15 and e.value.code == "case_offline"


def test_a_rotated_case_is_not_back_until_it_greets_with_its_new_key(cloud: CloudServer) -> None:
    from casecloud.models import Case

    with cloud.rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c1", cloud.rt.now())
        c = s.get(Case, "c1")
        assert c is not None
        c.online, c.synced = True, True  # as it was under its old key
    with Cloud(cloud.url, TOKEN) as cl:
        assert wait_online(cl, "c1", timeout_s=1.0)["synced"]
        cl.register_case("s1", "c1", rotate_if_exists=True)
        with pytest.raises(CaseOffline, match="greeting under the new key was not answered"):
            wait_online(cl, "c1", timeout_s=1.0, poll_s=0.2)


def test_a_negative_online_timeout_is_a_usage_error() -> None:
    """It silently skipped the wait once; a technician's typo must not turn into 'success'."""
    from tests.casectl.conftest import cli

    r = cli("provision", "/dev/null", "--store", "s1", "--case", "c1", "--online-timeout", "-5")
    assert r.code == 2 and "online-timeout" in (r.out + r.err)
