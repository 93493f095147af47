"""Limits that keep shoppers in and guessers out, over a real database (SQLite, PostgreSQL) with a
fake clock: junk at the public app unlock has its own budgets; wrong one-time codes are limited per
number, case, store and fleet, and their bursts raise a `wrong_codes` alert."""

from __future__ import annotations

import re
import secrets
import warnings
from typing import Any

from sqlalchemy import event, func, select

from casecloud import registry
from casecloud.api import create_app
from casecloud.models import Alert, Case, RateCount, SmsOutbox, Store
from casecloud.phones import to_e164
from casecloud.policy import Reply
from casecloud.runtime import Runtime
from tests.cloud.conftest import FakeClock
from tests.cloud.helpers import ctx

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}


def client(rt: Runtime, n: int) -> TestClient:
    """An API client seen from its own address (the ASGI peer; nothing is sent anywhere)."""
    return TestClient(create_app(rt), client=(f"203.0.113.{n}", 40000))




def app_unlock(rt: Runtime, case_id: str, token: str, addr: str) -> Reply:
    with rt.sessions.begin() as s:
        case = s.get(Case, case_id)
        store = s.get(Store, case.store_id) if case else None
        return rt.policy.app_unlock(s, store, case, token, addr)


def member(rt: Runtime) -> str:
    with rt.sessions.begin() as s:
        _, app = registry.create_member(s, rt.hasher, rt.now(), card=secrets.token_hex(4))
        return app


def cases(rt: Runtime, store: str, n: int) -> list[str]:
    with rt.sessions.begin() as s:
        if s.get(Store, store) is None:
            registry.create_store(s, store, rt.now())
        ids = [f"{store}-c{i}" for i in range(n)]
        for cid in ids:
            registry.register_case(s, store, cid, rt.now())
    return ids


def shopper_counts(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.coalesce(func.sum(RateCount.n), 0)).where(RateCount.scope.in_(["case", "store"]))) or 0


# --- junk at the app unlock ------------------------------------------------------------------

def test_sixty_junk_tokens_do_not_stop_a_member_at_that_case(rt: Runtime, shop: dict[str, Any]) -> None:
    app = member(rt)
    answers = [client(rt, n % 3).post("/v1/app/unlock", json={"token": f"junk{n}", "case": "c1"})
               for n in range(60)]  # three addresses, 20 each: the old code locked the case out at 30
    assert [r.status_code for r in answers] == [403] * 60
    assert all(r.json() == {"detail": "refused"} for r in answers)
    assert shopper_counts(rt) == 0  # junk spent nothing of the case's or the store's budget
    # allowed by policy; this API has no broker connection, hence 503 and not 429
    r = client(rt, 9).post("/v1/app/unlock", json={"token": app, "case": "c1"})
    assert r.status_code == 503, r.text


def test_three_hundred_junk_requests_do_not_lock_a_store(rt: Runtime, shop: dict[str, Any],
                                                          clock: FakeClock) -> None:
    ids = ["c1", *cases(rt, "s1", 7)]  # 8: one member may open 10 times a window
    bots = [client(rt, n) for n in range(30)]
    answers = set()
    for n in range(300):  # 1.8 s of a flood from 30 addresses, over every case of the store
        if n % 50 == 0:
            clock.advance(0.3)
        r = bots[n % 30].post("/v1/app/unlock", json={"token": f"junk{n}", "case": ids[n % len(ids)]})
        answers.add((r.status_code, r.text))
    assert answers == {(403, '{"detail":"refused"}')}
    app = member(rt)
    shopper = client(rt, 200)
    for cid in ids:  # allowed by policy (503: this API has no broker), where the old code said 429
        assert shopper.post("/v1/app/unlock", json={"token": app, "case": cid}).status_code == 503


def test_junk_has_its_own_budget_per_address(rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    st = rt.settings
    for n in range(st.rate_junk_client):
        assert app_unlock(rt, "c1", f"junk{n}", "attacker").why == "refused"
    assert app_unlock(rt, "c1", "junk", "attacker").why == "rate_limited"
    app = member(rt)
    assert app_unlock(rt, "c1", app, "attacker").why == "rate_limited"  # refused before any lookup
    assert app_unlock(rt, "c1", app, "someone-else").t == "allow"
    clock.advance(st.rate_window_s + 1)
    assert app_unlock(rt, "c1", "junk", "attacker").why == "refused"


def test_past_the_fleet_junk_budget_only_junk_senders_are_refused(rt: Runtime, shop: dict[str, Any]) -> None:
    rt.settings.rate_junk = 50
    for n in range(50):  # a spread flood: one junk request from each of 50 addresses
        assert app_unlock(rt, "c1", f"junk{n}", f"bot{n}").why == "refused"
    assert app_unlock(rt, "c1", "junk", "bot1").why == "rate_limited"
    assert app_unlock(rt, "c1", "junk", "new-bot").why == "refused"  # its first: looked up, counted
    assert app_unlock(rt, "c1", "junk", "new-bot").why == "rate_limited"
    assert app_unlock(rt, "c1", member(rt), "shopper").t == "allow"  # members are never locked out


def test_an_unknown_case_answers_as_a_refusal_does(rt: Runtime, shop: dict[str, Any]) -> None:
    app = member(rt)
    statements: list[int] = []

    def count(*_: Any) -> None:
        statements[-1] += 1

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        answers = []
        for n, body in enumerate([
            {"token": "junk", "case": "c1"},      # an unknown token at a real case
            {"token": "junk", "case": "zz"},      # at a case that does not exist
            {"token": app, "case": "zz"},         # a member's token at one
            {"token": "junk", "case": "Not/An-Id"},
            {"token": "", "case": "c1"},
        ]):
            statements.append(0)
            r = client(rt, 100 + n).post("/v1/app/unlock", json=body)
            # every answer has an X-Request-ID of its own (random, logs.py): it tells nothing
            answers.append((r.status_code, r.content, sorted(kv for kv in r.headers.items() if kv[0] != "x-request-id")))
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][:2] == (403, b'{"detail":"refused"}')
    # the same work for a case that exists and one that does not: the same statements
    assert statements[0] == statements[1] == statements[2], statements


# --- wrong one-time codes --------------------------------------------------------------------

def number(i: int) -> str:
    typed = f"2025550{i:03d}"
    assert to_e164(typed, "US") is not None
    return typed


def texts(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(SmsOutbox)) or 0


def challenge(rt: Runtime, case_id: str, typed: str) -> tuple[str, str] | None:
    """Texts a code to `typed` at the case; returns (sid, the code), None when refused for the
    wrong-code limits (and then no text is sent)."""
    sent = texts(rt)
    with ctx(rt, case_id) as (s, store, case):
        r = rt.policy.on_phone(s, store, case, typed)
    r = rt.policy.after_commit(rt.sessions, r)
    if r.why == "rate_limited":
        assert texts(rt) == sent
        return None
    assert r.t == "challenge", r
    e164 = to_e164(typed, "US")
    assert e164 is not None
    with rt.sessions() as s:
        row = s.scalars(select(SmsOutbox).where(SmsOutbox.to_hash == rt.hasher.phone(e164))
                        .order_by(SmsOutbox.id.desc())).first()
        assert row is not None
        m = re.search(r"\b(\d{6})\b", row.body)
        assert m
        return r.fields["sid"], m.group(1)


def otp(rt: Runtime, case_id: str, sid: str, code: str) -> Reply:
    with ctx(rt, case_id) as (s, store, case):
        r = rt.policy.on_otp(s, store, case, sid, code)
    return rt.policy.after_commit(rt.sessions, r)


def got(c: tuple[str, str] | None) -> tuple[str, str]:
    assert c is not None, "refused"
    return c


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def alerts(rt: Runtime, kind: str) -> list[Alert]:
    with rt.sessions() as s:
        return list(s.scalars(select(Alert).where(Alert.kind == kind)))


def guess_until_closed(rt: Runtime, ids: list[str], first: int = 0) -> tuple[int, int]:
    """An attacker rotating numbers and cases, three wrong codes per text. Returns the number of
    guesses that were checked (answered bad_code) and the next unused number."""
    checked, i = 0, first
    while True:
        got = challenge(rt, ids[i % len(ids)], number(i))
        if got is None:  # closed: not even texted
            return checked, i + 1
        sid, code = got
        for _ in range(rt.settings.otp_tries):
            why = otp(rt, ids[i % len(ids)], sid, wrong(code)).why
            if why == "rate_limited":
                return checked, i + 1
            assert why == "bad_code"
            checked += 1
        i += 1


def test_wrong_codes_rotating_numbers_and_cases_stop_at_the_store_limit(rt: Runtime, clock: FakeClock,
                                                                         notifier: Any) -> None:
    ids = cases(rt, "s1", 6)
    shopper = got(challenge(rt, ids[0], number(999)))  # a real one, texted before the attack
    checked, i = guess_until_closed(rt, ids)
    assert checked == 50  # the old code checked 126 here, until the cases' shopper budgets ran out
    assert rt.settings.rate_bad_store == 50
    # the store is closed to guesses, the right code included: it is not even checked, and no
    # new code is texted in the store
    assert otp(rt, ids[0], *shopper).why == "rate_limited"
    assert challenge(rt, ids[1], number(i)) is None
    burst = alerts(rt, "wrong_codes")
    assert len(burst) == 1 and burst[0].store_id == "s1" and "wrong codes" in burst[0].detail
    assert any(m.get("kind") == "wrong_codes" for _, m in notifier.sent)
    # another store is not affected, and the window passing opens the store again
    other = cases(rt, "s2", 1)
    assert otp(rt, other[0], *got(challenge(rt, other[0], number(i + 1)))).t == "allow"
    clock.advance(rt.settings.rate_window_s + 1)
    assert otp(rt, ids[0], *got(challenge(rt, ids[0], number(i + 2)))).t == "allow"


def test_wrong_codes_across_stores_stop_at_the_fleet_limit(rt: Runtime) -> None:
    rt.settings.rate_bad_fleet = 30  # below two stores' worth, so the fleet limit is what stops it
    a, b = cases(rt, "s1", 3), cases(rt, "s2", 3)
    shopper = got(challenge(rt, b[0], number(999)))
    checked, i = guess_until_closed(rt, a + b)
    assert checked == 30
    assert otp(rt, b[0], *shopper).why == "rate_limited"
    assert challenge(rt, cases(rt, "s3", 1)[0], number(i)) is None  # a third store too
    assert any("fleet" in al.detail for al in alerts(rt, "wrong_codes"))


def test_wrong_codes_per_number_and_per_case(rt: Runtime, shop: dict[str, Any]) -> None:
    st = rt.settings
    seen = []
    for _ in range(2):  # one number, two texts: six chances without the per-number limit
        sid, code = got(challenge(rt, "c1", number(1)))
        seen += [otp(rt, "c1", sid, wrong(code)).why for _ in range(st.otp_tries)]
    assert seen == ["bad_code"] * st.rate_bad_phone + ["rate_limited"] * (6 - st.rate_bad_phone)
    assert challenge(rt, "c1", number(1)) is None  # its third text is not sent
    got(challenge(rt, "c1", number(2)))  # another number's is
    # one case, many numbers
    ids = cases(rt, "s9", 1)
    checked, _ = guess_until_closed(rt, ids, first=10)
    assert checked == st.rate_bad_case


def test_a_shopper_who_mistypes_twice_is_never_hit(rt: Runtime, shop: dict[str, Any]) -> None:
    sid, code = got(challenge(rt, "c1", number(7)))
    assert otp(rt, "c1", sid, wrong(code)).why == "bad_code"
    assert otp(rt, "c1", sid, wrong(wrong(code))).why == "bad_code"
    assert otp(rt, "c1", sid, code).t == "allow"
    assert alerts(rt, "wrong_codes") == [] and alerts(rt, "abuse") == []
