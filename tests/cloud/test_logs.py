"""The cloud's logs: JSON, one event a line, with case, store and request ids, and nothing secret.

A `python -m casecloud` process (API and worker) at DEBUG, the most it ever says, serves a flow
with a phone number, its texted code, a loyalty card, a member's app token, a staff PIN (hashed by
the firmware's own function), a console login (password, session cookie, CSRF token) and the
tokens of the API and the scraper; then every line of its output is parsed as JSON and searched
for each of them, for the case's key and broker password, and for the server secret and the
key-encryption key on its disk."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from casecloud.logs import scrub_text
from lockcase import creds
from sim.process import free_port
from tests.cloud.fakecase import FakeCase
from tests.cloud.procs import (
    ADMIN_TOKEN,
    METRICS_TOKEN,
    casecloud,
    scrape,
    service_env,
    wait_status,
)
from tests.cloud.test_policy import PHONE
from tests.cloud.test_service_paths import responder

PASSWORD = "logs test passphrase 7719"
CARD = "04A1B2C3D4E5F6"
PIN = "918273"


def test_no_secret_in_any_log_line(tmp_path: Path, broker: tuple[str, int]) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = service_env(data, broker, api_port=port, log_level="DEBUG", cmd_timeout_s=5)
    base, log = f"http://127.0.0.1:{port}", tmp_path / "svc.log"
    secrets: dict[str, str] = {"phone": PHONE, "e164": "+1" + PHONE, "card": CARD, "pin": PIN, "password": PASSWORD,
                               "admin token": ADMIN_TOKEN, "metrics token": METRICS_TOKEN}
    with casecloud(log, env) as proc:
        wait_status(base + "/readyz", 200, proc, log)
        boot = httpx.post(base + "/v1/bootstrap/hq-user", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                          json={"email": "hq@example.com", "password": PASSWORD, "token_name": "t"}).json()
        secrets["hq token"] = boot["token"]["token"]
        h = {"Authorization": f"Bearer {secrets['hq token']}", "X-Request-ID": "trace-me-42"}
        login = httpx.post(base + "/v1/auth/login", json={"email": "hq@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.text
        secrets["csrf token"] = login.json()["csrf_token"]
        secrets["session id"] = next(iter(login.cookies.values()))
        me = httpx.get(base + "/v1/me", cookies=login.cookies)
        assert me.status_code == 200 and me.headers["x-request-id"]
        assert httpx.post(base + "/v1/admin/stores", headers=h, json={"id": "s1"}).headers["x-request-id"] == \
            "trace-me-42"
        reg = httpx.post(base + "/v1/admin/cases", headers=h, json={"id": "c1", "store": "s1"}).json()
        secrets["case key"], secrets["case broker password"] = reg["key"], reg["mqtt"]["password"]
        member = httpx.post(base + "/v1/admin/members", headers=h, json={"card": CARD, "phone": PHONE}).json()
        secrets["app token"] = member["app_token"]
        pin_hash = creds.hash_pin(PIN, "00112233445566778899aabbccddeeff", 1000)
        secrets["pin hash"] = pin_hash
        staff = httpx.post(base + "/v1/admin/stores/s1/staff", headers=h, json={"kind": "pin", "hash": pin_hash})
        assert staff.status_code == 201, staff.text

        case = FakeCase(*broker, "s1", "c1", bytes.fromhex(reg["key"]))
        stop = threading.Event()
        try:
            case.hello()
            r, _ = case.send("req", {"t": "phone", "num": PHONE})
            ch = case.expect("rep", re=r["id"])
            assert ch["t"] == "challenge"
            texts = httpx.post(base + "/v1/dev/sms/lookup", headers=h, json={"phone": PHONE}).json()
            code = next(w for w in texts[0]["body"].split() if w.strip(".").isdigit()).strip(".")
            secrets["code"] = code
            r, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": "000000"})  # a wrong one first
            assert case.expect("rep", re=r["id"])["t"] == "deny"
            r, _ = case.send("req", {"t": "otp", "sid": ch["sid"], "code": code})
            allow = r["id"]
            assert case.expect("rep", re=allow)["t"] == "allow"
            r, _ = case.send("req", {"t": "token", "tok": CARD, "src": "card"})
            assert case.expect("rep", re=r["id"])["t"] in ("challenge", "need_phone", "ask_phone", "allow", "phone")
            responder(case, stop)
            u = httpx.post(base + "/v1/app/unlock", json={"token": member["app_token"], "case": "c1"}, timeout=10)
            assert u.status_code == 200, u.text
            scrape(base)
        finally:
            stop.set()
            case.close()
    secrets["server secret"] = (data / "server_secret").read_text().strip()
    secrets["key-encryption key"] = (data / "key_encryption_key").read_text().strip()

    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line one JSON event
    assert all(isinstance(e, dict) and {"ts", "level", "logger", "event"} <= e.keys() for e in events)
    for name, value in secrets.items():
        assert len(value) >= 6, name
        for line in lines:
            assert value not in line, f"{name} in a log line: {line}"
    assert not [line for line in lines if PHONE[-7:] in line]  # nor the subscriber part alone

    decided = [e for e in events if e["event"] == "case c1 otp -> allow "]
    assert len(decided) == 1 and decided[0]["case"] == "c1" and decided[0]["store"] == "s1", decided
    assert decided[0]["req"] == scrub_text(allow)  # an id of 7+ digits and no letter shows as one
    traced = [e for e in events if e.get("request_id") == "trace-me-42"]
    assert traced and any("POST /v1/admin/stores" in e["event"] for e in traced)
    assert any(e.get("logger") == "uvicorn.access" and e.get("request_id") for e in events)


def test_the_redaction_backs_the_code_up() -> None:
    """What the code never logs, the formatter would still hide."""
    leaky: list[tuple[str, Any]] = [("+12025554567", "…67"), ("202 555 4567", "…67"),
                                    ("key 0123456789abcdef0123456789abcdef", "key [hex]"),
                                    ("token Zm9vYmFyYmF6cXV4MTIzNDU2", "token [redacted]"),
                                    # whatever stands around the digits (found by a review)
                                    ("sent to +4915123456789.", "sent to …89."),
                                    ("+4915123456789x", "…89x"), ("phone=%2B4915123456789", "phone=…89"),
                                    ("0151.234.5678", "…78"), ("(+1) 415-555-0100.", "(…00.")]
    for text, shown in leaky:
        assert scrub_text(text) == shown
    for kept in ("2026-12-02T03:00:00Z", "127.0.0.1:8080", "10.200.100.255", "case c1 phone -> challenge", "lockcase/v1/s1/c1/req"):
        assert scrub_text(kept) == kept


def test_lines_name_their_case_and_store() -> None:
    """From the call's `extra`, a topic among the arguments, or a line that begins "case %s" or
    "store %s"; exceptions as one field, redacted too."""
    import io
    import logging

    from casecloud import logs

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logs.formatter())
    lg = logging.getLogger("tests.logs.ids")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.warning("case %s connected (fw %s)", "c7", "0.1")
        lg.warning("rejected %s on %s", "replay", "lockcase/v1/s2/c9/req")
        lg.warning("store %s webhook unreachable: %d alerts left", "s3", 4)
        lg.warning("case %s %s -> %s", "c1", "otp", "allow", extra=logs.ids("c1", "s1", "abc123"))
        lg.warning("case %s", "not an id!")
        try:
            raise ValueError("+12025554567")
        except ValueError:
            lg.exception("failed on %s", "c1")
    finally:
        lg.removeHandler(handler)
    got = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [{k: e[k] for k in ("case", "store", "req") if k in e} for e in got] == [
        {"case": "c7"}, {"case": "c9", "store": "s2"}, {"store": "s3"}, {"case": "c1", "store": "s1", "req": "abc123"},
        {}, {}]
    assert "ValueError: …67" in got[-1]["exception"] and "2025554567" not in buf.getvalue()


def test_records_gather_nothing_no_line_shows() -> None:
    """A worker logs a line per decision: `setup` turns off what the logging module gathers for
    every record and the lines never show (the caller's frame, thread, process), and the line is
    what it was."""
    import io
    import logging

    from casecloud import logs

    root = logging.getLogger()
    before = (root.handlers[:], root.level, logging._srcfile,  # type: ignore[attr-defined]
              logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    seen: list[logging.LogRecord] = []
    buf = io.StringIO()
    try:
        handler = logs.setup("INFO", buf)
        handler.addFilter(lambda r: seen.append(r) or True)
        logging.getLogger("casecloud.worker").info("case %s %s -> %s %s", "c1", "token", "allow", "",
                                                   extra=logs.ids("c1", "s1", "r42"))
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        logging._srcfile = before[2]  # type: ignore[attr-defined]
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = before[3:]
    (r,) = seen
    assert (r.funcName, r.lineno, r.thread, r.process, r.processName) == ("(unknown function)", 0, None, None, None)
    line = json.loads(buf.getvalue())
    assert {k: v for k, v in line.items() if k != "ts"} == {
        "event": "case c1 token -> allow ", "case": "c1", "store": "s1", "req": "r42", "level": "info",
        "logger": "casecloud.worker"}
