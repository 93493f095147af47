"""Settings, migrations, adapters, and `python -m casecloud` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select

from casecloud import db
from casecloud.adapters.loyalty import WebhookLoyalty
from casecloud.adapters.sms import SmsError, TwilioSms
from casecloud.models import Base, Challenge, Member
from casecloud.privacy import Hasher
from casecloud.runtime import build
from casecloud.settings import Settings
from tests.cloud.conftest import FakeClock, free_port, is_postgres
from tests.cloud.fakecase import FakeCase
from tests.cloud.test_policy import PHONE, ctx, phone


def test_migrations_match_the_models(database_url: str) -> None:
    url = database_url
    db.migrate(url)
    db.migrate(url)  # a second start is a no-op
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_settings_env_file_and_generated_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "casecloud.toml"
    toml.write_text('mqtt_host = "broker.example"\nrate_phone = 7\n')
    monkeypatch.setenv("CASECLOUD_CONFIG", str(toml))
    monkeypatch.setenv("CASECLOUD_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CASECLOUD_RATE_PHONE", "9")  # the environment wins over the file
    s = Settings()
    assert (s.mqtt_host, s.rate_phone) == ("broker.example", 9)
    assert s.db_url == f"sqlite:///{tmp_path / 'd' / 'casecloud.db'}"
    secret, token = s.secret_bytes(), s.admin_bearer()
    assert len(secret) == 32 and len(token) == 64
    assert Settings().secret_bytes() == secret and Settings().admin_bearer() == token  # kept, not regenerated
    assert oct((tmp_path / "d" / "server_secret").stat().st_mode & 0o777) == "0o600"
    assert Settings(mqtt_share_group="g1").share_prefix == "$share/g1/"
    with pytest.raises(ValueError):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_twilio_sender() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if b"To=%2B15550000000" in req.content:
            return httpx.Response(400, json={"code": 21211, "message": "Invalid 'To' Phone Number: +15550000000"})
        return httpx.Response(201, json={"sid": "SM1"})

    tw = TwilioSms("AC1", "tok", "+15559990000", transport=httpx.MockTransport(handler))
    tw.send("+15551234567", "Your LockCase code: 123456.")
    assert seen[0].url.path == "/2010-04-01/Accounts/AC1/Messages.json"
    assert seen[0].headers["authorization"].startswith("Basic ")
    assert b"To=%2B15551234567" in seen[0].content and b"Body=Your+LockCase" in seen[0].content
    with pytest.raises(SmsError) as e:
        tw.send("+15550000000", "x")
    assert "5550000000" not in str(e.value) and "21211" in str(e.value)


class BrokenSms:
    def send(self, to_e164: str, text: str) -> None:
        raise SmsError("carrier down")


def test_text_that_cannot_be_sent_becomes_unavailable(settings: Settings, clock: FakeClock,
                                                       notifier: Any) -> None:
    rt = build(settings, clock=clock, sms=BrokenSms(), notifier=notifier)
    from casecloud import registry

    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())
    r = phone(rt)
    assert r.why == "unavailable"
    with rt.sessions() as s:
        assert all(ch.done for ch in s.scalars(select(Challenge)))


def test_loyalty_webhook(settings: Settings, clock: FakeClock, notifier: Any) -> None:
    secret = b"hooksecret"
    calls: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        import hashlib
        import hmac

        assert req.headers["x-lockcase-signature"] == hmac.new(secret, req.content, hashlib.sha256).hexdigest()
        body = json.loads(req.content)
        calls.append(body)
        if body.get("token") == "GOLD" or body.get("phone") == "+12025554567":
            return httpx.Response(200, json={"member": "R-1", "status": "trusted"})
        if body.get("token") == "BAD":
            return httpx.Response(200, json={"member": "R-2", "status": "flagged"})
        if body.get("token") == "DOWN":
            return httpx.Response(500)
        if body.get("token") in ("LONG", "NUL"):  # ids we could not store: 100 characters at most, no NUL
            return httpx.Response(200, json={"member": "R-" + "9" * 99 if body["token"] == "LONG" else "R\x00",
                                             "status": "member"})
        return httpx.Response(404)

    settings.prepare()
    h = Hasher(settings.secret_bytes())
    loyalty = WebhookLoyalty("http://retailer.invalid/members", secret, h, clock,
                             transport=httpx.MockTransport(handler))
    rt = build(settings, clock=clock, loyalty=loyalty, notifier=notifier)
    from casecloud import registry

    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())

    def token(tok: str) -> Any:
        with ctx(rt) as (s, store, case):
            return rt.policy.on_token(s, store, case, tok, "nfc")

    assert token("GOLD").t == "allow"
    assert token("BAD").why == "flagged"
    assert token("NOPE").why == "unknown"
    assert token("DOWN").why == "unavailable"
    assert token("LONG").why == "unavailable" and token("NUL").why == "unavailable"
    assert phone(rt).t == "challenge"
    with rt.sessions() as s:
        m = s.scalars(select(Member).where(Member.external_id == "R-1")).one()
        assert m.status == "trusted" and m.card_hash == h.token("GOLD") and m.phone_last2 == "67"
    assert calls[-1] == {"phone": "+1" + PHONE}


def test_python_m_casecloud_serves_api_and_worker(tmp_path: Path, broker: tuple[str, int], database_url: str) -> None:
    port = free_port()
    env = dict(os.environ, CASECLOUD_DATA_DIR=str(tmp_path / "svc"), CASECLOUD_API_PORT=str(port),
               CASECLOUD_MQTT_HOST=broker[0], CASECLOUD_MQTT_PORT=str(broker[1]), CASECLOUD_ADMIN_TOKEN="tkn")
    if is_postgres(database_url):  # SQLite: the default under the data dir
        env["CASECLOUD_DATABASE_URL"] = database_url
    log = (tmp_path / "svc.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "casecloud"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz").json()["broker"]:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "svc.log").read_text()
            time.sleep(0.2)
        # the admin token's one use: the first HQ user, with an hq API token for what follows
        boot = httpx.post(base + "/v1/bootstrap/hq-user", headers={"Authorization": "Bearer tkn"},
                          json={"email": "hq@example.com", "password": "service test passphrase", "token_name": "test"})
        assert boot.status_code == 201, boot.text
        h = {"Authorization": f"Bearer {boot.json()['token']['token']}"}
        assert httpx.post(base + "/v1/admin/stores", json={"id": "s1"}, headers={"Authorization": "Bearer tkn"}
                          ).status_code == 401  # and nothing else
        assert httpx.post(base + "/v1/admin/stores", json={"id": "s1"}, headers=h).status_code == 201
        r_reg = httpx.post(base + "/v1/admin/cases", json={"id": "c1", "store": "s1"}, headers=h)
        assert r_reg.status_code == 201, (r_reg.status_code, r_reg.text, (tmp_path / "svc.log").read_text()[-2000:])
        reg = r_reg.json()
        case = FakeCase(*broker, "s1", "c1", bytes.fromhex(reg["key"]))
        try:
            case.hello()
            r, _ = case.send("req", {"t": "phone", "num": PHONE})
            assert case.expect("rep", re=r["id"])["t"] == "challenge"
        finally:
            case.close()
        sms = httpx.get(base + "/v1/dev/sms", params={"last2": "67"}, headers=h).json()
        assert len(sms) == 1 and "code" in sms[0]["body"]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    out = (tmp_path / "svc.log").read_text()
    assert "tkn" not in out and PHONE not in out and h["Authorization"][7:] not in out


def test_runtime_refuses_half_configured_backends(settings: Settings) -> None:
    settings.sms_backend = "twilio"
    with pytest.raises(SystemExit):
        build(settings)
