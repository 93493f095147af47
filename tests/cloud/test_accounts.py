"""Accounts (docs/accounts.md): the bootstrap token, argon2 passwords, sessions in cookies, CSRF,
login limits and lockout, API tokens scoped by role and store, and the audit log. Over a real
database (SQLite, PostgreSQL), through FastAPI's TestClient on https://, so the Secure cookie is
sent back as a browser would."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from casecloud import registry
from casecloud.accounts import passwords, sessions, users
from casecloud.adapters.notify import RecordingNotifier
from casecloud.api import create_app
from casecloud.models import Alert, ApiToken, AuditEntry, Case, LoginSession, Staff, User
from casecloud.privacy import retention
from casecloud.registry import Invalid
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.conftest import FakeClock

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

BOOT = {"Authorization": "Bearer test-bootstrap-token"}
PW = "correct horse battery"
WRONG = "incorrect horse battery"
REFUSED = "wrong email or password, or the account cannot sign in now"
COOKIE = "__Host-casecloud_session"


@pytest.fixture
def rt0(settings: Settings, clock: FakeClock) -> Iterator[Runtime]:
    """A cloud with no account at all (the `rt` fixture seeds an HQ user)."""
    r = build(settings, clock=clock, notifier=RecordingNotifier())
    yield r
    r.engine.dispose()


def client(rt: Runtime, ip: str = "198.51.100.7") -> TestClient:
    return TestClient(create_app(rt), base_url="https://testserver", client=(ip, 50000))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bootstrap(api: TestClient) -> str:
    """The first HQ user, hq@example.com; returns its hq API token."""
    r = api.post("/v1/bootstrap/hq-user", headers=BOOT,
                 json={"email": "hq@example.com", "password": PW, "display_name": "Hana Q", "token_name": "setup"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"]["token"])


def add_user(rt: Runtime, email: str, role: str, stores: tuple[str, ...] = (), password: str = PW) -> str:
    with rt.sessions.begin() as s:
        return users.create(s, rt.now(), email=email, password=password, role=role, stores=stores).id


def login(api: TestClient, email: str, password: str = PW) -> Any:
    return api.post("/v1/auth/login", json={"email": email, "password": password})


def csrf(api: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": api.get("/v1/me").json()["csrf_token"]}


def audit_rows(rt: Runtime) -> list[AuditEntry]:
    with rt.sessions() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# --- bootstrap and passwords --------------------------------------------------------------------

def test_the_bootstrap_token_makes_the_first_hq_user_and_is_then_refused(rt0: Runtime) -> None:
    api = client(rt0)
    body = {"email": "hq@example.com", "password": PW}
    assert api.post("/v1/bootstrap/hq-user", json=body).status_code == 401
    assert api.post("/v1/bootstrap/hq-user", json=body, headers=bearer("nope")).status_code == 401
    # before and after, the bootstrap token opens no other route
    assert api.get("/v1/admin/stores", headers=BOOT).status_code == 401
    token = bootstrap(api)
    assert token.startswith("lct_")
    again = api.post("/v1/bootstrap/hq-user", headers=BOOT, json={"email": "other@example.com", "password": PW})
    assert again.status_code == 403 and "HQ user exists" in again.json()["detail"]
    r = api.get("/v1/admin/stores", headers=BOOT)
    assert r.status_code == 401 and "bootstrap" in r.json()["detail"]
    assert api.post("/v1/admin/stores", json={"id": "s1"}, headers=bearer(token)).status_code == 201
    with rt0.sessions() as s:
        assert [u.email for u in s.scalars(select(User))] == ["hq@example.com"]
    made = [(e.actor, e.action, e.result) for e in audit_rows(rt0)]
    assert made[:2] == [("bootstrap", "user.create", "ok"), ("bootstrap", "token.create", "ok")]


def test_a_disabled_hq_user_still_ends_the_bootstrap(rt0: Runtime) -> None:
    bootstrap(client(rt0))
    with rt0.sessions.begin() as s:
        u = users.by_email(s, "hq@example.com")
        assert u is not None
        u.disabled = True  # by hand: the API refuses to disable the last HQ user
    r = client(rt0).post("/v1/bootstrap/hq-user", headers=BOOT, json={"email": "x@example.com", "password": PW})
    assert r.status_code == 403


def test_passwords_are_argon2id_and_follow_the_rules(rt0: Runtime) -> None:
    uid = add_user(rt0, "ann.lee@example.com", "associate")
    with rt0.sessions() as s:
        u = s.get(User, uid)
        assert u is not None and u.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert PW not in u.password_hash and passwords.verify(u.password_hash, PW)
        assert not passwords.verify(u.password_hash, WRONG)
    for bad in ("short pw", "x" * 11, "ann.lee-is-my-password", "ANN.LEE@EXAMPLE.ORG!!"):
        with pytest.raises(Invalid), rt0.sessions.begin() as s:
            users.create(s, rt0.now(), email="ann.lee@example.org", password=bad, role="associate")
    with pytest.raises(Invalid), rt0.sessions.begin() as s:
        users.create(s, rt0.now(), email="bob@example.com", password="Bob Builder 2024", role="associate",
                     display_name="Bob Builder")


# --- sessions -----------------------------------------------------------------------------------

def test_login_sets_a_secure_httponly_cookie_and_rotates_the_session(rt0: Runtime) -> None:
    add_user(rt0, "ann@example.com", "associate")
    api = client(rt0)
    r = login(api, "ANN@example.com ")  # the email is matched whatever its case
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= attrs and "samesite=lax" in cookie.lower()
    assert "path=/" in cookie.lower() and r.headers["cache-control"] == "no-store"
    first = api.cookies[COOKIE]
    with rt0.sessions() as s:  # only the id's hash is kept
        assert s.get(LoginSession, hashlib.sha256(first.encode()).hexdigest()) is not None
        assert s.get(LoginSession, first) is None
    me = api.get("/v1/me").json()
    assert me["via"] == "session" and me["user"]["email"] == "ann@example.com" and me["csrf_token"] == r.json()["csrf_token"]
    # a login with the old cookie present replaces it: the old id opens nothing any more
    assert login(api, "ann@example.com").status_code == 200
    second = api.cookies[COOKIE]
    assert second != first
    old = client(rt0)
    old.cookies.set(COOKIE, first)
    assert old.get("/v1/me").status_code == 401
    with rt0.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 1


def test_plain_http_cookie_only_when_configured(settings: Settings, clock: FakeClock) -> None:
    settings.cookie_secure = False
    settings.cookie_samesite = "strict"
    rt = build(settings, clock=clock)
    try:
        add_user(rt, "ann@example.com", "associate")
        api = TestClient(create_app(rt))  # http://
        r = login(api, "ann@example.com")
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith("casecloud_session=") and "secure" not in cookie and "samesite=strict" in cookie
        assert api.get("/v1/me").status_code == 200
    finally:
        rt.engine.dispose()


def test_logout_deletes_the_session(rt0: Runtime) -> None:
    add_user(rt0, "ann@example.com", "associate")
    api = client(rt0)
    login(api, "ann@example.com")
    raw = api.cookies[COOKIE]
    assert api.post("/v1/auth/logout").status_code == 403  # a change: the CSRF token is required
    assert api.post("/v1/auth/logout", headers=csrf(api)).status_code == 204
    with rt0.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 0
    replay = client(rt0)
    replay.cookies.set(COOKIE, raw)
    assert replay.get("/v1/me").status_code == 401
    assert [e.action for e in audit_rows(rt0)][-1] == "auth.logout"


def test_sessions_expire_when_idle_and_at_their_absolute_end(rt0: Runtime, clock: FakeClock) -> None:
    st = rt0.settings
    add_user(rt0, "ann@example.com", "associate")
    api = client(rt0)
    login(api, "ann@example.com")
    clock.advance(st.session_idle_s - 10)
    assert api.get("/v1/me").status_code == 200  # used in time: the idle clock restarts
    clock.advance(st.session_idle_s - 10)
    assert api.get("/v1/me").status_code == 200
    clock.advance(st.session_idle_s + 1)
    assert api.get("/v1/me").status_code == 401  # left unused too long
    with rt0.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 0  # and deleted
    login(api, "ann@example.com")
    for _ in range(st.session_absolute_s // (st.session_idle_s - 60) + 2):
        clock.advance(st.session_idle_s - 60)
        if api.get("/v1/me").status_code != 200:
            break
    else:
        pytest.fail("a busy session outlived session_absolute_s")
    assert api.get("/v1/me").status_code == 401


def test_csrf_is_required_for_changes_made_with_the_cookie(rt0: Runtime) -> None:
    token = bootstrap(client(rt0))
    api = client(rt0)
    assert login(api, "hq@example.com").status_code == 200
    assert api.get("/v1/admin/stores").status_code == 200  # reading needs no token
    assert api.post("/v1/admin/stores", json={"id": "s1"}).status_code == 403
    assert api.post("/v1/admin/stores", json={"id": "s1"}, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    good = csrf(api)
    cross = {**good, "Origin": "https://evil.example"}
    assert api.post("/v1/admin/stores", json={"id": "s1"}, headers=cross).status_code == 403
    assert api.post("/v1/admin/stores", json={"id": "s1"}, headers={**good, "Sec-Fetch-Site": "cross-site"}
                    ).status_code == 403
    assert api.post("/v1/admin/stores", json={"id": "s1"},
                    headers={**good, "Origin": "https://testserver"}).status_code == 201
    # a form carries it as a field
    assert api.post("/v1/auth/logout", data={"csrf_token": "nope"}).status_code == 403
    assert api.post("/v1/auth/logout", data={"csrf_token": good["X-CSRF-Token"]}).status_code == 204
    # an API token needs none, even beside a cookie: browsers never send one by themselves
    assert api.post("/v1/admin/stores", json={"id": "s2"}, headers=bearer(token)).status_code == 201


def test_a_form_login_goes_to_next_on_this_site_only(rt0: Runtime) -> None:
    add_user(rt0, "ann@example.com", "associate")
    api = client(rt0)
    r = api.post("/v1/auth/login", data={"email": "ann@example.com", "password": PW, "next": "/console/s1"},
                 follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/s1" and COOKIE in r.headers["set-cookie"]
    for nxt in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = api.post("/v1/auth/login", data={"email": "ann@example.com", "password": PW, "next": nxt},
                     follow_redirects=False)
        assert r.status_code == 200 and "location" not in r.headers
    assert api.post("/v1/auth/login", data={"email": "ann@example.com"}).status_code == 422
    assert api.post("/v1/auth/login", json={"email": "ann@example.com", "password": PW},
                    headers={"Origin": "https://evil.example"}).status_code == 403  # login CSRF


def test_changing_ones_password_ends_the_other_sessions(rt0: Runtime) -> None:
    add_user(rt0, "ann@example.com", "associate")
    phone, desk = client(rt0), client(rt0)
    login(phone, "ann@example.com")
    login(desk, "ann@example.com")
    new = "a brand new passphrase"
    assert desk.post("/v1/me/password", json={"current": WRONG, "new": new}, headers=csrf(desk)).status_code == 403
    r = desk.post("/v1/me/password", json={"current": PW, "new": new}, headers=csrf(desk))
    assert r.status_code == 200, r.text
    assert desk.get("/v1/me").status_code == 200 and phone.get("/v1/me").status_code == 401
    assert login(phone, "ann@example.com").status_code == 401 and login(phone, "ann@example.com", new).status_code == 200


# --- login limits -------------------------------------------------------------------------------

def test_lockout_after_failures_with_backoff_and_audited(rt0: Runtime, clock: FakeClock) -> None:
    st = rt0.settings
    uid = add_user(rt0, "ann@example.com", "associate")
    api = client(rt0)
    for _ in range(st.login_lockout_after):
        r = login(api, "ann@example.com", WRONG)
        assert r.status_code == 401 and r.json()["detail"] == REFUSED
    # locked: the right password fails exactly as a wrong one does
    r = login(api, "ann@example.com")
    assert r.status_code == 401 and r.json()["detail"] == REFUSED
    with rt0.sessions() as s:
        u = s.get(User, uid)
        assert u is not None and u.locked_until == rt0.now() + st.login_lockout_base_s
    locks = [e for e in audit_rows(rt0) if e.action == "auth.lockout"]
    assert len(locks) == 1 and locks[0].target_id == uid and locks[0].result == "locked"
    clock.advance(st.login_lockout_base_s)
    assert login(api, "ann@example.com", WRONG).status_code == 401  # one more failure: twice as long
    with rt0.sessions() as s:
        u = s.get(User, uid)
        assert u is not None and u.locked_until == rt0.now() + 2 * st.login_lockout_base_s
    clock.advance(2 * st.login_lockout_base_s)
    assert login(api, "ann@example.com").status_code == 200
    with rt0.sessions() as s:
        u = s.get(User, uid)
        assert u is not None and (u.failed_logins, u.locked_until) == (0, None)


def test_login_rate_limits_per_account_and_per_address(rt0: Runtime, clock: FakeClock) -> None:
    st = rt0.settings
    add_user(rt0, "ann@example.com", "associate")
    add_user(rt0, "bob@example.com", "associate")
    st.login_lockout_after = 1000  # the limits alone here
    # per account, the same for an account that exists and one that does not (each from its own address)
    for email in ("ann@example.com", "nobody@example.com"):
        for i in range(st.login_rate_account):
            assert login(client(rt0, f"203.0.113.{i}"), email, WRONG).status_code == 401
        r = login(client(rt0, "203.0.113.200"), email, PW)
        assert r.status_code == 429, (email, r.text)
    clock.advance(st.login_window_s)
    assert login(client(rt0), "ann@example.com").status_code == 200
    # per address, whichever accounts it tries
    far = client(rt0, "192.0.2.9")
    for i in range(st.login_rate_client):
        assert login(far, f"guess{i}@example.com", WRONG).status_code == 401
    assert login(far, "bob@example.com").status_code == 429
    assert login(client(rt0, "192.0.2.10"), "bob@example.com").status_code == 200


def test_parallel_wrong_logins_check_no_more_passwords_than_the_limit(rt0: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 wrong logins for one account at once, each from its own address: at most the account's
    limit of them get a password check (401); the others are refused unchecked (429). The count
    was read before the argon2 check and written after it, and 24 of 40 got through a limit of 10."""
    st = rt0.settings
    add_user(rt0, "ann@example.com", "associate")
    st.login_lockout_after = 1000  # the limit alone here
    checked: list[int] = []
    real = passwords.verify

    def slow(stored: str, password: str) -> bool:  # widen the window a race needs, as argon2 does
        checked.append(1)
        time.sleep(0.05)
        return real(stored, password)

    monkeypatch.setattr(passwords, "verify", slow)
    start = threading.Barrier(40)
    codes: list[int] = []

    def one(i: int) -> None:
        api = client(rt0, f"203.0.113.{i}")
        start.wait()
        codes.append(login(api, "ann@example.com", WRONG).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(codes)) == [401, 429] and len(codes) == 40
    assert codes.count(401) == len(checked) <= st.login_rate_account
    # and a right password afterwards, from elsewhere, is still limited while the window lasts
    assert login(client(rt0, "198.51.100.99"), "ann@example.com").status_code == 429


def test_a_right_password_does_not_count_against_the_limit(rt0: Runtime) -> None:
    st = rt0.settings
    add_user(rt0, "ann@example.com", "associate")
    for i in range(st.login_rate_account + 3):
        assert login(client(rt0, f"203.0.113.{i % 200}"), "ann@example.com").status_code == 200, i


def test_unknown_disabled_and_wrong_answer_alike_and_cost_a_verify(rt0: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = add_user(rt0, "ann@example.com", "associate")
    add_user(rt0, "gone@example.com", "associate")
    with rt0.sessions.begin() as s:
        gone = users.by_email(s, "gone@example.com")
        assert gone is not None
        gone.disabled = True
    seen: list[str] = []
    real = passwords.verify

    def spy(stored: str, password: str) -> bool:
        seen.append(stored)
        return real(stored, password)

    monkeypatch.setattr(passwords, "verify", spy)  # verify_dummy goes through it too
    api = client(rt0)
    answers = []
    for email, pw in (("nobody@example.com", PW), ("gone@example.com", PW), ("ann@example.com", WRONG)):
        seen.clear()
        r = login(api, email, pw)
        answers.append((r.status_code, r.json()))
        assert len(seen) == 1  # one argon2 verify each: no shortcut for the unknown or disabled
        with rt0.sessions() as s:
            ann = s.get(User, uid)
            assert ann is not None
            dummy = passwords._dummy_hash()
            assert seen[0] == (ann.password_hash if email == "ann@example.com" else dummy)
    assert answers == [(401, {"detail": REFUSED})] * 3


# --- scope: associates, managers, hq; tokens and sessions alike ----------------------------------

@pytest.fixture
def two_stores(rt: Runtime, clock: FakeClock) -> dict[str, Any]:
    """Stores s1 (case c1) and s2 (case c2), each with an open alert, a staff PIN and an event;
    an associate and a manager of s1, with a token each."""
    with rt.sessions.begin() as s:
        for sid, cid in (("s1", "c1"), ("s2", "c2")):
            registry.create_store(s, sid, rt.now())
            case, _ = registry.register_case(s, sid, cid, rt.now())
            registry.add_staff(s, sid, "pin", "ab" * 32, rt.now(), f"pin of {sid}")
            s.add(Alert(store_id=sid, case_id=cid, kind="forced", severity="critical", created_at=rt.now()))
            rt.policy.journal(s, case, "opened")
    add_user(rt, "assoc@example.com", "associate", ("s1",))
    add_user(rt, "mgr@example.com", "manager", ("s1",))
    hq = client(rt)
    h = {"Authorization": "Bearer test-admin-token"}
    with rt.sessions() as s:
        alerts = {a.store_id: a.id for a in s.scalars(select(Alert))}
        staff = {x.store_id: x.id for x in s.scalars(select(Staff))}
    # tokens come from hq (POST /v1/tokens): an hq user may hand out any role for any store
    toks = {}
    for role in ("associate", "manager"):
        r = hq.post("/v1/tokens", json={"name": f"{role} s1", "role": role, "store": "s1"}, headers=h)
        assert r.status_code == 201, r.text
        toks[role] = r.json()["token"]
    return {"alerts": alerts, "staff": staff, "tokens": toks, "hq": h}


def same_as_missing(api: TestClient, method: str, path: str, missing: str, **kw: Any) -> None:
    """Another store's thing answers exactly as a thing that does not exist."""
    theirs = getattr(api, method)(path, **kw)
    none = getattr(api, method)(missing, **kw)
    assert theirs.status_code == none.status_code == 404, (path, theirs.text, none.text)
    assert theirs.json()["detail"].rsplit(" ", 1)[0] == none.json()["detail"].rsplit(" ", 1)[0]


def check_associate_of_s1(api: TestClient, kw: dict[str, Any], w: dict[str, Any], world: dict[str, Any]) -> None:
    """kw: how this client authenticates a read; w: a change."""
    assert [c["id"] for c in api.get("/v1/admin/cases", **kw).json()] == ["c1"]
    assert api.get("/v1/admin/cases", params={"store": "s2"}, **kw).json() == []
    assert [x["id"] for x in api.get("/v1/admin/stores", **kw).json()] == ["s1"]
    assert api.get("/v1/admin/cases/c1", **kw).status_code == 200
    same_as_missing(api, "get", "/v1/admin/cases/c2", "/v1/admin/cases/zz", **kw)
    assert {a["store"] for a in api.get("/v1/admin/alerts", **kw).json()} == {"s1"}
    assert api.get("/v1/admin/alerts", params={"store": "s2"}, **kw).json() == []
    a1, a2 = world["alerts"]["s1"], world["alerts"]["s2"]
    same_as_missing(api, "post", f"/v1/admin/alerts/{a2}/ack", "/v1/admin/alerts/999999/ack", json={"by": "x"}, **w)
    same_as_missing(api, "post", f"/v1/admin/alerts/{a2}/resolve", "/v1/admin/alerts/999999/resolve",
                    json={"by": "x"}, **w)
    assert api.post(f"/v1/admin/alerts/{a1}/ack", json={"by": "ann"}, **w).status_code == 200
    same_as_missing(api, "post", "/v1/admin/cases/c2/relock", "/v1/admin/cases/zz/relock", **w)
    assert api.post("/v1/admin/cases/c1/relock", **w).status_code == 503  # allowed; this API has no broker
    # a manager's and hq's routes: refused before any lookup, whichever store
    for method, path in (("get", "/v1/admin/events"), ("get", "/v1/admin/stores/s1/staff"),
                         ("get", "/v1/admin/stores/s2/staff"), ("get", "/v1/audit"),
                         ("post", "/v1/admin/cases/c1/reset-tamper"), ("get", "/v1/users"), ("get", "/v1/tokens"),
                         ("post", "/v1/admin/members/lookup"), ("get", "/v1/dev/sms")):
        r = getattr(api, method)(path, **(w if method == "post" else kw))
        assert r.status_code == 403, (path, r.text)


def test_an_associate_of_store_a_gets_nothing_of_store_b(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api = client(rt)
    tok = bearer(two_stores["tokens"]["associate"])
    check_associate_of_s1(api, {"headers": tok}, {"headers": tok}, two_stores)
    # the same through a console session
    web = client(rt)
    assert login(web, "assoc@example.com").status_code == 200
    check_associate_of_s1(web, {}, {"headers": csrf(web)}, two_stores)
    me = web.get("/v1/me").json()
    assert (me["role"], me["stores"]) == ("associate", ["s1"])


def check_manager_of_s1(api: TestClient, kw: dict[str, Any], w: dict[str, Any], world: dict[str, Any]) -> None:
    assert [x["label"] for x in api.get("/v1/admin/stores/s1/staff", **kw).json()] == ["pin of s1"]
    same_as_missing(api, "get", "/v1/admin/stores/s2/staff", "/v1/admin/stores/zz/staff", **kw)
    same_as_missing(api, "get", "/v1/admin/stores/s2/pending", "/v1/admin/stores/zz/pending", **kw)
    same_as_missing(api, "post", "/v1/admin/stores/s2/staff", "/v1/admin/stores/zz/staff",
                    json={"kind": "pin", "hash": "cd" * 32}, **w)
    same_as_missing(api, "delete", f"/v1/admin/staff/{world['staff']['s2']}", "/v1/admin/staff/s_000000000000", **w)
    assert {e["store"] for e in api.get("/v1/admin/events", **kw).json()} == {"s1"}
    assert api.get("/v1/admin/events", params={"store": "s2"}, **kw).json() == []
    assert api.get("/v1/admin/events", params={"case": "c2"}, **kw).json() == []
    assert api.post("/v1/admin/members/lookup", json={"phone": "2025554567"}, **w).status_code == 200
    assert {e["store"] for e in api.get("/v1/audit", **kw).json()} <= {"s1"}
    for method, path, body in (("post", "/v1/admin/stores", {"id": "s3"}), ("post", "/v1/admin/cases", {"id": "c9", "store": "s1"}),
                               ("post", "/v1/admin/cases/c1/rotate", None), ("delete", "/v1/admin/cases/c1", None),
                               ("patch", "/v1/admin/stores/s1", {"name": "x"}), ("get", "/v1/users", None),
                               ("post", "/v1/tokens", {"name": "x", "role": "associate", "store": "s1"}),
                               ("post", "/v1/admin/cases/c1/config", {"set": {"held_open_s": 40}})):
        extra = {"json": body} if body is not None else {}
        r = getattr(api, method)(path, **extra, **(kw if method == "get" else w))
        assert r.status_code == 403, (path, r.text)


def test_a_manager_acts_for_their_stores_only(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api = client(rt)
    tok = bearer(two_stores["tokens"]["manager"])
    check_manager_of_s1(api, {"headers": tok}, {"headers": tok}, two_stores)
    web = client(rt)
    assert login(web, "mgr@example.com").status_code == 200
    check_manager_of_s1(web, {}, {"headers": csrf(web)}, two_stores)
    r = api.post("/v1/admin/stores/s1/staff", json={"kind": "pin", "hash": "cd" * 32}, headers=tok)
    assert r.status_code == 201
    assert api.delete(f"/v1/admin/staff/{r.json()['id']}", headers=tok).status_code == 200


def test_hq_sees_and_changes_every_store(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api, h = client(rt), two_stores["hq"]
    assert [c["id"] for c in api.get("/v1/admin/cases", headers=h).json()] == ["c1", "c2"]
    assert {e["store"] for e in api.get("/v1/admin/events", headers=h).json()} == {"s1", "s2"}
    assert api.get("/v1/admin/stores/s2/staff", headers=h).status_code == 200
    assert api.post(f"/v1/admin/alerts/{two_stores['alerts']['s2']}/resolve", json={"by": "hq"},
                    headers=h).status_code == 200
    assert api.post("/v1/admin/cases", json={"id": "c3", "store": "s2"}, headers=h).status_code == 201
    assert api.get("/v1/audit", headers=h).status_code == 200


# --- tokens -------------------------------------------------------------------------------------

def test_token_rules_revocation_and_the_creators_rights(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api, h = client(rt), two_stores["hq"]
    for body in ({"name": "x", "role": "manager"}, {"name": "x", "role": "hq", "store": "s1"},
                 {"name": "x", "role": "manager", "store": "zz"}, {"name": "", "role": "hq"},
                 {"name": "x", "role": "root"}):
        assert api.post("/v1/tokens", json=body, headers=h).status_code == 422, body
    mgr = bearer(two_stores["tokens"]["manager"])
    listed = api.get("/v1/tokens", headers=h).json()
    assert all("token" not in t for t in listed) and {t["role"] for t in listed} >= {"associate", "manager"}
    tid = next(t["id"] for t in listed if t["role"] == "manager")
    assert api.get("/v1/admin/stores/s1/staff", headers=mgr).status_code == 200
    assert api.delete(f"/v1/tokens/{tid}", headers=h).json()["revoked_at"] is not None
    assert api.get("/v1/admin/stores/s1/staff", headers=mgr).status_code == 401
    # an HQ user's tokens stop while the user is disabled (the token never outlives its creator's rights)
    boss = add_user(rt, "boss@example.com", "hq")
    web = client(rt)
    login(web, "boss@example.com")
    made = web.post("/v1/tokens", json={"name": "boss's", "role": "hq"}, headers=csrf(web)).json()
    assert made["created_by"] == boss
    assert api.get("/v1/users", headers=bearer(made["token"])).status_code == 200
    assert api.patch(f"/v1/users/{boss}", json={"disabled": True}, headers=h).status_code == 200
    assert api.get("/v1/users", headers=bearer(made["token"])).status_code == 401
    assert web.get("/v1/me").status_code == 401  # and their sessions ended
    assert api.patch(f"/v1/users/{boss}", json={"disabled": False, "role": "manager", "stores": ["s1"]},
                     headers=h).status_code == 200
    assert api.get("/v1/users", headers=bearer(made["token"])).status_code == 401  # demoted below the token


def test_tokens_and_session_ids_are_hashed_at_rest(rt: Runtime, two_stores: dict[str, Any], stored_files: Any) -> None:
    raw = two_stores["tokens"]["manager"]
    web = client(rt)
    login(web, "mgr@example.com")
    sid = web.cookies[COOKIE]
    with rt.sessions() as s:
        assert s.scalars(select(ApiToken).where(ApiToken.token_hash == hashlib.sha256(raw.encode()).hexdigest())).one()
    rt.engine.dispose()
    blob = b"".join(p.read_bytes() for p in stored_files())
    assert blob and raw.encode() not in blob and raw[8:].encode() not in blob and sid.encode() not in blob
    assert PW.encode() not in blob


# --- users --------------------------------------------------------------------------------------

def test_hq_manages_users(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api, h = client(rt), two_stores["hq"]
    r = api.post("/v1/users", json={"email": "Cat@Example.com", "password": PW, "role": "manager",
                                    "stores": ["s1", "s2"], "display_name": "Cat"}, headers=h)
    assert r.status_code == 201, r.text
    cat = r.json()
    assert (cat["email"], cat["stores"], cat["role"]) == ("cat@example.com", ["s1", "s2"], "manager")
    assert "password" not in json.dumps(cat)
    assert api.post("/v1/users", json={"email": "CAT@example.com", "password": PW, "role": "associate"},
                    headers=h).status_code == 409
    for body in ({"email": "dan@example.com", "password": "short", "role": "associate"},
                 {"email": "dan@example.com", "password": PW, "role": "associate", "stores": ["zz"]},
                 {"email": "not-an-email", "password": PW, "role": "associate"},
                 {"email": "dan@example.com", "password": PW, "role": "owner"}):
        assert api.post("/v1/users", json=body, headers=h).status_code == 422, body
    web = client(rt)
    assert login(web, "cat@example.com").status_code == 200
    new = "cats reset passphrase"
    assert api.post(f"/v1/users/{cat['id']}/password", json={"password": new}, headers=h).status_code == 200
    assert web.get("/v1/me").status_code == 401  # a reset ends their sessions
    assert login(web, "cat@example.com", new).status_code == 200
    r = api.patch(f"/v1/users/{cat['id']}", json={"stores": ["s2"]}, headers=h)
    assert r.json()["stores"] == ["s2"]
    assert [c["id"] for c in web.get("/v1/admin/cases").json()] == ["c2"]  # at once, same session
    assert api.get("/v1/users/u_nobody", headers=h).status_code == 404
    # the last enabled HQ user stays
    only = next(u["id"] for u in api.get("/v1/users", headers=h).json() if u["role"] == "hq")
    assert api.patch(f"/v1/users/{only}", json={"disabled": True}, headers=h).status_code == 409
    assert api.patch(f"/v1/users/{only}", json={"role": "manager"}, headers=h).status_code == 409


# --- audit --------------------------------------------------------------------------------------

def test_every_change_is_audited_and_no_phone_number_is(rt: Runtime, two_stores: dict[str, Any]) -> None:
    api, h = client(rt), two_stores["hq"]
    phone = "2025554567"

    def ok(r: Any, code: int = 200) -> Any:
        assert r.status_code == code, r.text
        return r.json() if r.content else None

    ok(api.post("/v1/admin/stores", json={"id": "s3"}, headers=h), 201)
    ok(api.patch("/v1/admin/stores/s3", json={"name": "Third"}, headers=h))
    ok(api.post("/v1/admin/cases", json={"id": "c3", "store": "s3"}, headers=h), 201)
    ok(api.post("/v1/admin/cases/c3/rotate", headers=h))
    ok(api.post("/v1/admin/cases/c3/resync", headers=h))
    ok(api.post("/v1/admin/cases/c3/config", json={"set": {"held_open_s": 45}}, headers=h))
    assert api.post("/v1/admin/cases/c3/relock", headers=h).status_code == 503  # no broker: audited as failed
    staff = ok(api.post("/v1/admin/stores/s3/staff", json={"kind": "pin", "hash": "ef" * 32}, headers=h), 201)
    ok(api.delete(f"/v1/admin/staff/{staff['id']}", headers=h))
    ok(api.delete("/v1/admin/cases/c3", headers=h), 204)
    m = ok(api.post("/v1/admin/members", json={"phone": phone}, headers=h), 201)
    ok(api.post(f"/v1/admin/members/{m['id']}/flag", headers=h))
    ok(api.post(f"/v1/admin/members/{m['id']}/trust", headers=h))
    ok(api.post(f"/v1/admin/members/{m['id']}/status", json={"status": "member"}, headers=h))
    ok(api.post("/v1/admin/members/lookup", json={"phone": phone}, headers=h))
    ok(api.delete(f"/v1/admin/members/{m['id']}", headers=h), 204)
    a = two_stores["alerts"]["s2"]
    ok(api.post(f"/v1/admin/alerts/{a}/ack", json={"by": "hq"}, headers=h))
    ok(api.post(f"/v1/admin/alerts/{a}/resolve", json={"by": "hq"}, headers=h))
    ok(api.post("/v1/admin/retention/run", headers=h))
    ok(api.post("/v1/admin/keys/rewrap", headers=h))
    u = ok(api.post("/v1/users", json={"email": "eve@example.com", "password": PW, "role": "associate",
                                       "stores": ["s1"]}, headers=h), 201)
    ok(api.patch(f"/v1/users/{u['id']}", json={"display_name": "Eve"}, headers=h))
    ok(api.post(f"/v1/users/{u['id']}/password", json={"password": "eves new passphrase"}, headers=h))
    t = ok(api.post("/v1/tokens", json={"name": "pos", "role": "associate", "store": "s1"}, headers=h), 201)
    ok(api.delete(f"/v1/tokens/{t['id']}", headers=h))
    web = client(rt)
    ok(login(web, "eve@example.com", "eves new passphrase"))
    ok(web.post("/v1/auth/logout", headers=csrf(web)), 204)

    rows = audit_rows(rt)
    actions = {e.action for e in rows}
    assert actions >= {
        "store.create", "store.update", "case.register", "case.rotate", "case.resync", "case.config", "case.relock",
        "staff.add", "staff.revoke", "case.delete", "member.create", "member.status", "member.lookup",
        "member.erase", "alert.ack", "alert.resolve", "retention.run", "keys.rewrap", "user.create",
        "user.update", "user.password_reset", "token.create", "token.revoke", "auth.login", "auth.logout"}
    seed_token = next(e.actor for e in rows if e.action == "store.create")
    assert seed_token.startswith("token:t_")  # the hq token acted, for its user
    assert next(e for e in rows if e.action == "case.relock").result == "failed"
    assert next(e for e in rows if e.action == "member.erase").target_id == m["id"]
    assert next(e for e in rows if e.action == "auth.login").ip == "198.51.100.0/24"  # truncated
    text = json.dumps([[e.actor, e.user_id, e.action, e.target_type, e.target_id, e.store_id, e.ip, e.detail]
                       for e in rows])
    assert phone not in text and phone[-7:] not in text and "lct_" not in text and PW not in text
    # a manager sees their stores' entries only: not s3's, not the fleet's (users, tokens)
    mine = client(rt).get("/v1/audit", headers=bearer(two_stores["tokens"]["manager"])).json()
    assert mine and {e["store"] for e in mine} == {"s1"}
    everything = api.get("/v1/audit", params={"limit": 1000}, headers=h).json()
    assert len(everything) == len(rows) and everything[0]["id"] == rows[-1].id  # newest first
    assert all(e["action"] == "token.create" for e in api.get("/v1/audit", params={"action": "token.create"},
                                                              headers=h).json())


def test_a_case_of_an_unknown_store_is_still_a_422_for_hq(rt: Runtime) -> None:
    """hq is told the truth (it sees every store): the register answer is unchanged."""
    api = client(rt)
    r = api.post("/v1/admin/cases", json={"id": "c1", "store": "nope"}, headers={"Authorization": "Bearer test-admin-token"})
    assert r.status_code == 422
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 0


def test_session_rows_hold_no_more_than_needed(rt0: Runtime) -> None:
    add_user(rt0, "ann@example.com", "associate")
    api = client(rt0, "2001:db8:1234:5678::1")
    api.headers["user-agent"] = "x" * 500
    login(api, "ann@example.com")
    with rt0.sessions() as s:
        row = s.scalars(select(LoginSession)).one()
        assert row.ip == "2001:db8:1234::/48" and len(row.user_agent) == 120
        assert sessions.csrf_token(row) != row.csrf_secret


def test_retention_drops_sessions_past_their_end(rt0: Runtime, clock: FakeClock) -> None:
    add_user(rt0, "ann@example.com", "associate")
    login(client(rt0), "ann@example.com")
    clock.advance(rt0.settings.session_absolute_s - 1)
    login(client(rt0), "ann@example.com")
    clock.advance(2)
    with rt0.sessions.begin() as s:
        retention(s, rt0.now(), rt0.settings.retention_days)
    with rt0.sessions() as s:
        assert [r.created_at for r in s.scalars(select(LoginSession))] == [rt0.now() - 2]


def test_a_password_reset_lifts_the_accounts_login_limit(rt0: Runtime, clock: FakeClock) -> None:
    # Anyone may type wrong passwords for a named account; after HQ resets it, its owner signs in
    # with the new password at once instead of waiting out the window the attacker keeps full.
    st = rt0.settings
    st.login_lockout_after = 1000  # the rate limit alone here
    hq_token = bootstrap(client(rt0))
    uid = add_user(rt0, "victim@example.com", "associate")
    for i in range(st.login_rate_account):
        assert login(client(rt0, f"203.0.113.{i}"), "victim@example.com", WRONG).status_code == 401
    assert login(client(rt0, "198.51.100.50"), "victim@example.com").status_code == 429
    new = "a brand new passphrase 2"
    r = client(rt0).post(f"/v1/users/{uid}/password", headers=bearer(hq_token), json={"password": new})
    assert r.status_code == 200, r.text
    assert login(client(rt0, "198.51.100.50"), "victim@example.com", new).status_code == 200


def test_a_long_lived_response_sees_the_caller_as_they_are_now(rt0: Runtime) -> None:
    # The console's live alarms re-check their caller (accounts/access.reauthenticate): a session
    # that ended, a user moved to other stores or disabled, is seen at once.
    from starlette.requests import Request

    from casecloud.accounts.access import reauthenticate

    bootstrap(client(rt0))
    with rt0.sessions.begin() as s:
        for sid in ("s1", "s2"):
            registry.create_store(s, sid, rt0.now(), name=sid)
    uid = add_user(rt0, "ann@example.com", "associate", ("s1",))
    api = client(rt0)
    assert login(api, "ann@example.com").status_code == 200
    cookie = "; ".join(f"{k}={v}" for k, v in api.cookies.items())
    app = create_app(rt0)

    def now() -> Any:
        scope = {"type": "http", "method": "GET", "path": "/console/live", "query_string": b"",
                 "headers": [(b"cookie", cookie.encode())], "client": ("198.51.100.7", 1), "app": app,
                 "server": ("testserver", 443), "scheme": "https"}
        return reauthenticate(Request(scope))

    assert now().stores == frozenset({"s1"})
    with rt0.sessions.begin() as s:
        users.update(s, users.get(s, uid), stores=("s2",))  # type: ignore[arg-type]
    assert now().stores == frozenset({"s2"})
    api.post("/v1/auth/logout", headers=csrf(api))
    assert now() is None
