"""Service settings: environment `CASECLOUD_*`, then an optional TOML file, then built-in defaults.

With no configuration at all the service runs: SQLite under the data dir, a broker on
localhost:1883, texts to the dev outbox, and secrets generated into the data dir on first run.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "casecloud"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASECLOUD_", extra="forbid")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: sqlite:///<data_dir>/casecloud.db

    # MQTT broker the worker and the command sender connect to
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    # The worker's login; the API's command sender has its own (mqtt_api_*), since the shipped
    # broker makes a login its client id (cloud/broker/casecloud.conf). Without mqtt_api_username
    # the API uses the worker's, which only a broker that does not bind client ids accepts.
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_api_username: str | None = None
    mqtt_api_password: SecretStr | None = None
    # Where this process writes Mosquitto's casecloud.passwd and casecloud.acl from the case table
    # (brokersync.py), reading service.passwd there; None: it leaves the broker's files alone.
    broker_dir: Path | None = None
    broker_pid_file: Path | None = None  # Mosquitto's pid_file: SIGHUP after each change
    broker_sync_every_s: float = 5.0  # re-read the case table for changes made by other processes
    mqtt_client_id: str | None = None  # default: casecloud-<random>
    # Several workers split the case traffic through an MQTT shared subscription of this group.
    mqtt_share_group: str | None = None
    # What a registered case is told to connect to (the broker's public name).
    public_mqtt_host: str | None = None
    public_mqtt_port: int | None = None
    topic_prefix: str = "lockcase/v1"

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # The bootstrap token: it creates the first HQ account (POST /v1/bootstrap/hq-user) while none
    # exists, and nothing else (docs/accounts.md). Default: generated into <data_dir>/admin_token.
    admin_token: SecretStr | None = None
    # HMAC key for phone numbers and tokens; default: generated into <data_dir>/server_secret.
    server_secret: SecretStr | None = None
    # Keys that seal the case keys at rest (Fernet keys, newest first: keyring.py); default: one
    # generated into <data_dir>/key_encryption_key. Keep them apart from database backups.
    key_encryption_keys: list[SecretStr] | None = None

    sms_backend: Literal["outbox", "twilio"] = "outbox"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"

    loyalty_backend: Literal["builtin", "webhook"] = "builtin"
    loyalty_webhook_url: str | None = None
    loyalty_webhook_secret: SecretStr | None = None

    # policy
    otp_ttl_s: int = 120
    otp_tries: int = 3
    rate_window_s: int = 600
    rate_phone: int = 3  # challenges texted to one number per window
    rate_member: int = 10
    rate_case: int = 30
    rate_store: int = 300
    # Unknown or malformed tokens at the public app unlock: their own budgets, so that junk never
    # spends a case's or a store's shopper budget (docs/cloud.md "Limits").
    rate_junk_client: int = 20  # per client address (behind a proxy: uvicorn --forwarded-allow-ips)
    rate_junk: int = 2000  # fleet-wide; past it, an address that sent junk in the window is refused
    # Wrong one-time codes per window; past one, codes are refused unchecked (no more chances).
    rate_bad_phone: int = 5
    rate_bad_case: int = 20
    rate_bad_store: int = 50
    rate_bad_fleet: int = 1000
    wrong_code_alert: int = 10  # wrong codes in one store within a window: one `wrong_codes` alert
    abuse_after: int = 3  # refusals for one key within a window before staff are alerted
    guests_allowed: bool = True  # default for new stores: numbers that are not members may use OTP

    # alerts (alerts.py, docs/cloud.md "Alerts")
    # a case not heard from this long (its presence, or silence: it beats every 60 s) raises `offline`
    offline_alert_s: int = 300
    offline_check_every_s: int = 30
    help_late_s: int = 60  # a help event reaching the cloud this much after its ts is marked late
    alert_repeat_s: int = 60  # a repeat of an open alert is POSTed again at most this often
    alert_redeliver_s: int = 300  # an unresolved alert not delivered is POSTed again after this
    # Key of the webhook signature (X-LockCase-Signature); default: generated into
    # <data_dir>/notify_secret. Give the store's receiver the same value.
    notify_secret: SecretStr | None = None
    notify_attempts: int = 6  # webhook tries per delivery, with exponential backoff and jitter
    notify_backoff_s: float = 1.0  # the first retry waits up to this; each one doubles it
    notify_max_s: float = 60.0  # no retry starts after this much time

    # the store console's sessions and logins (accounts/, docs/accounts.md)
    # Secure cookies: sent over HTTPS only. Off only for plain-HTTP local development and the sim.
    cookie_secure: bool = True
    # The console's third-party browser files (htmx, Swagger UI), fetched by exact version and
    # integrity at build time (tools/webassets.py, `make deps`) and served under /static/vendor/:
    # never from a CDN. Default: the checkout's build/web.
    web_assets_dir: Path = Field(default_factory=lambda: Path(__file__).resolve().parents[2] / "build" / "web")
    cookie_samesite: Literal["lax", "strict"] = "lax"
    session_idle_s: int = 7200  # a session unused this long ends
    session_absolute_s: int = 43200  # and any session after this, however busy (a shift)
    login_window_s: int = 900  # the window of the two login limits below
    login_rate_account: int = 10  # failed logins per account (known or not) per window
    login_rate_client: int = 30  # failed logins per client address per window
    login_lockout_after: int = 5  # consecutive failures before an account is locked
    login_lockout_base_s: int = 60  # first lockout; each further failure doubles it
    login_lockout_max_s: int = 3600

    cmd_timeout_s: float = 10.0
    msg_ttl_s: int = 30
    # How long the cases wait for an answer (their request_timeout_s) and the reply's trip: a
    # request still unanswered at that deadline is shed or journaled late (backpressure.py).
    req_wait_s: float = 8.0
    reply_margin_s: float = 0.5
    retention_days: int = 90
    # Raw events older than this are deleted by the retention job once the analytics have counted
    # them; the counts stay (docs/analytics.md). 0 keeps every event.
    event_retention_days: int = Field(default=365, ge=0)
    retention_every_s: int = 3600
    log_level: str = "INFO"

    # The operator's side (docs/operations.md): /metrics, /livez, /readyz (api/ops.py).
    # The scrape token: Prometheus sends it as a bearer token (it opens /metrics and nothing else).
    # Default: generated into <data_dir>/metrics_token.
    metrics_token: SecretStr | None = None
    # Where a --worker-only process serves its /livez, /readyz and /metrics (it has no API);
    # None: it serves no HTTP. A private address: the probes and the scraper are inside.
    ops_host: str = "127.0.0.1"
    ops_port: int | None = None
    metrics_every_s: float = 15.0  # how often the worker side reads the fleet's gauges (cases, alerts)
    ready_timeout_s: float = 2.0  # a readiness probe's database check gives up after this
    stall_s: float = 300.0  # a worker's batch deciding this long makes the process not live (/livez)

    # over-the-air releases (releases/, docs/ota.md)
    # The fleet's release public keys (Ed25519, 64 hex digits each, newest first): an upload must be
    # signed by one of them, and casectl provision writes the first into a case's config (ota_key).
    # Set here by the operator, never through the API: an API token must not make the cloud trust a key.
    release_keys: list[str] = Field(default_factory=list)
    rollout_check_every_s: float = 10.0  # how often rollouts open waves and halt themselves

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("CASECLOUD_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'casecloud.db'}"

    @property
    def share_prefix(self) -> str:
        return f"$share/{self.mqtt_share_group}/" if self.mqtt_share_group else ""

    def prepare(self) -> None:
        """The data dir and the SQLite file are the owner's only: the file holds sealed case keys,
        hashed numbers and the event history. SQLite gives its -wal and -shm files the mode of the
        database file, so creating that one 0600 covers them."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # it holds the secrets: tighten one made before this rule
        path = sqlite_path(self.db_url)
        if path is not None:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)  # also one created earlier with the umask's mode

    def kek_bytes(self) -> list[bytes]:
        if self.key_encryption_keys:
            return [k.get_secret_value().encode() for k in self.key_encryption_keys]
        return [_file_secret(self.data_dir / "key_encryption_key", _fernet_key).encode()]

    def secret_bytes(self) -> bytes:
        if self.server_secret is not None:
            return self.server_secret.get_secret_value().encode()
        return bytes.fromhex(_file_secret(self.data_dir / "server_secret"))

    def notify_key(self) -> bytes:
        if self.notify_secret is not None:
            return self.notify_secret.get_secret_value().encode()
        return _file_secret(self.data_dir / "notify_secret").encode()

    def admin_bearer(self) -> str:
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return _file_secret(self.data_dir / "admin_token")

    def metrics_bearer(self) -> str:
        if self.metrics_token is not None:
            return self.metrics_token.get_secret_value()
        return _file_secret(self.data_dir / "metrics_token")


def sqlite_path(url: str) -> Path | None:
    """The file of a file-backed SQLite URL; None for other databases and in-memory SQLite."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _file_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_hex(32)) -> str:
    """Read a generated secret, creating it (owner-only) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (API or worker) won the race: use its secret
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
