"""Database tables (SQLAlchemy 2 typed ORM). Times are integer epoch seconds throughout.

No column holds a raw phone number: members and challenges keep HMAC-SHA256(server secret, E.164)
and the last two digits only (privacy.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, int: BigInteger}


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    country: Mapped[str] = mapped_column(String(2), default="US")
    # Where help calls and abuse alerts are POSTed (chat or store system webhook); None = log only.
    notify_url: Mapped[str | None] = mapped_column(String(500), default=None)
    guests_allowed: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[int]


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # The case's HMAC key, sealed under the key-encryption keys of the settings (keyring.py).
    key_sealed: Mapped[str | None] = mapped_column(String(300), default=None)
    # Before keys were sealed: the key in clear. Emptied into key_sealed at start (seal_legacy).
    key_hex: Mapped[str | None] = mapped_column(String(64), default=None)
    # mosquitto_passwd's PBKDF2-SHA512 form, so the broker's password file can be generated
    mqtt_password_hash: Mapped[str] = mapped_column(String(200))
    key_version: Mapped[int] = mapped_column(default=1)
    rx_seq: Mapped[int] = mapped_column(default=0)
    rx_mask: Mapped[int] = mapped_column(default=0)
    tx_seq: Mapped[int] = mapped_column(default=0)
    online: Mapped[bool] = mapped_column(default=False)
    # The case's clock is set from the cloud (its hello answered): only then does it take requests.
    # Reported by its heartbeats; a case can be online (connected) and not synced.
    synced: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[int | None] = mapped_column(default=None)
    fw: Mapped[str | None] = mapped_column(String(40), default=None)
    last_status: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # when last_status was last true (a beat's arrival, an event's ts): older events leave it be
    status_at: Mapped[int | None] = mapped_column(default=None)
    # Desired state (desired.py): the store's staff set and this case's config overrides, as the
    # version the cloud wants and the version the case last reported applied. 0/0: nothing managed.
    desired_v: Mapped[int] = mapped_column(default=0, server_default="0")
    applied_v: Mapped[int] = mapped_column(default=0, server_default="0")
    config_set: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_applied: Mapped[dict[str, Any]] = mapped_column(default=dict)  # config_set as last applied
    state_sent_at: Mapped[int | None] = mapped_column(default=None)  # last send of the desired state
    state_sends: Mapped[int] = mapped_column(default=0, server_default="0")  # since it last changed
    created_at: Mapped[int]


class Member(Base):
    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(100), unique=True, default=None)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    phone_last2: Mapped[str | None] = mapped_column(String(2), default=None)
    card_hash: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    app_token_hash: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    status: Mapped[str] = mapped_column(String(10), default="member")  # member | trusted | flagged
    created_at: Mapped[int]


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"), index=True)
    kind: Mapped[str] = mapped_column(String(5))  # pin | badge
    hash: Mapped[str] = mapped_column(String(64))  # computed by provisioning, as in config.json
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[int]


class Challenge(Base):
    __tablename__ = "challenges"

    sid: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(32), index=True)
    member_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    need: Mapped[str] = mapped_column(String(5))  # phone | code
    phone_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    phone_last2: Mapped[str | None] = mapped_column(String(2), default=None)
    code_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    tries_left: Mapped[int]
    expires_at: Mapped[int]
    done: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int]


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("case_id", "event_id", name="uq_events_case_event"),
        Index("ix_events_store_ts", "store_id", "ts"),
        Index("ix_events_case_ts", "case_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(40))  # the case's journal id, or c-<hex> for ours
    source: Mapped[str] = mapped_column(String(5))  # case | cloud
    kind: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[int]
    received_at: Mapped[int]
    member_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)
    phone_last2: Mapped[str | None] = mapped_column(String(2), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RateCount(Base):
    """Attempts per (scope, key) and second; a limit sums `n` over the window. One row per key and
    second, whatever the traffic, so the sum stays cheap; writers add to `n` (upsert)."""

    __tablename__ = "rate_counts"
    # SQLite: keep the rows in primary key order, so a window's sum is one range scan.
    __table_args__ = {"sqlite_with_rowid": False}

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(default=1)


class Alert(Base):
    """One incident per case and kind while it is not resolved (alerts.py): repeats add to `count`
    and move `last_at` instead of adding rows. Times `first_at`/`last_at` are the case's own (event
    ts), the others the cloud's."""

    __tablename__ = "alerts"
    __table_args__ = (
        # The one-open-alert rule, held by the database so that two workers cannot both open one.
        Index("uq_alerts_open", "case_id", "kind", unique=True, sqlite_where=text("state != 'resolved'"),
              postgresql_where=text("state != 'resolved'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(32), index=True)
    case_id: Mapped[str | None] = mapped_column(String(32), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # alerts.SEVERITY's keys
    severity: Mapped[str] = mapped_column(String(8), default="normal")  # normal | high | critical
    state: Mapped[str] = mapped_column(String(12), default="open")  # open | acknowledged | resolved
    detail: Mapped[str] = mapped_column(String(300), default="")
    count: Mapped[int] = mapped_column(default=1)
    first_at: Mapped[int] = mapped_column(default=0)
    last_at: Mapped[int] = mapped_column(default=0)
    # a help call the case could only journal (offline), reaching the cloud after the fact
    late: Mapped[bool] = mapped_column(default=False)
    acked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    acked_at: Mapped[int | None] = mapped_column(default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(100), default=None)
    resolved_at: Mapped[int | None] = mapped_column(default=None)
    # webhook delivery: when it was last handed over, how it went
    notified_at: Mapped[int | None] = mapped_column(default=None)
    delivered: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[int]


class SmsOutbox(Base):
    """The dev SMS backend: texts land here instead of a carrier (addressed by hash, never raw)."""

    __tablename__ = "sms_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    to_hash: Mapped[str] = mapped_column(String(64), index=True)
    to_last2: Mapped[str] = mapped_column(String(2))
    body: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[int]


# --- accounts of the store console and the API (accounts/, docs/accounts.md) ------------------
# Staff of the retailer, never shoppers: nothing here names a member or holds a phone number.

class User(Base):
    """A person who signs in to the console or creates API tokens. Role: associate < manager < hq;
    associates and managers act only for the stores in user_stores, hq for every store."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # u_<hex>
    email: Mapped[str] = mapped_column(String(254), unique=True)  # the login, stored lower-case
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id, PHC string (passwords.py)
    role: Mapped[str] = mapped_column(String(10))  # associate | manager | hq
    disabled: Mapped[bool] = mapped_column(default=False)
    # consecutive failed logins, and the lockout they earned (login.py); reset by a good login
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[int | None] = mapped_column(default=None)
    last_login_at: Mapped[int | None] = mapped_column(default=None)
    password_changed_at: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[int]


class UserStore(Base):
    """The stores an associate or manager belongs to (an hq user's rows, if any, are ignored)."""

    __tablename__ = "user_stores"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True, index=True)


class LoginSession(Base):
    """A console sign-in (sessions.py). The cookie holds a random id; only its SHA-256 is kept, so
    a copy of this table opens no session."""

    __tablename__ = "sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_secret: Mapped[str] = mapped_column(String(64))  # the key of the session's CSRF token
    created_at: Mapped[int]
    last_seen_at: Mapped[int]
    expires_at: Mapped[int]  # absolute: created_at + session_absolute_s, whatever the activity
    user_agent: Mapped[str] = mapped_column(String(120), default="")  # cut, for "your sessions"
    ip: Mapped[str] = mapped_column(String(48), default="")  # truncated: a /24 or a /48 (audit.truncate_ip)


class ApiToken(Base):
    """A bearer token for the REST API (tokens.py): its SHA-256 only. An hq token acts for every
    store (store_id None); an associate or manager token for exactly one."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # t_<hex>
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(12))  # its first characters, to tell tokens apart
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), default=None)
    created_at: Mapped[int]
    last_used_at: Mapped[int | None] = mapped_column(default=None)
    revoked_at: Mapped[int | None] = mapped_column(default=None)


class AuditEntry(Base):
    """Who did what through the API or the console (audit.py). Targets are ids (store, case, user,
    token, alert, member id): never a phone number, a password or a token."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_store_id", "store_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(40))  # user:<id> | token:<id> | bootstrap | anonymous
    user_id: Mapped[str | None] = mapped_column(String(32), index=True, default=None)  # the person behind it
    action: Mapped[str] = mapped_column(String(40))  # e.g. case.register, auth.login, user.disable
    target_type: Mapped[str | None] = mapped_column(String(16), default=None)
    target_id: Mapped[str | None] = mapped_column(String(64), default=None)
    store_id: Mapped[str | None] = mapped_column(String(32), default=None)  # for a manager's view
    ip: Mapped[str] = mapped_column(String(48), default="")  # truncated like the sessions'
    result: Mapped[str] = mapped_column(String(12), default="ok")  # ok | failed | refused | locked
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


# --- store analytics (analytics/, docs/analytics.md) ---------------------------------------------
# Counts computed from the events, kept after the events' retention. By construction these tables
# hold no member, phone, card, token or staff reference: a row is (case, period, metric, count).

class AnalyticsHour(Base):
    """One count per case, UTC hour and metric (analytics/metrics.py names them; a duration
    histogram's bins are metrics too: `tto_open:3`). Rows with a zero count are not kept."""

    __tablename__ = "analytics_hours"
    __table_args__ = (Index("ix_analytics_hours_store_hour", "store_id", "hour"),)

    case_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hour: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # epoch s, whole UTC hour
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(32))
    n: Mapped[int] = mapped_column(default=0)


class AnalyticsDay(Base):
    """AnalyticsHour summed per UTC day: what pages and exports read (analytics/publish.py)."""

    __tablename__ = "analytics_days"
    __table_args__ = (Index("ix_analytics_days_store_day", "store_id", "day"),)

    case_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # epoch s, 00:00 UTC
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(32))
    n: Mapped[int] = mapped_column(default=0)


class AnalyticsState(Base):
    """The aggregation's bookmarks (analytics/aggregate.py): the events' id and the alerts' time
    folded in so far."""

    __tablename__ = "analytics_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class StoreHours(Base):
    """A store's opening hours, for after-hours opens: its IANA time zone and, per weekday
    (Monday first), [open, close] in minutes after local midnight, or None when closed all day."""

    __tablename__ = "store_hours"

    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True)
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    week: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[int]


# --- over-the-air releases and their rollouts (releases/, docs/ota.md) -----------------------------

class Release(Base):
    """A signed firmware release as uploaded: the manifest's bytes exactly as signed, the
    signature, and what the manifest says (copied out for lists and checks). `ready` once every
    file is in and matched its sha256."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the manifest's rel
    version: Mapped[str] = mapped_column(String(16))
    board: Mapped[str] = mapped_column(String(16))
    mpy: Mapped[int]
    min_version: Mapped[str] = mapped_column(String(16))
    floor: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[bytes] = mapped_column(LargeBinary)
    sig: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(64))  # the release public key that verified it
    files: Mapped[int]
    size: Mapped[int]  # the files' bytes, together
    ready: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[int]


class ReleaseFile(Base):
    """One file of a release: its manifest entry, and its bytes once uploaded (None before)."""

    __tablename__ = "release_files"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    path: Mapped[str] = mapped_column(String(200))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


class Rollout(Base):
    """A release sent to a set of cases in waves (releases/rollout.py). state: active | halted |
    done; `wave` the last wave opened (0 = the first); halted by hand or by itself when more than
    max_fail_pct of the cases told to update failed to confirm."""

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # ro_<hex>
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    state: Mapped[str] = mapped_column(String(8), default="active")
    target: Mapped[dict[str, Any]] = mapped_column(default=dict)  # how the cases were chosen
    waves: Mapped[list[int]] = mapped_column(JSON, default=list)  # cumulative % of the cases per wave
    wave: Mapped[int] = mapped_column(default=0)
    wave_at: Mapped[int]  # when the last wave opened
    wave_after_s: Mapped[int | None] = mapped_column(default=None)  # next wave after this, confirmed or not
    max_fail_pct: Mapped[int] = mapped_column(default=20)
    halt_reason: Mapped[str] = mapped_column(String(200), default="")
    halted_at: Mapped[int | None] = mapped_column(default=None)
    created_by: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[int]


class RolloutCase(Base):
    """One case of a rollout: its wave and its state as the case reports it (fw events, acks,
    hello). state: pending | downloading | staged | switching | confirmed | rolled_back | failed |
    refused | cancelled."""

    __tablename__ = "rollout_cases"

    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    wave: Mapped[int]
    state: Mapped[str] = mapped_column(String(12), default="pending")
    pct: Mapped[int] = mapped_column(default=0)
    why: Mapped[str] = mapped_column(String(120), default="")
    running: Mapped[str | None] = mapped_column(String(32), default=None)  # the rel its hello/beat names
    cmd_id: Mapped[str | None] = mapped_column(String(16), default=None)  # the last cmd fw sent
    sent_at: Mapped[int | None] = mapped_column(default=None)
    sends: Mapped[int] = mapped_column(default=0)
    event_ts: Mapped[int] = mapped_column(default=0)  # the ts of the last fw event applied
    updated_at: Mapped[int]
