"""Secrets at rest: owner-only data files; case keys sealed in the database, rotatable."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from casecloud import db, keyring, registry
from casecloud.keyring import KeyringError
from casecloud.models import Case
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from tests.cloud.conftest import FakeClock, is_postgres


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sqlite_files_are_the_owners_only(tmp_path: Path, clock: FakeClock) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "casecloud.db").touch(mode=0o644)  # made before the rule, or under a lax umask
    rt = build(Settings(data_dir=data, admin_token=SecretStr("t")), clock=clock)
    with rt.sessions.begin() as s:  # writes: the -wal and -shm files exist now
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())
    files = [p for p in data.iterdir() if p.name.startswith("casecloud.db")]
    assert {p.name for p in files} >= {"casecloud.db", "casecloud.db-wal"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert _mode(data) == 0o700
    assert _mode(data / "key_encryption_key") == 0o600
    rt.engine.dispose()


def test_no_case_key_in_clear_at_rest(rt: Runtime, shop: dict[str, Any], stored_files: Any) -> None:
    key: bytes = shop["key"]
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and c.key_hex is None and c.key_sealed is not None
        assert keyring.case_key(s, c) == key  # what signs and checks is still the key
    rt.engine.dispose()
    blob = b"".join(p.read_bytes() for p in stored_files())
    assert blob  # the search looked at something
    for form in (key, key.hex().encode(), key.hex().upper().encode()):
        assert form not in blob


def test_key_encryption_keys_rotate(settings: Settings, clock: FakeClock) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()

    def runtime(*keys: bytes) -> Runtime:
        st = settings.model_copy(update={"key_encryption_keys": [SecretStr(k.decode()) for k in keys]})
        return build(st, clock=clock)

    rt = runtime(old)
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        _, sec = registry.register_case(s, "s1", "c1", rt.now())
    rt.engine.dispose()

    rt = runtime(new, old)  # the new key first: old seals still open, new ones use the new key
    with rt.sessions.begin() as s:
        assert keyring.rewrap(s) == 1
    rt.engine.dispose()

    rt = runtime(new)  # the old key is dropped: everything still opens
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and keyring.case_key(s, c).hex() == sec.key_hex
    rt.engine.dispose()

    # a process given only a key that sealed none of them refuses to start, saying so
    with pytest.raises(KeyringError, match="none of the 1 case keys opens"):
        runtime(old)

    # a keyring without the key that sealed them says so, not a wrong key
    rt = runtime(new)
    with db.make_sessions(rt.engine, keyring.Keyring([old]))() as s, pytest.raises(KeyringError):
        c = s.get(Case, "c1")
        assert c is not None
        keyring.case_key(s, c)
    rt.engine.dispose()


def test_a_lost_key_encryption_key_file_is_said_at_start(settings: Settings, clock: FakeClock) -> None:
    """The generated key_encryption_key file lost (or another process's data dir): a new one would
    be generated and every case's messages fail; the start fails instead, naming the setting."""
    rt = build(settings, clock=clock)
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())
    rt.engine.dispose()
    (settings.data_dir / "key_encryption_key").unlink()
    with pytest.raises(KeyringError, match="key_encryption_keys"):
        build(settings, clock=clock)


def test_keys_sealed_under_a_dropped_key_are_named_at_start(
        settings: Settings, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()

    def runtime(*keys: bytes) -> Runtime:
        return build(settings.model_copy(update={"key_encryption_keys": [SecretStr(k.decode()) for k in keys]}),
                     clock=clock)

    rt = runtime(old)
    with rt.sessions.begin() as s:
        registry.create_store(s, "s1", rt.now())
        registry.register_case(s, "s1", "c1", rt.now())
    rt.engine.dispose()
    rt = runtime(new, old)
    with rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c2", rt.now())  # sealed under the new key
    rt.engine.dispose()
    runtime(new).engine.dispose()  # the old key dropped before rewrap: c2 still opens, c1 is named
    assert "1 case keys do not open" in caplog.text and "c1" in caplog.text


def test_keys_from_before_sealing_are_sealed_at_start(settings: Settings, clock: FakeClock) -> None:
    """A database at revision 0003 holds keys in clear: the first start seals them."""
    url = settings.db_url
    settings.prepare()
    command.upgrade(db.alembic_config(url), "0003")
    clear = "ab" * 32
    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO stores (id, name, country, guests_allowed, created_at) "
                          "VALUES ('s1', '', 'US', true, 1)"))
        conn.execute(text("INSERT INTO cases (id, store_id, name, key_hex, mqtt_password_hash, key_version, "
                          "rx_seq, rx_mask, tx_seq, online, synced, created_at) VALUES ('c1', 's1', '', :k, 'x', 1, "
                          "0, 0, 0, false, false, 1)"), {"k": clear})
    eng.dispose()
    rt = build(settings, clock=clock)
    with rt.sessions() as s:
        c = s.get(Case, "c1")
        assert c is not None and c.key_hex is None and c.key_sealed and clear not in c.key_sealed
        assert keyring.case_key(s, c).hex() == clear
    rt.engine.dispose()
    assert is_postgres(url) or clear.encode() not in Path(url.removeprefix("sqlite:///")).read_bytes()


def test_rewrap_endpoint(rt: Runtime, shop: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from casecloud.api import create_app

    with TestClient(create_app(rt)) as api:
        r = api.post("/v1/admin/keys/rewrap", headers={"Authorization": "Bearer test-admin-token"})
        assert r.status_code == 200 and r.json() == {"rewrapped": 1}
        assert api.post("/v1/admin/keys/rewrap").status_code == 401
