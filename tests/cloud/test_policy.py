"""Policy decisions against a real database (SQLite, PostgreSQL) with a fake clock."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import event, select

from casecloud import registry
from casecloud.adapters.loyalty import Holder
from casecloud.models import Alert, Challenge, Event, Member, SmsOutbox, Store
from casecloud.policy import Reply
from casecloud.runtime import Runtime
from tests.cloud.conftest import FakeClock
from tests.cloud.helpers import ctx

PHONE = "2025554567"
E164 = "+12025554567"




def phone(rt: Runtime, num: str = PHONE, sid: str | None = None, case_id: str = "c1") -> Reply:
    with ctx(rt, case_id) as (s, store, case):
        r = rt.policy.on_phone(s, store, case, num, sid)
    return rt.policy.after_commit(rt.sessions, r)


def otp(rt: Runtime, sid: str, code: str) -> Reply:
    with ctx(rt) as (s, store, case):
        return rt.policy.on_otp(s, store, case, sid, code)


def token(rt: Runtime, tok: str, src: str = "nfc") -> Reply:
    with ctx(rt) as (s, store, case):
        return rt.policy.on_token(s, store, case, tok, src)


def texted_code(rt: Runtime, e164: str = E164) -> str:
    with rt.sessions() as s:
        h = rt.hasher.phone(e164)
        row = s.scalars(select(SmsOutbox).where(SmsOutbox.to_hash == h).order_by(SmsOutbox.id.desc())).first()
        assert row is not None, "no text in the outbox"
        m = re.search(r"\b(\d{6})\b", row.body)
        assert m
        return m.group(1)


def member(rt: Runtime, **kw: Any) -> tuple[str, str]:
    with rt.sessions.begin() as s:
        m, app = registry.create_member(s, rt.hasher, rt.now(), **kw)
        return m.id, app


def test_a_token_is_read_once_a_transaction_and_afresh_in_the_next(rt: Runtime, shop: dict[str, Any]) -> None:
    """The built-in loyalty reads a token's member with one Core statement and keeps the copy for
    the rest of the transaction (a batch names one card many times); the next transaction reads
    the row again, so a member flagged meanwhile is seen flagged."""
    mid, app = member(rt, card="04C0FFEE", phone="+14155550167")
    loyalty = rt.policy.loyalty
    reads: list[str] = []

    def read(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        reads.append(statement)

    event.listen(rt.engine, "before_cursor_execute", read)
    try:
        with rt.sessions() as s:
            first = loyalty.by_token(s, "04C0FFEE", "nfc")
            assert first == Holder(mid, "member", "67") and len(reads) == 1
            assert loyalty.by_token(s, "04C0FFEE", "nfc") is first and len(reads) == 1
            assert loyalty.by_token(s, "04000000", "nfc") is None and len(reads) == 2  # no member: kept too
            assert loyalty.by_token(s, "04000000", "nfc") is None and len(reads) == 2
        with rt.sessions.begin() as s:
            m = s.get(Member, mid)
            assert m is not None
            m.status = "flagged"
        with rt.sessions() as s:
            assert loyalty.by_token(s, "04C0FFEE", "nfc") == Holder(mid, "flagged", "67")
            assert loyalty.by_token(s, app, "app") == Holder(mid, "flagged", "67")
    finally:
        event.remove(rt.engine, "before_cursor_execute", read)
    assert token(rt, "04C0FFEE").why == "flagged"


def test_phone_gets_a_code_and_the_code_opens(rt: Runtime, shop: dict[str, Any]) -> None:
    r = phone(rt)
    assert r.t == "challenge" and r.fields["need"] == "code" and r.fields["ttl"] == 120
    assert r.fields["last2"] == "67"
    code = texted_code(rt)
    a = otp(rt, r.fields["sid"], code)
    assert a.t == "allow" and a.fields["grant"].startswith("g_")
    # a code works once
    assert otp(rt, r.fields["sid"], code).why == "expired"


def test_code_expires_after_two_minutes(rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    r = phone(rt)
    clock.advance(121)
    assert otp(rt, r.fields["sid"], texted_code(rt)).why == "expired"


def test_code_valid_until_two_minutes(rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    r = phone(rt)
    clock.advance(120)
    assert otp(rt, r.fields["sid"], texted_code(rt)).t == "allow"


def test_three_tries(rt: Runtime, shop: dict[str, Any]) -> None:
    r = phone(rt)
    code = texted_code(rt)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert otp(rt, r.fields["sid"], wrong).fields == {"why": "bad_code", "left": 2}
    assert otp(rt, r.fields["sid"], wrong).fields == {"why": "bad_code", "left": 1}
    assert otp(rt, r.fields["sid"], wrong).fields == {"why": "bad_code", "left": 0}
    assert otp(rt, r.fields["sid"], code).why == "expired"  # the right code is too late now


def test_code_stored_hashed(rt: Runtime, shop: dict[str, Any]) -> None:
    r = phone(rt)
    code = texted_code(rt)
    with rt.sessions() as s:
        ch = s.get(Challenge, r.fields["sid"])
        assert ch is not None and ch.code_hash and code not in ch.code_hash and len(ch.code_hash) == 64


def test_code_from_another_case_refused(rt: Runtime, shop: dict[str, Any]) -> None:
    r = phone(rt)
    code = texted_code(rt)
    with rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c2", rt.now())
    with ctx(rt, "c2") as (s, store, case):
        out = rt.policy.on_otp(s, store, case, r.fields["sid"], code)
    assert out.why == "expired"


def test_bad_number(rt: Runtime, shop: dict[str, Any]) -> None:
    assert phone(rt, "12345").why == "bad_number"


def test_phone_rate_limit_then_window_passes(rt: Runtime, shop: dict[str, Any], clock: FakeClock) -> None:
    for _ in range(3):
        assert phone(rt).t == "challenge"
    assert phone(rt).why == "rate_limited"
    assert phone(rt, "2025556543").t == "challenge"  # another number is not affected
    clock.advance(601)
    assert phone(rt).t == "challenge"


def test_case_rate_limit(rt: Runtime, shop: dict[str, Any]) -> None:
    rt.settings.rate_case = 5
    for i in range(5):
        assert phone(rt, f"20255500{i:02d}").t == "challenge"
    assert phone(rt, "2025550099").why == "rate_limited"


def test_store_rate_limit_spans_cases(rt: Runtime, shop: dict[str, Any]) -> None:
    rt.settings.rate_store = 2
    with rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c2", rt.now())
    assert phone(rt, "2025550001").t == "challenge"
    assert phone(rt, "2025550002", case_id="c2").t == "challenge"
    assert phone(rt, "2025550003").why == "rate_limited"


def test_member_rate_limit(rt: Runtime, shop: dict[str, Any]) -> None:
    rt.settings.rate_member = 2
    member(rt, card="04AABBCC", status="trusted")
    assert token(rt, "04AABBCC").t == "allow"
    assert token(rt, "04AABBCC").t == "allow"
    assert token(rt, "04AABBCC").why == "rate_limited"


def test_abuse_escalates_to_one_staff_alert(rt: Runtime, shop: dict[str, Any], notifier: Any) -> None:
    for _ in range(3):
        phone(rt)
    for _ in range(6):
        assert phone(rt).why == "rate_limited"
    rt.policy.flush_alerts(rt.sessions)
    with rt.sessions() as s:
        alerts = s.scalars(select(Alert).where(Alert.kind == "abuse")).all()
    assert len(alerts) == 1 and alerts[0].delivered
    assert notifier.sent[0][0] == "http://staff.invalid/hook"
    assert "67" not in str(notifier.sent) and PHONE not in str(notifier.sent)


def test_trusted_card_allowed_at_once(rt: Runtime, shop: dict[str, Any]) -> None:
    mid, _ = member(rt, card="04AABBCC", status="trusted")
    r = token(rt, "04AABBCC")
    assert r.t == "allow" and r.member_id == mid


def test_member_card_challenged_for_their_number_then_code(rt: Runtime, shop: dict[str, Any]) -> None:
    mid, _ = member(rt, card="04AABBCC", phone=PHONE)
    r = token(rt, "04AABBCC")
    assert r.t == "challenge" and r.fields["need"] == "phone"
    # somebody else's number does not get the code
    wrong = phone(rt, "2025550000", sid=r.fields["sid"])
    assert wrong.why == "bad_number" and wrong.fields["left"] == 2
    c = phone(rt, PHONE, sid=r.fields["sid"])
    assert c.t == "challenge" and c.fields["need"] == "code"
    a = otp(rt, c.fields["sid"], texted_code(rt))
    assert a.t == "allow" and a.member_id == mid


def test_flagged_refused_by_card_and_phone(rt: Runtime, shop: dict[str, Any]) -> None:
    member(rt, card="04AABBCC", phone=PHONE, status="flagged")
    assert token(rt, "04AABBCC").why == "flagged"
    assert phone(rt).why == "flagged"


def test_flagged_between_code_and_entry(rt: Runtime, shop: dict[str, Any]) -> None:
    mid, _ = member(rt, phone=PHONE)
    r = phone(rt)
    with rt.sessions.begin() as s:
        registry.set_member_status(s, mid, "flagged")
    assert otp(rt, r.fields["sid"], texted_code(rt)).why == "flagged"


def test_unknown_card(rt: Runtime, shop: dict[str, Any]) -> None:
    assert token(rt, "nope").why == "unknown"


def test_members_only_store(rt: Runtime, shop: dict[str, Any]) -> None:
    with rt.sessions.begin() as s:
        st = s.get(Store, "s1")
        assert st
        st.guests_allowed = False
    assert phone(rt).why == "no_guests"
    member(rt, phone=PHONE)
    assert phone(rt).t == "challenge"


def test_help_alerts_staff_once_a_minute(rt: Runtime, shop: dict[str, Any], clock: FakeClock, notifier: Any) -> None:
    for _ in range(3):
        with ctx(rt) as (s, store, case):
            assert rt.policy.on_help(s, store, case, "assist").t == "ok"
    clock.advance(61)
    with ctx(rt) as (s, store, case):
        rt.policy.on_help(s, store, case, None)
    rt.policy.flush_alerts(rt.sessions)
    assert [m["kind"] for _, m in notifier.sent] == ["help", "help"]


def test_decisions_journaled_without_numbers(rt: Runtime, shop: dict[str, Any]) -> None:
    r = phone(rt)
    otp(rt, r.fields["sid"], texted_code(rt))
    with rt.sessions() as s:
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        assert kinds == ["challenge", "allow"]
        assert all(e.phone_last2 == "67" for e in s.scalars(select(Event)))
        assert PHONE not in str([e.data for e in s.scalars(select(Event))])


@pytest.mark.parametrize(("typed", "country", "e164"), [
    ("2025554567", "US", "+12025554567"),
    ("12025554567", "US", "+12025554567"),
    ("011447911123456", "US", "+447911123456"),
    ("07911123456", "GB", "+447911123456"),
    ("00447911123456", "FR", "+447911123456"),
    ("0612345678", "FR", "+33612345678"),
    ("555123", "US", None),
    ("20255545678901234", "US", None),
    ("2025554567", "ZZ", None),
])
def test_to_e164(typed: str, country: str, e164: str | None) -> None:
    from casecloud.phones import to_e164

    assert to_e164(typed, country) == e164
