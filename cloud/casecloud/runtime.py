"""Wires settings, database, adapters and policy together: the one place that picks backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from casecloud import db, durability, keyring
from casecloud.adapters.loyalty import BuiltinLoyalty, Loyalty, WebhookLoyalty
from casecloud.adapters.notify import Notifier, WebhookNotifier
from casecloud.adapters.sms import OutboxSms, SmsSender, TwilioSms
from casecloud.durability import WalSync
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
    # The worker's batch transactions (batch.py): on SQLite their own connections, which commit
    # without waiting for the disk and sync the WAL through `wal` (durability.py); else `sessions`.
    batch_sessions: sessionmaker[Session]
    wal: WalSync | None = None
    # A message (but a hello or an unsynced beat) whose exp is at most this may have been signed
    # before an OS crash lost the commit that accepted it: refused (durability.py).
    replay_floor: int = 0

    def now(self) -> int:
        return int(self.clock())

    def close(self) -> None:
        """Close every database connection this runtime opened."""
        if self.wal is not None:
            self.wal.close()
        if self.batch_sessions is not self.sessions:
            bind = self.batch_sessions.kw.get("bind")
            if isinstance(bind, Engine):
                bind.dispose()
        self.engine.dispose()


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
    kr = Keyring(settings.kek_bytes())
    sessions = db.make_sessions(engine, kr)
    batch_sessions, wal, replay_floor = sessions, None, 0
    try:
        with sessions.begin() as s:
            keyring.seal_legacy(s)  # keys from before sealing: sealed before anything reads them
            keyring.check(s)  # the wrong key-encryption keys: said at start, not by every message
        path, boot = durability.sqlite_path(settings.db_url), durability.boot_id()
        if path is not None and boot is not None:
            # before anything is served: what an OS crash may have lost is undone first
            replay_floor = durability.recover(sessions, path, int(clock()), boot)
            batch_sessions = db.make_sessions(db.make_engine(settings.db_url, synchronous="NORMAL"), kr)
            wal = durability.WalSync(path)
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
    return Runtime(settings, engine, sessions, hasher, policy, clock, batch_sessions, wal, replay_floor)
