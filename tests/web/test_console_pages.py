"""The store console's pages through FastAPI's TestClient (https://, so the Secure cookie comes
back as from a browser): every page answers for its role and refuses the others, another store's
pages answer 404 as missing ones, every form is refused without the CSRF token, the login and
logout flow, the QR label's unlock page, /docs without a CDN, and the live feed's changes.
tests/web/test_console_browser.py drives the same pages in a real Chromium."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from casecloud import alerts as alerting
from casecloud import registry
from casecloud.accounts import users
from casecloud.adapters.notify import RecordingNotifier
from casecloud.api import create_app
from casecloud.console.live import AlertFeed
from casecloud.models import Alert, ApiToken, Case, Member, Staff, Store, User
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PW = "console tests passphrase"
COOKIE = "__Host-casecloud_session"
HASH = "ab" * 32


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Two stores (s1 with case c1, s2 with case c2), an open alert in each, one user per role
    (the associate and the manager of s1) and a member. One per module: argon2 is slow."""
    data = tmp_path_factory.mktemp("console") / "data"
    r = build(Settings(data_dir=data, admin_token=SecretStr("boot")), notifier=RecordingNotifier())
    now = r.now()
    with r.sessions.begin() as s:
        for sid, cid in (("s1", "c1"), ("s2", "c2")):
            registry.create_store(s, sid, now, name=f"Store {sid}")
            registry.register_case(s, sid, cid, now, name=f"Case {cid}")
        for email, role, stores in (("assoc@example.com", "associate", ("s1",)),
                                    ("mgr@example.com", "manager", ("s1",)), ("hq@example.com", "hq", ())):
            users.create(s, now, email=email, password=PW, role=role, stores=stores, display_name=role.title())
        registry.create_member(s, r.hasher, now, phone="2025550143", status="member")
    for sid, cid in (("s1", "c1"), ("s2", "c2")):
        raise_alert(r, sid, cid, "forced")
    yield r
    r.engine.dispose()


def raise_alert(rt: Runtime, store: str, case: str, kind: str) -> int:
    with rt.sessions.begin() as s:
        rt.policy.alerts.raise_(s, store, case, kind, "door opened without a grant", rt.now())
    with rt.sessions() as s:
        a = s.scalars(select(Alert).where(Alert.case_id == case, Alert.kind == kind, Alert.state != "resolved")).one()
        return a.id


def alert_of(rt: Runtime, case: str) -> Alert:
    with rt.sessions() as s:
        return s.scalars(select(Alert).where(Alert.case_id == case).order_by(Alert.id.desc())).first()  # type: ignore[return-value]


def client(rt: Runtime) -> TestClient:
    return TestClient(create_app(rt), base_url="https://testserver", follow_redirects=False)


def signed_in(rt: Runtime, email: str) -> tuple[TestClient, str]:
    """A browser signed in through the login form; and its CSRF token."""
    api = client(rt)
    r = api.post("/v1/auth/login", data={"email": email, "password": PW, "next": "/console"})
    assert r.status_code == 303 and r.headers["location"] == "/console", r.text
    token = api.get("/v1/me").json()["csrf_token"]
    return api, token


@pytest.fixture(scope="module")
def assoc(rt: Runtime) -> tuple[TestClient, str]:
    return signed_in(rt, "assoc@example.com")


@pytest.fixture(scope="module")
def mgr(rt: Runtime) -> tuple[TestClient, str]:
    return signed_in(rt, "mgr@example.com")


@pytest.fixture(scope="module")
def hq(rt: Runtime) -> tuple[TestClient, str]:
    return signed_in(rt, "hq@example.com")


def csrf_field(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


# --- signing in and out -----------------------------------------------------------------------

def test_root_and_pages_send_a_signed_out_visitor_to_the_login(rt: Runtime) -> None:
    api = client(rt)
    assert api.get("/").headers["location"] == "/console"
    r = api.get("/console/stores/s1")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/stores/s1"
    page = api.get("/console/login?next=/console/stores/s1")
    assert page.status_code == 200
    assert 'action="/v1/auth/login"' in page.text and 'value="/console/stores/s1"' in page.text
    assert '<label for="email">' in page.text and '<label for="password">' in page.text
    assert api.get("/console/login?next=//evil.example").text.count('value="/console"') == 1


def test_login_error_is_shown_and_logout_needs_the_csrf_token(rt: Runtime) -> None:
    api = client(rt)
    r = api.post("/v1/auth/login", data={"email": "assoc@example.com", "password": "wrong password here",
                                         "next": "/console/stores/s1"})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?error=refused&next=/console/stores/s1"
    assert "Wrong email or password" in api.get(r.headers["location"]).text
    r = api.post("/v1/auth/login", data={"email": "assoc@example.com", "password": PW, "next": "/console"})
    assert r.status_code == 303
    # an associate of one store goes straight to it
    assert api.get("/console").headers["location"] == "/console/stores/s1"
    page = api.get("/console/stores/s1")
    token = csrf_field(page.text)
    assert f'<meta name="csrf-token" content="{token}">' in page.text
    assert api.post("/console/logout").status_code == 403  # no CSRF token
    assert api.post("/console/logout", data={"csrf_token": "0" * 64}).status_code == 403
    r = api.post("/console/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert COOKIE in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    api.cookies.clear()
    assert api.get("/console/stores/s1").status_code == 303  # signed out


# --- associates ---------------------------------------------------------------------------------

def test_associate_sees_their_store_only(rt: Runtime, assoc: tuple[TestClient, str]) -> None:
    api, _ = assoc
    page = api.get("/console/stores/s1")
    assert page.status_code == 200
    for text in ("Case c1", "Online", "Synced", "Lock", "Door", "Open alarms", "Firmware", "Last event",
                 "door opened without a grant", 'id="alarms"'):
        assert text in page.text
    assert "Case c2" not in page.text
    assert api.get("/console/cases/c1").status_code == 200
    assert "Relock now" in api.get("/console/cases/c1").text
    assert api.get("/console/stores/s1/alarms").status_code == 200
    # another store's pages answer as missing ones, in the console and in the API
    for path in ("/console/stores/s2", "/console/stores/s2/alarms", "/console/cases/c2", "/console/stores/zz"):
        r = api.get(path)
        assert r.status_code == 404 and "Not found" in r.text, path
    assert api.get("/console/stores/s2").text.count("no store s2") == 1
    assert api.get("/v1/admin/cases/c2").status_code == 404
    # pages above the role
    for path in ("/console/stores/s1/staff", "/console/stores/s1/events", "/console/members", "/console/audit",
                 "/console/hq/stores", "/console/hq/cases", "/console/hq/users", "/console/hq/tokens"):
        assert api.get(path).status_code == 403, path


def test_acknowledge_and_resolve_need_the_csrf_token_and_the_store(rt: Runtime, assoc: tuple[TestClient, str]) -> None:
    api, token = assoc
    mine, theirs = alert_of(rt, "c1"), alert_of(rt, "c2")
    assert api.post(f"/console/alerts/{mine.id}/ack").status_code == 403
    assert api.post(f"/console/alerts/{mine.id}/ack", data={"csrf_token": "f" * 64}).status_code == 403
    assert api.post(f"/console/alerts/{theirs.id}/ack", data={"csrf_token": token}).status_code == 404
    assert alert_of(rt, "c2").state == "open"
    r = api.post(f"/console/alerts/{mine.id}/ack", data={"csrf_token": token, "next": "/console/stores/s1"})
    assert r.status_code == 303 and r.headers["location"] == "/console/stores/s1?note=acked"
    a = alert_of(rt, "c1")
    assert a.state == "acknowledged" and a.acked_by == "Associate"
    assert "Alarm acknowledged." in api.get(r.headers["location"]).text
    r = api.post(f"/console/alerts/{mine.id}/resolve", data={"csrf_token": token, "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/console/stores/s1/alarms?note=resolved"
    assert alert_of(rt, "c1").state == "resolved"
    raise_alert(rt, "s1", "c1", "forced")  # for the other tests


def test_relock_needs_the_csrf_token_and_the_store(rt: Runtime, assoc: tuple[TestClient, str]) -> None:
    api, token = assoc
    assert api.post("/console/cases/c1/relock").status_code == 403
    assert api.post("/console/cases/c2/relock", data={"csrf_token": token}).status_code == 404
    # no broker in this app: the command answers 503, as a page
    r = api.post("/console/cases/c1/relock", data={"csrf_token": token})
    assert r.status_code == 503 and "broker" in r.text


def test_a_cross_site_form_is_refused(rt: Runtime, assoc: tuple[TestClient, str]) -> None:
    api, token = assoc
    r = api.post(f"/console/alerts/{alert_of(rt, 'c1').id}/ack", data={"csrf_token": token},
                 headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


# --- managers -------------------------------------------------------------------------------------

def test_manager_staff_credentials(rt: Runtime, mgr: tuple[TestClient, str]) -> None:
    api, token = mgr
    page = api.get("/console/stores/s1/staff")
    assert page.status_code == 200 and "Sync of each case" in page.text
    assert api.get("/console/stores/s2/staff").status_code == 404
    assert api.post("/console/stores/s1/staff", data={"kind": "pin", "hash": HASH}).status_code == 403
    r = api.post("/console/stores/s1/staff", data={"csrf_token": token, "kind": "pin", "hash": "12"})
    assert r.status_code == 422 and "64 hex digits" in r.text
    r = api.post("/console/stores/s1/staff", data={"csrf_token": token, "kind": "pin", "hash": HASH, "label": "Ann"})
    assert r.status_code == 303
    page = api.get(r.headers["location"]).text
    assert "Ann" in page and "pending" in page  # c1 has not applied the new set
    assert api.post("/console/stores/s2/staff", data={"csrf_token": token, "kind": "pin", "hash": HASH}
                    ).status_code == 404
    with rt.sessions() as s:
        st = s.scalars(select(Staff).where(Staff.label == "Ann")).one()
        c1 = s.get(Case, "c1")
        assert c1 is not None and c1.desired_v == 1 and c1.applied_v == 0
    assert api.post(f"/console/staff/{st.id}/revoke").status_code == 403
    assert api.post(f"/console/staff/{st.id}/revoke", data={"csrf_token": token}).status_code == 303
    with rt.sessions() as s:
        assert s.get(Staff, st.id) is None


def test_manager_members_search_flag_trust_erase(rt: Runtime, mgr: tuple[TestClient, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    api, token = mgr
    assert api.get("/console/members").status_code == 200
    assert api.post("/console/members/search", data={"phone": "2025550143"}).status_code == 403
    r = api.post("/console/members/search", data={"csrf_token": token, "phone": "(202) 555-0143", "country": "us"})
    assert r.status_code == 200, re.findall(r"role=\"alert\">([^<]*)", r.text)
    assert r.status_code == 200 and "1 found" in r.text
    assert "2025550143" not in r.text and "555-0143" not in r.text  # never shown back
    assert "2025550143" not in caplog.text
    with rt.sessions() as s:
        m = s.scalars(select(Member)).one()
    # each change has a confirmation step: its GET changes nothing
    confirm = api.get(f"/console/members/{m.id}/flag")
    assert confirm.status_code == 200 and "Yes, flag" in confirm.text
    with rt.sessions() as s:
        assert s.get(Member, m.id).status == "member"  # type: ignore[union-attr]
    assert api.post(f"/console/members/{m.id}/flag").status_code == 403
    assert api.post(f"/console/members/{m.id}/flag", data={"csrf_token": token}).status_code == 303
    with rt.sessions() as s:
        assert s.get(Member, m.id).status == "flagged"  # type: ignore[union-attr]
    assert api.post(f"/console/members/{m.id}/trust", data={"csrf_token": token}).status_code == 303
    with rt.sessions() as s:
        assert s.get(Member, m.id).status == "trusted"  # type: ignore[union-attr]
    assert "Yes, erase" in api.get(f"/console/members/{m.id}/erase").text
    assert api.post(f"/console/members/{m.id}/erase", data={"csrf_token": token}).status_code == 303
    with rt.sessions() as s:
        assert s.get(Member, m.id) is None
    assert api.get(f"/console/members/{m.id}/erase").status_code == 404


def test_manager_event_log_and_audit(rt: Runtime, mgr: tuple[TestClient, str]) -> None:
    api, _ = mgr
    assert api.get("/console/stores/s1/events").status_code == 200
    assert api.get("/console/stores/s2/events").status_code == 404
    page = api.get("/console/audit")
    assert page.status_code == 200
    assert "auth.login" not in page.text or "s2" not in page.text  # their stores' entries only


# --- hq -------------------------------------------------------------------------------------------

def test_hq_stores_cases_users_tokens_audit(rt: Runtime, hq: tuple[TestClient, str]) -> None:
    api, token = hq
    assert api.get("/console").status_code == 200  # hq: the list of stores
    for path in ("/console/hq/stores", "/console/hq/cases", "/console/hq/users", "/console/hq/tokens",
                 "/console/audit", "/console/stores/s2", "/console/cases/c2"):
        assert api.get(path).status_code == 200, path
    assert api.post("/console/hq/stores", data={"id": "s3"}).status_code == 403
    r = api.post("/console/hq/stores", data={"csrf_token": token, "id": "s3", "name": "Third", "country": "us"})
    assert r.status_code == 303
    r = api.post("/console/hq/stores", data={"csrf_token": token, "id": "s3"})
    assert r.status_code == 409 and "s3" in r.text
    r = api.post("/console/hq/cases", data={"csrf_token": token, "id": "c3", "store": "s3", "name": "Razors"})
    assert r.status_code == 200 and "shown this once" in r.text and re.search(r"<code>[0-9a-f]{64}</code>", r.text)
    r = api.post("/console/hq/cases/c3/rotate", data={"csrf_token": token})
    assert r.status_code == 200 and "Key version</dt><dd>2" in r.text
    assert "Yes, retire" in api.get("/console/hq/cases/c3/retire").text
    assert api.post("/console/hq/cases/c3/retire").status_code == 403
    assert api.post("/console/hq/cases/c3/retire", data={"csrf_token": token}).status_code == 303
    with rt.sessions() as s:
        assert s.get(Case, "c3") is None and s.get(Store, "s3") is not None
    r = api.post("/console/hq/users", data={"csrf_token": token, "email": "new@example.com", "password": "short",
                                            "role": "associate", "stores": ["s1"]})
    assert r.status_code == 422
    r = api.post("/console/hq/users", data={"csrf_token": token, "email": "new@example.com", "password": PW,
                                            "role": "associate", "stores": ["s1", "s3"]})
    assert r.status_code == 303
    with rt.sessions() as s:
        u = users.by_email(s, "new@example.com")
        assert u is not None and users.stores_of(s, u) == {"s1", "s3"}
    r = api.post(f"/console/hq/users/{u.id}", data={"csrf_token": token, "role": "manager", "stores": ["s3"],
                                                     "disabled": "on"})
    assert r.status_code == 303
    with rt.sessions() as s:
        got = s.get(User, u.id)
        assert got is not None and got.role == "manager" and got.disabled
    r = api.post("/console/hq/tokens", data={"csrf_token": token, "name": "pos", "role": "manager", "store": "s1"})
    assert r.status_code == 200
    m = re.search(r'<code id="new-token">(lct_[\w-]+)</code>', r.text)
    assert m
    assert api.get("/v1/admin/stores/s1/staff", headers={"Authorization": f"Bearer {m.group(1)}"}).status_code == 200
    with rt.sessions() as s:
        tok = s.scalars(select(ApiToken).where(ApiToken.name == "pos")).one()
    assert api.post(f"/console/hq/tokens/{tok.id}/revoke", data={"csrf_token": token}).status_code == 303
    assert api.get("/v1/admin/stores/s1/staff", headers={"Authorization": f"Bearer {m.group(1)}"}).status_code == 401
    audit = api.get("/console/audit").text
    for action in ("store.create", "case.register", "case.rotate", "case.delete", "user.create", "token.revoke"):
        assert action in audit


def test_manager_is_refused_hq_pages(mgr: tuple[TestClient, str]) -> None:
    api, token = mgr
    for path in ("/console/hq/stores", "/console/hq/cases", "/console/hq/users", "/console/hq/tokens"):
        assert api.get(path).status_code == 403
    assert api.post("/console/hq/stores", data={"csrf_token": token, "id": "s9"}).status_code == 403


# --- the QR label's page, /docs, static files ---------------------------------------------------

def test_unlock_page(rt: Runtime) -> None:
    api = client(rt)
    page = api.get("/app/unlock?case=c1")
    assert page.status_code == 200 and 'name="case" value="c1"' in page.text and '<label for="token">' in page.text
    r = api.post("/app/unlock", data={"case": "c1", "token": "not-a-token"})
    assert r.status_code == 403 and "cannot open this case" in r.text


def test_docs_are_served_without_a_cdn(rt: Runtime) -> None:
    api = client(rt)
    r = api.get("/docs")
    assert r.status_code == 200
    assert "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in r.text
    assert "cdn" not in r.text.replace("swagger-ui-dist", "")  # not one URL elsewhere
    assert api.get("/static/console/console.css").status_code == 200
    assert api.get("/static/console/console.js").status_code == 200


def test_vendor_files_come_from_the_configured_directory(tmp_path: Path) -> None:
    vendor = tmp_path / "web"
    (vendor / "htmx.org" / "dist").mkdir(parents=True)
    (vendor / "htmx.org" / "dist" / "htmx.min.js").write_text("// htmx")
    r = build(Settings(data_dir=tmp_path / "data", admin_token=SecretStr("b"), web_assets_dir=vendor))
    try:
        api = client(r)
        got = api.get("/static/vendor/htmx.org/dist/htmx.min.js")
        assert got.status_code == 200 and got.text == "// htmx"
        assert api.get("/static/vendor/../data/server_secret").status_code == 404
    finally:
        r.engine.dispose()


# --- the live feed --------------------------------------------------------------------------------

def test_feed_reports_new_acknowledged_and_resolved_alerts(rt: Runtime) -> None:
    feed = AlertFeed(rt)
    assert asyncio.run(feed.poll_once()) == []  # the baseline
    aid = raise_alert(rt, "s2", "c2", "help")
    got: list[dict[str, Any]] = asyncio.run(feed.poll_once())
    assert [(c["id"], c["state"], c["new"], c["store"]) for c in got] == [(aid, "open", True, "s2")]
    assert asyncio.run(feed.poll_once()) == []  # nothing changed
    with rt.sessions.begin() as s:
        alerting.acknowledge(s, aid, "someone", rt.now())
    got = asyncio.run(feed.poll_once())
    assert [(c["id"], c["state"], c["new"], c["acked_by"]) for c in got] == [(aid, "acknowledged", False, "someone")]
    with rt.sessions.begin() as s:
        alerting.resolve(s, aid, "someone", rt.now())
    got = asyncio.run(feed.poll_once())
    assert [(c["id"], c["state"]) for c in got] == [(aid, "resolved")]


def test_a_huge_paging_cursor_is_refused_not_a_server_error(mgr: tuple[TestClient, str],
                                                            hq: tuple[TestClient, str]) -> None:
    huge = "9" * 30
    for api, path in ((mgr[0], "/console/stores/s1/events"), (mgr[0], "/console/audit"), (hq[0], "/console/audit")):
        for v in (huge, "-" + huge):
            r = api.get(f"{path}?before={v}")
            assert r.status_code == 422, (path, v, r.status_code)
