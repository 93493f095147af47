"""Request and response bodies of the HTTP API, and the rows they are made from.

Text is checked here against what the database takes, so that it is a 422 on every database:
PostgreSQL refuses text longer than its column, or holding a NUL character, at the INSERT (even
as a query parameter), where SQLite would keep it.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from casecloud import desired
from casecloud.codec import ID_RE
from casecloud.models import Alert, ApiToken, AuditEntry, Case, Member, Staff, Store, User

Status = Literal["member", "trusted", "flagged"]


def _fits(column: Any) -> int:
    """The declared length of a String column, as the max_length of the field stored in it."""
    return int(column.type.length)


class Input(BaseModel):
    """A request body: no text in it holds a NUL character."""

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value


class StoreIn(Input):
    id: str = Field(pattern=ID_RE.pattern)
    name: str = Field("", max_length=_fits(Store.name))
    country: str = Field("US", min_length=2, max_length=2)
    notify_url: str | None = Field(None, max_length=_fits(Store.notify_url))
    guests_allowed: bool = True


class StorePatch(Input):
    name: str | None = Field(None, max_length=_fits(Store.name))
    country: str | None = Field(None, min_length=2, max_length=2)
    notify_url: str | None = Field(None, max_length=_fits(Store.notify_url))
    guests_allowed: bool | None = None


class StoreOut(BaseModel):
    id: str
    name: str
    country: str
    notify_url: str | None
    guests_allowed: bool


class CaseIn(Input):
    id: str = Field(pattern=ID_RE.pattern)
    store: str
    name: str = Field("", max_length=_fits(Case.name))


class MqttLogin(BaseModel):
    host: str
    port: int
    username: str
    password: str


class CaseSecretsOut(BaseModel):
    """Everything the case's config.json `cloud` section needs. Shown once."""

    id: str
    store: str
    key: str
    key_version: int
    topic_prefix: str
    mqtt: MqttLogin


class CaseOut(BaseModel):
    id: str
    store: str
    name: str
    key_version: int
    online: bool
    synced: bool = Field(description="its clock is set from the cloud (greeting answered): it takes "
                         "shopper requests; a case can be online and not synced")
    last_seen: int | None
    fw: str | None
    last_status: dict[str, Any] | None
    desired_v: int = Field(0, description="version of the staff set and config overrides the cloud wants it to have")
    applied_v: int = Field(0, description="the version the case last reported applied")
    pending: bool = Field(False, description="the case has not confirmed the desired version yet")


class MemberIn(Input):
    phone: str | None = Field(None, description="as a shopper would type it, or +E.164")
    country: str = Field("US", min_length=2, max_length=2)
    card: str | None = Field(None, description="loyalty card number or NFC UID")
    status: Status = "member"
    external_id: str | None = Field(None, max_length=_fits(Member.external_id))


class MemberOut(BaseModel):
    id: str
    status: str
    external_id: str | None
    phone_last2: str | None
    has_card: bool


class MemberCreated(MemberOut):
    app_token: str = Field(description="the member's token for the store app; shown once")


class PhoneQuery(Input):
    phone: str
    country: str = Field("US", min_length=2, max_length=2)


class StatusIn(Input):
    status: Status


class StaffIn(Input):
    kind: Literal["pin", "badge"]
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    label: str = Field("", max_length=_fits(Staff.label))


class StaffOut(BaseModel):
    id: str
    store: str
    kind: str
    label: str
    pending: list[str] = Field(default_factory=list, description="cases of the store that have not applied this change yet")


class ConfigOut(BaseModel):
    ok: bool | None = Field(description="the case's answer; None when it did not answer in time (it is re-sent)")
    err: str | None = None
    pending: list[str]


class EventOut(BaseModel):
    id: int
    store: str
    case: str
    event_id: str
    source: str
    type: str
    ts: int
    received_at: int
    member_id: str | None
    phone_last2: str | None
    data: dict[str, Any]


class AlertOut(BaseModel):
    id: int
    store: str
    case: str | None
    kind: str
    severity: str = Field(description="normal | high | critical")
    state: str = Field(description="open | acknowledged | resolved")
    detail: str
    count: int = Field(description="occurrences while unresolved (repeats update the alert)")
    first_at: int = Field(description="first occurrence, the case's clock (event ts)")
    last_at: int
    late: bool = Field(description="reported after the fact from the case's journal (it was offline)")
    acked_by: str | None
    acked_at: int | None
    resolved_by: str | None
    resolved_at: int | None
    delivered: bool = Field(description="the store's webhook took the last delivery")
    attempts: int
    last_error: str | None
    created_at: int


class AlertAckIn(Input):
    by: str = Field(min_length=1, max_length=_fits(Alert.acked_by), description="who acknowledges")


class AlertResolveIn(Input):
    by: str = Field("staff", min_length=1, max_length=_fits(Alert.resolved_by))


class ResyncOut(BaseModel):
    case: str
    signed_after: int = Field(description="epoch seconds: the first message the case signs after this "
                              "re-establishes its replay window")


class CmdResult(BaseModel):
    ok: bool
    err: str | None = None


class ConfigIn(Input):
    set: dict[str, Any]


class UnlockIn(Input):
    # Public: an empty token or a case id of the wrong form is junk like an unknown one (refused
    # and counted per client address), not a 422 that costs nothing to send.
    token: str = Field(max_length=200, description="the member's app token")
    case: str = Field(max_length=200, description="from the case's QR code")


class UnlockOut(BaseModel):
    ok: bool
    grant: str
    err: str | None = None


class SmsOut(BaseModel):
    to_last2: str
    body: str
    created_at: int


# --- rows to bodies -------------------------------------------------------------------------

def store_out(st: Store) -> StoreOut:
    return StoreOut(id=st.id, name=st.name, country=st.country, notify_url=st.notify_url,
                    guests_allowed=st.guests_allowed)


def case_out(c: Case) -> CaseOut:
    return CaseOut(id=c.id, store=c.store_id, name=c.name, key_version=c.key_version, online=c.online,
                   synced=c.synced, last_seen=c.last_seen, fw=c.fw, last_status=c.last_status,
                   desired_v=c.desired_v, applied_v=c.applied_v, pending=desired.pending(c))


def member_out(m: Member) -> MemberOut:
    return MemberOut(id=m.id, status=m.status, external_id=m.external_id, phone_last2=m.phone_last2,
                     has_card=m.card_hash is not None)


def alert_out(a: Alert) -> AlertOut:
    return AlertOut(id=a.id, store=a.store_id, case=a.case_id, kind=a.kind, severity=a.severity, state=a.state,
                    detail=a.detail, count=a.count, first_at=a.first_at, last_at=a.last_at, late=a.late,
                    acked_by=a.acked_by, acked_at=a.acked_at, resolved_by=a.resolved_by, resolved_at=a.resolved_at,
                    delivered=a.delivered, attempts=a.attempts, last_error=a.last_error, created_at=a.created_at)


# --- accounts: users, sessions, API tokens, audit (docs/accounts.md) ---------------------------

RoleName = Literal["associate", "manager", "hq"]
_EMAIL_LEN = 254
_PASSWORD_LEN = 1024  # accounts.passwords.MAX_LENGTH; the rules themselves are checked there


class LoginIn(Input):
    email: str = Field(max_length=_EMAIL_LEN)
    password: str = Field(max_length=_PASSWORD_LEN)
    next: str | None = Field(None, max_length=500, description="a form login: where to go after (a path on this site)")


class UserIn(Input):
    email: str = Field(max_length=_EMAIL_LEN)
    password: str = Field(max_length=_PASSWORD_LEN, description="at least 12 characters, not your email or name")
    role: RoleName
    display_name: str = Field("", max_length=_fits(User.display_name))
    stores: list[str] = Field(default_factory=list, max_length=1000, description="an associate's or manager's stores")


class UserPatch(Input):
    display_name: str | None = Field(None, max_length=_fits(User.display_name))
    role: RoleName | None = None
    stores: list[str] | None = Field(None, max_length=1000)
    disabled: bool | None = None


class PasswordIn(Input):
    password: str = Field(max_length=_PASSWORD_LEN)


class MyPasswordIn(Input):
    current: str = Field(max_length=_PASSWORD_LEN)
    new: str = Field(max_length=_PASSWORD_LEN)


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str
    role: str
    stores: list[str] | None = Field(description="the stores they act for; null: every store (hq)")
    disabled: bool
    locked_until: int | None
    last_login_at: int | None
    created_at: int


class MeOut(BaseModel):
    user: UserOut
    via: str = Field(description="session (the console's cookie) or token")
    role: str = Field(description="the role this request acts with (a token's own role)")
    stores: list[str] | None = Field(description="the stores this request acts for; null: every store")
    token_id: str | None = None
    csrf_token: str | None = Field(None, description="for a session: send it with every change")


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str
    expires_at: int = Field(description="the session's absolute end (it ends sooner when left unused)")


class TokenIn(Input):
    name: str = Field(min_length=1, max_length=_fits(ApiToken.name))
    role: RoleName
    store: str | None = Field(None, description="required for associate and manager tokens; none for hq")


class TokenOut(BaseModel):
    id: str
    hint: str = Field(description="the token's first characters")
    name: str
    role: str
    store: str | None
    created_by: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token; shown once")


class BootstrapIn(Input):
    email: str = Field(max_length=_EMAIL_LEN)
    password: str = Field(max_length=_PASSWORD_LEN)
    display_name: str = Field("", max_length=_fits(User.display_name))
    token_name: str | None = Field(None, min_length=1, max_length=_fits(ApiToken.name),
                                   description="also create an hq API token of this name (shown once)")


class BootstrapOut(BaseModel):
    user: UserOut
    token: TokenCreated | None = None


class AuditOut(BaseModel):
    id: int
    at: int
    actor: str
    user_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    store: str | None
    ip: str
    result: str
    detail: dict[str, Any]


def user_out(u: User, stores: frozenset[str] | None) -> UserOut:
    return UserOut(id=u.id, email=u.email, display_name=u.display_name, role=u.role,
                   stores=None if stores is None else sorted(stores), disabled=u.disabled,
                   locked_until=u.locked_until, last_login_at=u.last_login_at, created_at=u.created_at)


def token_out(t: ApiToken) -> TokenOut:
    return TokenOut(id=t.id, hint=t.hint, name=t.name, role=t.role, store=t.store_id, created_by=t.created_by,
                    created_at=t.created_at, last_used_at=t.last_used_at, revoked_at=t.revoked_at)


def audit_out(e: AuditEntry) -> AuditOut:
    return AuditOut(id=e.id, at=e.at, actor=e.actor, user_id=e.user_id, action=e.action, target_type=e.target_type,
                    target_id=e.target_id, store=e.store_id, ip=e.ip, result=e.result, detail=e.detail)
