"""A store's reports page and CSV (console/reports.py) on a generated week of events folded into
the store analytics, through FastAPI's TestClient on a real SQLite database: the numbers, the
small-count rule (analytics/suppress.py: hidden cells, the cells hidden with them so that no
breakdown gives one away, totals of shown cells only, today never shown), no shopper or staff
identifier in either, the `days` parameter, and the role and store scoping."""

from __future__ import annotations

import calendar
import csv
import io
import re
import time
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from itertools import count
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import delete

from casecloud import registry
from casecloud.accounts import users
from casecloud.analytics.aggregate import rebuild
from casecloud.analytics.publish import day_rows, label
from casecloud.api import create_app
from casecloud.models import Alert, Event, Staff, StoreHours
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.analytics_gen import linked_give_back

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PW = "report tests passphrase"
NOW = calendar.timegm((2024, 5, 9, 12, 0, 0))  # today; the report's last whole day: 2024-05-08 (UTC)
DAY = 86_400
DAY0 = calendar.timegm((2024, 5, 2, 0, 0, 0))  # the first of the default 7 days
LAST2 = "71"  # the phone digits on the cloud's events: not one figure of the report contains them
PIN_ID, BADGE_ID, GONE_ID = "s_0123456789ab", "s_ba0123456789", "s_dddddddddddd"


def at(day: int, hour: int = 10, s: int = 0) -> int:
    return DAY0 + day * DAY + hour * 3600 + s


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, list[str]]]:
    """s1 (cases c1, c2, c3) with a week of events, alerts and a member; s2 (case c9) with its
    own. Returns the runtime and the member ids written on events."""
    r = build(Settings(data_dir=tmp_path_factory.mktemp("reports") / "data", admin_token=SecretStr("boot")),
              clock=lambda: float(NOW))
    ids = count()
    with r.sessions.begin() as s:
        for sid, cids in (("s1", ("c1", "c2", "c3")), ("s2", ("c9",))):
            registry.create_store(s, sid, NOW, name=f"Store {sid}")
            for cid in cids:
                registry.register_case(s, sid, cid, NOW, name=f"Case {cid}")
        for email, role, stores in (("assoc@example.com", "associate", ("s1",)),
                                    ("mgr@example.com", "manager", ("s1",)), ("hq@example.com", "hq", ())):
            users.create(s, NOW, email=email, password=PW, role=role, stores=stores, display_name=role.title())
        m1, _ = registry.create_member(s, r.hasher, NOW, phone="2025550171")
        m2, _ = registry.create_member(s, r.hasher, NOW, phone="2025550271", status="flagged")
        s.add_all([Staff(id=PIN_ID, store_id="s1", kind="pin", hash="ab" * 32, label="Ann", created_at=NOW),
                   Staff(id=BADGE_ID, store_id="s1", kind="badge", hash="cd" * 32, label="Bo", created_at=NOW)])

        def ev(case: str, kind: str, ts: int, *, store: str = "s1", origin: str = "case", member: str | None = None,
               **data: Any) -> None:
            s.add(Event(store_id=store, case_id=case, event_id=f"e{next(ids)}", source=origin, kind=kind, ts=ts,
                        received_at=ts, member_id=member, phone_last2=LAST2 if member else None, data=data))

        def granted(case: str, ts: int, source: str, who: str, **extra: Any) -> None:
            ev(case, "granted", ts, source=source, who=who, ms=3000, g=next(ids), **extra)

        for d in range(-1, 7):  # phone: 6 a day, and the day before the week
            for i in range(6):
                ev("c1", "allow", at(d, 9, i), origin="cloud", member=m1.id, grant=f"g_a{d + 1}{i}", via="otp")
                granted("c1", at(d, 9, i + 1), "phone", f"g_a{d + 1}{i}")
        for i in range(7):
            granted("c2", at(0, 11, i), "card", f"g_c{i}")
        for i in range(2):
            granted("c1", at(1, 12, i), "app", f"g_p{i}")  # 2: "< 5"
        for i in range(5):
            granted("c3", at(2, 13, i), "staff", PIN_ID)
        granted("c3", at(3, 13), "staff", BADGE_ID)  # 1: "< 5"
        granted("c3", at(3, 14), "staff", GONE_ID)  # a credential since removed: 1
        ev("c1", "granted", at(4, 8), source="phone", who="g_open", ms=0, note="door already open")  # no unlock
        ev("c1", "granted", at(4, 8, 30), source="phone", who="g_rec", ms=3000, g=999)
        ev("c1", "granted", at(4, 8, 31), source="phone", who="g_rec", ms=3000, g=999, recovered=True)  # once
        for i in range(5):  # the cloud's deny, and the case's echo of it (not counted twice)
            ev("c1", "deny", at(0, 15, i), origin="cloud", member=m1.id, why="bad_code", via="otp")
            ev("c1", "denied", at(0, 15, i), source="phone", reason="bad_code")
        for i in range(3):
            ev("c2", "denied", at(4, 16, i), source="phone", reason="offline")  # the case's own: "< 5"
        for i in range(6):
            ev("c1", "deny", at(5, 16, i), origin="cloud", member=m2.id, why="flagged", via="card")
        for i in range(5):
            ev("c1", "forced", at(6, 1, i))
        for i in range(2):
            ev("c2", "forced", at(6, 2, i))  # day 6: 7 forced, shown; but c2's 2 is hidden, so the total is too
        ev("c2", "held_open", at(3, 3))
        # numbers typed and left unsent (the case's own `abandoned`): c1 6, c2 2 on day 1; a boot, a fault
        for i in range(6):
            ev("c1", "abandoned", at(1, 11, i * 60), step="phone", n=6)
        for i in range(2):
            ev("c2", "abandoned", at(1, 12, i * 60), step="phone", n=3)
        ev("c1", "boot", at(1, 7), fw="2.0.1", reset="power")
        ev("c1", "fault", at(1, 7, 5), part="nfc", error="no chip")
        for i in range(10):
            ev("c9", "forced", at(2, 3, i), store="s2")  # another store's
            ev("c9", "granted", at(2, 4, i), store="s2", source="phone", who="g_x", ms=1000, g=i)
        # malformed fields from a case: counted as "other", never a crash
        ev("c9", "granted", at(3), store="s2", source=["x"], who={"y": 1}, ms="3", g=[1])
        ev("c9", "granted", at(3), store="s2", source="staff", who=["s_0123456789ab"])
        ev("c9", "denied", at(3), store="s2", reason={"z": 1})
        ev("c9", "deny", at(3), store="s2", origin="cloud", why=["bad_code"])
        # help calls: 5 on day 2 acknowledged after 1..5 minutes (median 3.0), 1 on day 5 not yet
        for i in range(5):
            s.add(Alert(store_id="s1", case_id="c3", kind="help", state="resolved", first_at=at(2, 10 + i),
                        last_at=at(2, 10 + i), created_at=at(2, 10 + i), acked_at=at(2, 10 + i) + 60 * (i + 1),
                        acked_by="Associate", resolved_at=at(2, 11 + i), resolved_by="Associate"))
        s.add(Alert(store_id="s1", case_id="c3", kind="help", state="open", first_at=at(5), last_at=at(5),
                    created_at=at(5)))
        s.add(Alert(store_id="s2", case_id="c9", kind="help", state="open", first_at=at(5), last_at=at(5),
                    created_at=at(5)))
        # offline: c2 for 2 hours on day 4; c1 since 23:00 on the last day, still (today's hours not shown)
        s.add(Alert(store_id="s1", case_id="c2", kind="offline", state="resolved", first_at=at(4, 10),
                    last_at=at(4, 10), created_at=at(4, 10, 300), resolved_at=at(4, 12), resolved_by="case: online"))
        s.add(Alert(store_id="s1", case_id="c1", kind="offline", state="open", first_at=at(6, 23),
                    last_at=at(6, 23), created_at=at(6, 23, 300)))
        # today's events: never in a report until the day is over
        for i in range(9):
            ev("c1", "forced", NOW - 3600 + i)
    with r.sessions.begin() as s:
        rebuild(s, NOW, r.settings.otp_ttl_s)
    yield r, [m1.id, m2.id]
    r.engine.dispose()


def signed_in(rt: Runtime, email: str) -> TestClient:
    api = TestClient(create_app(rt), base_url="https://testserver", follow_redirects=False)
    r = api.post("/v1/auth/login", data={"email": email, "password": PW, "next": "/console"})
    assert r.status_code == 303, r.text
    return api


@pytest.fixture(scope="module")
def mgr(world: tuple[Runtime, list[str]]) -> TestClient:
    return signed_in(world[0], "mgr@example.com")


class Tables(HTMLParser):
    """The report's tables as {id: [[cell text, ...], ...]} (header row first, footer last)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or "?"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: str) -> dict[str, list[list[str]]]:
    p = Tables()
    p.feed(html)
    return p.tables


def csv_cells(text: str) -> dict[tuple[str, str, str], str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return {(r["section"], r["row"], r["column"]): r["value"] for r in rows}


def cell(tables: dict[str, list[list[str]]], table: str, row: str, col: str) -> str:
    head, *rows = tables[table]
    got = [r for r in rows if r[0] == row]
    assert len(got) == 1, (table, row)
    return got[0][head.index(col)]


def test_the_week_s_numbers_and_the_small_count_rule(mgr: TestClient) -> None:
    page = mgr.get("/console/stores/s1/reports")
    assert page.status_code == 200
    t = tables_of(page.text)
    assert set(t) == {"unlocks", "denials", "alarms", "cases"}
    u = "unlocks"
    assert t[u][0] == ["Day", "Phone (texted code)", "Card", "App", "NFC phone", "Staff PIN", "Staff badge",
                       "Staff (credential since removed)", "Total"]
    assert [r[0] for r in t[u][1:]] == [f"2024-05-0{d}" for d in range(2, 9)] + ["Total"]
    assert t[u][1][1:] == ["6", "7", "0", "0", "0", "0", "0", "13"]  # every cell shown: so is the day's total
    assert t[u][2][1:] == ["6", "0", "< 5", "0", "0", "0", "0", "≥ 6"]  # 2 app unlocks: left out of the total
    assert t[u][3][1:] == ["6", "0", "0", "0", "5", "0", "0", "11"]
    assert t[u][4][1:] == ["6", "0", "0", "0", "0", "< 5", "< 5", "≥ 6"]
    assert t[u][5][1:] == ["7", "0", "0", "0", "0", "0", "0", "7"]  # the ms 0 grant left out, the recovered once
    assert t[u][-1][1:] == ["43", "7", "≥ 0", "0", "5", "≥ 0", "≥ 0", "≥ 55"]

    d = "denials"
    assert t[d][0] == ["Day", "Wrong code", "Member flagged", "Case offline", "Total"]
    assert cell(t, d, "2024-05-02", "Wrong code") == "5"  # the case's echoes not counted twice
    assert cell(t, d, "2024-05-02", "Total") == "5"
    assert cell(t, d, "2024-05-06", "Case offline") == "< 5"
    assert cell(t, d, "2024-05-06", "Total") == "≥ 0"
    assert cell(t, d, "2024-05-07", "Member flagged") == "6"
    assert t[d][-1][1:] == ["5", "6", "≥ 0", "≥ 11"]

    a = "alarms"
    assert cell(t, a, "2024-05-08", "Forced entries") == "7"
    assert cell(t, a, "Total", "Forced entries") == "7"  # every day's shown: today's 9 are not in it
    assert cell(t, a, "2024-05-05", "Held open") == "< 5" and cell(t, a, "Total", "Held open") == "≥ 0"
    assert cell(t, a, "Total", "Tamper alarms") == "0"
    assert cell(t, a, "2024-05-04", "Help calls") == "5"
    assert cell(t, a, "2024-05-07", "Help calls") == "< 5"  # the other store's call is not here
    assert cell(t, a, "2024-05-04", "Median minutes to acknowledge a help call") == "3.0"
    assert cell(t, a, "2024-05-07", "Median minutes to acknowledge a help call") == "–"  # under 5 acknowledged
    assert cell(t, a, "Total", "Median minutes to acknowledge a help call") == "3.0"

    c = "cases"
    assert [r[0] for r in t[c][1:]] == ["c1", "c2", "c3", "All cases"]  # most forced entries first
    # day 6's 7 forced: c2's 2 is hidden, and c1's 5 with it (else 7 - 5 would give the 2 away)
    assert t[c][1][1:] == ["≥ 0", "11", "60"]
    assert t[c][2][1:] == ["≥ 0", "≥ 0", "120"]
    assert t[c][3][1:] == ["0", "0", "0"]
    assert t[c][4][1:] == ["≥ 0", "≥ 11", "180"]

    # the chart: a bar per day, those of lower bounds outlined and titled so
    assert page.text.count('class="bar"') == 7 and page.text.count('stroke-dasharray') == 2
    assert "<title>2024-05-03: ≥ 6 unlocks</title>" in page.text
    assert "<title>2024-05-02: 13 unlocks</title>" in page.text
    # an accessible table: a caption, column and row headers
    assert page.text.count("<caption") == 4 and 'scope="col"' in page.text and 'scope="row"' in page.text


def test_the_csv_is_the_page_s_tables(mgr: TestClient) -> None:
    page = tables_of(mgr.get("/console/stores/s1/reports").text)
    r = mgr.get("/console/stores/s1/reports.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="lockcase-s1-2024-05-02-2024-05-08.csv"'
    got = csv_cells(r.text)
    want = {(key, row[0], head[i]): v for key, (head, *rows) in page.items() for row in rows
            for i, v in enumerate(row) if i > 0}
    assert got == want
    assert got[("unlocks", "2024-05-03", "App")] == "< 5"
    assert got[("cases", "All cases", "Forced entries")] == "≥ 0"
    assert "< 5" in r.text and "≥" in r.text


def test_no_identifier_in_the_page_or_the_csv(world: tuple[Runtime, list[str]], mgr: TestClient) -> None:
    _, members = world
    assert members[1] in mgr.get("/console/stores/s1/events").text  # the search would find one shown
    html = mgr.get("/console/stores/s1/reports").text
    text = mgr.get("/console/stores/s1/reports.csv").text
    html = re.sub(r"[0-9a-f]{64}", "", html)  # the session's CSRF token (hex) is no shopper's
    html = re.sub(r'\s(x|y|x1|x2|y1|y2|width|height)="[0-9.]+"', "", html)  # nor the chart's geometry
    for doc in (html, text):
        for needle in (*members, LAST2, PIN_ID, BADGE_ID, GONE_ID, "g_a", "g_p", "g_c", "g_rec", "Ann"):
            assert needle not in doc, needle


def test_the_days_parameter(mgr: TestClient) -> None:
    t = tables_of(mgr.get("/console/stores/s1/reports?days=8").text)
    assert [r[0] for r in t["unlocks"][1:]][:1] == ["2024-05-01"] and len(t["unlocks"]) == 10
    assert t["unlocks"][-1][1] == "49"  # the day before the week too
    one = tables_of(mgr.get("/console/stores/s1/reports?days=1").text)
    assert [r[0] for r in one["unlocks"][1:]] == ["2024-05-08", "Total"]
    assert mgr.get("/console/stores/s1/reports?days=90").status_code == 200
    assert mgr.get("/console/stores/s1/reports.csv?days=90").status_code == 200
    for bad in ("0", "91", "-1", "99999999999999999999999", "9" * 5000, "abc", "1e3", "7.5", "٣", " 7"):
        for path in ("/console/stores/s1/reports", "/console/stores/s1/reports.csv"):
            r = mgr.get(path, params={"days": bad})
            assert r.status_code == 422, (path, bad[:30])
            assert "days: a whole number from 1 to 90" in r.text


def test_who_may_see_the_reports(world: tuple[Runtime, list[str]], mgr: TestClient) -> None:
    rt, _ = world
    assert '<a href="/console/stores/s1/reports">Reports</a>' in mgr.get("/console/stores/s1").text
    for path in ("/console/stores/s2/reports", "/console/stores/s2/reports.csv", "/console/stores/zz/reports",
                 "/console/stores/s2/reports?days=0"):
        r = mgr.get(path)
        assert r.status_code == 404 and "no store" in r.text, path
    assoc = signed_in(rt, "assoc@example.com")
    assert "/reports" not in assoc.get("/console/stores/s1").text
    for path in ("/console/stores/s1/reports", "/console/stores/s1/reports.csv", "/console/stores/s2/reports"):
        assert assoc.get(path).status_code == 403, path
    hq = signed_in(rt, "hq@example.com")
    r = hq.get("/console/stores/s2/reports")
    assert r.status_code == 200
    t = tables_of(r.text)
    assert cell(t, "alarms", "2024-05-04", "Forced entries") == "10"  # s2's own, and only its own
    assert cell(t, "unlocks", "Total", "Phone (texted code)") == "10"
    assert cell(t, "unlocks", "2024-05-05", "Other") == "< 5"
    assert cell(t, "unlocks", "2024-05-05", "Staff (credential since removed)") == "< 5"
    assert cell(t, "denials", "2024-05-05", "Other") == "< 5"  # the cloud's; the case's is no echo of one
    assert hq.get("/console/stores/s2/reports.csv").status_code == 200
    anon = TestClient(create_app(rt), base_url="https://testserver", follow_redirects=False)
    r = anon.get("/console/stores/s1/reports.csv?days=3")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")


def _value(text: str) -> int:
    """A figure as a number: a hidden cell adds 0, a lower bound its shown part."""
    return 0 if text.startswith("<") or text == "–" else int(text.removeprefix("≥ "))


def test_no_other_period_gives_a_hidden_count_back(mgr: TestClient) -> None:
    """The known gap of the first reports (days=2 minus days=1 gave a hidden count of the day
    before): every total of a period minus the same total of the period a day shorter is exactly
    the added day's shown cell(s), 0 for a hidden one; and so for each case's figures."""
    reports = {n: tables_of(mgr.get(f"/console/stores/s1/reports?days={n}").text) for n in range(1, 8)}
    for n in range(2, 8):
        longer, shorter = reports[n], reports[n - 1]
        for key in ("unlocks", "denials"):
            head = longer[key][0]
            added_day = longer[key][1]  # the oldest day: the one the shorter period lacks
            for col in head[1:]:
                if col not in shorter[key][0]:
                    continue
                diff = _value(cell(longer, key, "Total", col)) - _value(cell(shorter, key, "Total", col))
                assert diff == _value(added_day[head.index(col)]), (n, key, col)
        for case in ("c1", "c2", "c3"):
            for col in ("Forced entries", "Denials"):
                diff = _value(cell(longer, "cases", case, col)) - _value(cell(shorter, "cases", case, col))
                assert diff >= 0 and (diff == 0 or diff >= 5), (n, case, col, diff)


def test_the_analytics_pages_scoped_and_naming_no_one(world: tuple[Runtime, list[str]], mgr: TestClient) -> None:
    rt, members = world
    page = mgr.get("/console/stores/s1/analytics")
    assert page.status_code == 200
    assert '<a href="/console/stores/s1/analytics">Analytics</a>' in page.text
    t = tables_of(page.text)
    assert cell(t, "daily", "Grants: phone", "05-08") == "6" and cell(t, "daily", "Grants: app", "05-03") == "< 5"
    assert cell(t, "daily", "Forced", "Total") == "7"  # today's 9 not yet
    assert [r[0] for r in t["ranking"][1:]] == ["c1", "c2", "c3"]
    html = re.sub(r"[0-9a-f]{64}", "", page.text)
    html = re.sub(r'\s(x|y|x1|x2|y1|y2|width|height)="[0-9.]+"', "", html)
    for needle in (*members, LAST2, PIN_ID, BADGE_ID, GONE_ID, "g_a", "g_p", "g_c", "g_rec", "Ann"):
        assert needle not in html, needle
    for path in ("/console/stores/s2/analytics", "/console/stores/zz/analytics"):
        assert mgr.get(path).status_code == 404, path
    assert mgr.get("/console/stores/s1/analytics?days=91").status_code == 422
    assert mgr.get("/console/analytics").status_code == 403
    assert signed_in(rt, "assoc@example.com").get("/console/stores/s1/analytics").status_code == 403
    hq = signed_in(rt, "hq@example.com")
    fleet = hq.get("/console/analytics")
    assert fleet.status_code == 200
    ft = tables_of(fleet.text)
    assert [r[0] for r in ft["fleet"][1:]] == ["Store s1", "Store s2", "All stores"]
    assert cell(ft, "fleet", "Store s2", "Forced entries") == "10"


def test_store_hours_from_the_analytics_page(world: tuple[Runtime, list[str]], mgr: TestClient) -> None:
    page = mgr.get("/console/stores/s1/analytics")
    token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert token and "No store hours are set" in page.text
    form = {"csrf_token": token[1], "tz": "Mars/Olympus"}
    for i in range(7):
        form |= {f"open{i}": "09:00", f"close{i}": "00:00"} if i < 6 else {f"closed{i}": "1"}
    r = mgr.post("/console/stores/s1/hours", data=form)
    assert r.status_code == 422 and "tz: unknown time zone" in r.text
    r = mgr.post("/console/stores/s1/hours", data=form | {"tz": "Europe/Berlin", "open2": "9am"})
    assert r.status_code == 422 and "Wed: opening and closing times as HH:MM" in r.text
    r = mgr.post("/console/stores/s1/hours", data=form | {"tz": "Europe/Berlin", "close3": "18:30"})
    assert r.status_code == 422 and "(Thu): whole hours only" in r.text  # review M5
    assert mgr.post("/console/stores/s1/hours", data=form | {"csrf_token": "0" * 64}).status_code == 403
    r = mgr.post("/console/stores/s1/hours", data=form | {"tz": "Europe/Berlin"})
    assert r.status_code == 303 and r.headers["location"] == "/console/stores/s1/analytics?hours=saved"
    page = mgr.get(r.headers["location"])
    assert "Store hours saved" in page.text and 'value="Europe/Berlin"' in page.text
    assert 'name="close0" value="00:00"' in page.text and 'name="closed6" value="1" checked' in page.text
    rt, _ = world
    hours = mgr.get("/v1/admin/stores/s1/hours").json()
    assert hours["week"] == [[540, 1440]] * 6 + [None]
    assert mgr.post("/console/stores/s2/hours", data=form | {"tz": "UTC"}).status_code == 404
    with rt.sessions.begin() as s:  # the world's other tests read s1 without hours
        s.execute(delete(StoreHours))
        rebuild(s, NOW, rt.settings.otp_ttl_s)


def test_the_analytics_page_gives_no_hidden_count_back_across_linked_metrics(
        world: tuple[Runtime, list[str]], mgr: TestClient) -> None:
    """Review M6 on the page: each day's column of the per-day table, subtracted within a linked
    group (allow and its grants, trusted, after_hours within opens, acknowledged help calls), gives
    no hidden count back; and the page shows what the API's JSON shows."""
    rt, _ = world
    truth: dict[str, dict[str, int]] = {}
    with rt.sessions.begin() as s:
        for _sid, _c, day, metric, n in day_rows(s, ["s1"], NOW - 7 * 86_400, NOW - NOW % 86_400):
            truth.setdefault(time.strftime("%m-%d", time.gmtime(day)), {}).setdefault(metric, 0)
            truth[time.strftime("%m-%d", time.gmtime(day))][metric] += n
    t = tables_of(mgr.get("/console/stores/s1/analytics").text)
    body = mgr.get("/v1/admin/stores/s1/analytics?days=7").json()
    head, *rows = t["daily"]
    by_label = {label(m): m for m in body["daily"]}
    checked = 0
    for i, d in enumerate(head[1:-1], start=1):
        shown = {by_label[r[0]]: (None if r[i] == "< 5" else int(r[i])) for r in rows}
        for m, v in shown.items():  # the page's figure is the JSON's
            assert body["daily"][m][i - 1]["text"] == rows[[by_label[r[0]] for r in rows].index(m)][i]
            checked += v is None
        assert not linked_give_back(truth.get(d, {}), shown), (d, shown)
    assert checked  # some cells are hidden: the check has something to find


def test_the_analytics_page_shows_every_figure_the_api_shows(mgr: TestClient) -> None:
    """Every count the API's JSON carries per day is a row of the page's per-day table (the typed
    and left entries, the staff grants by kind were in the JSON and the CSV only); health figures
    and charts are labelled in words and figures, not metric names."""
    page = mgr.get("/console/stores/s1/analytics").text
    body = mgr.get("/v1/admin/stores/s1/analytics?days=7").json()
    t = tables_of(page)
    rows = [r[0] for r in t["daily"][1:]]
    assert sorted(rows) == sorted(label(m) for m in body["daily"]), set(rows) ^ {label(m) for m in body["daily"]}
    assert cell(t, "daily", "Abandoned: number started, never submitted", "05-03") == "8"  # c1 6 + c2 2
    assert cell(t, "daily", "Grants: pin", "Total") == "5" and cell(t, "daily", "Grants: badge", "05-05") == "< 5"
    assert "<dt>Boots on firmware 2.0.1</dt><dd>1</dd>" in page and "<dt>Faults: nfc</dt><dd>1</dd>" in page
    assert ">fw:" not in page and ">boot<" not in page
    assert cell(t, "daily", "Denials: flagged member", "05-07") == "6"  # a reason in words, not its key
    # the stacked chart names each day under its bar and its figure above it, as the table does
    for d in ("05-02", "05-08"):
        assert f'class="tick">{d}</text>' in page, d
    assert re.search(r'class="tick value">(≥ )?[0-9]+</text>', page)


def test_times_per_day_and_per_case(mgr: TestClient) -> None:
    """Issue 14's figures per day and per case include the times: p50/p90 per store-day and per
    case over the period, each over 5 samples or more (the 5 help calls of 05-04, acknowledged
    after 1 to 5 minutes, all on c3), in the JSON, the CSV and the page."""
    body = mgr.get("/v1/admin/stores/s1/analytics?days=7").json()
    ack = body["durations_daily"]["h_ack"]
    assert [d["p50"]["text"] for d in ack] == ["–", "–", "180", "–", "–", "–", "–"]
    assert ack[2]["p90"]["text"] == "300" and body["durations"]["h_ack"]["p50"]["text"] == "180"
    c3 = mgr.get("/v1/admin/stores/s1/analytics/cases/c3?days=7").json()
    c1 = mgr.get("/v1/admin/stores/s1/analytics/cases/c1?days=7").json()
    assert c3["durations"]["h_ack"]["p50"]["text"] == "180" and c1["durations"]["h_ack"]["p50"]["text"] == "–"
    cells = csv_cells(mgr.get("/v1/admin/stores/s1/analytics.csv?days=7").text)
    assert cells[("durations_daily", "2024-05-04", "h_ack:p50")] == "180"
    assert cells[("case_durations", "c3", "h_ack:p90")] == "300" and ("case_durations", "c1", "h_ack:p50") not in cells
    t = tables_of(mgr.get("/console/stores/s1/analytics").text)
    assert cell(t, "durations", "Help call to acknowledgment (s)", "05-04") == "180 / 300"
    assert cell(t, "durations", "Help call to acknowledgment (s)", "05-05") == "–"
    assert cell(t, "durations", "Help call to acknowledgment (s)", "Period p50") == "180"
