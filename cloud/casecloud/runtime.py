"""Wires settings, database, adapters and policy together: the one place that picks backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from casecloud import db, keyring
from casecloud.adapters.loyalty import BuiltinLoyalty, Loyalty, WebhookLoyalty
from casecloud.adapters.notify import Notifier, WebhookNotifier
from casecloud.adapters.sms import OutboxSms, SmsSender, TwilioSms
from casecloud.keyring import Keyring
from casecloud.policy import Policy
from casecloud.privacy import Hasher
from casecloud.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    hasher: Hasher
    policy: Policy
    clock: Callable[[], float]

    def now(self) -> int:
        return int(self.clock())


def build(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    sms: SmsSender | None = None,
    loyalty: Loyalty | None = None,
    notifier: Notifier | None = None,
    migrate: bool = True,
) -> Runtime:
    settings.prepare()
    if migrate:
        db.migrate(settings.db_url)
    engine = db.make_engine(settings.db_url)
    sessions = db.make_sessions(engine, Keyring(settings.kek_bytes()))
    try:
        with sessions.begin() as s:
            keyring.seal_legacy(s)  # keys from before sealing: sealed before anything reads them
            keyring.check(s)  # the wrong key-encryption keys: said at start, not by every message
    except BaseException:
        engine.dispose()
        raise
    hasher = Hasher(settings.secret_bytes())
    if sms is None:
        if settings.sms_backend == "twilio":
            if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from):
                raise SystemExit("sms_backend=twilio needs twilio_account_sid, twilio_auth_token, twilio_from")
            sms = TwilioSms(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                            settings.twilio_from, settings.twilio_base_url)
        else:
            sms = OutboxSms(sessions, hasher, clock)
    if loyalty is None:
        if settings.loyalty_backend == "webhook":
            if not (settings.loyalty_webhook_url and settings.loyalty_webhook_secret):
                raise SystemExit("loyalty_backend=webhook needs loyalty_webhook_url and loyalty_webhook_secret")
            loyalty = WebhookLoyalty(settings.loyalty_webhook_url,
                                     settings.loyalty_webhook_secret.get_secret_value().encode(), hasher, clock)
        else:
            loyalty = BuiltinLoyalty(hasher)
    if notifier is None:
        notifier = WebhookNotifier(settings.notify_key(), attempts=settings.notify_attempts,
                                   backoff_s=settings.notify_backoff_s, max_s=settings.notify_max_s)
    policy = Policy(settings, hasher, sms, loyalty, notifier, clock)
    return Runtime(settings, engine, sessions, hasher, policy, clock)
