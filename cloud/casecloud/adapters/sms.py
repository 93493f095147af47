"""Texting the one-time codes: an interface, the dev outbox, and Twilio."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, cast

import httpx
from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from casecloud import codec
from casecloud.models import SmsOutbox
from casecloud.privacy import Hasher, last2, mask

log = logging.getLogger("casecloud.sms")


class SmsError(Exception):
    pass


class SmsSender(Protocol):
    def send(self, to_e164: str, text: str) -> None:
        """Deliver or raise SmsError. `text` may hold a code: never log it."""
        ...


_OUTBOX = cast(Table, SmsOutbox.__table__).insert()


class OutboxSms:
    """Dev backend: the text goes to the sms_outbox table, addressed by the number's hash."""

    def __init__(
        self, sessions: sessionmaker[Session], hasher: Hasher, clock: Callable[[], float] = time.time
    ) -> None:
        self._sessions = sessions
        self._hasher = hasher
        self._clock = clock

    def send(self, to_e164: str, text: str) -> None:
        with self._sessions.begin() as s:  # a plain insert: the ORM's unit of work cost twice its statement
            s.execute(_OUTBOX, {"to_hash": self._hasher.phone(to_e164), "to_last2": last2(to_e164), "body": text,
                                "created_at": int(self._clock())})
        log.info("sms to %s queued in the dev outbox", mask(to_e164))


class TwilioSms:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        base_url: str = "https://api.twilio.com",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = f"{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._client = httpx.Client(auth=(account_sid, auth_token), timeout=10.0, transport=transport)
        self._from = sender

    def send(self, to_e164: str, text: str) -> None:
        try:
            r = self._client.post(self._url, data={"To": to_e164, "From": self._from, "Body": text})
        except httpx.HTTPError as e:
            raise SmsError(f"twilio unreachable: {type(e).__name__}") from None
        if r.status_code >= 300:
            # Twilio's error body names the number: keep only its error code.
            raise SmsError(f"twilio refused: HTTP {r.status_code} code {_error_code(r)}")
        log.info("sms to %s sent via twilio", mask(to_e164))


def _error_code(r: httpx.Response) -> object:
    """Twilio's error code from an error answer, or None: whatever the body holds (codec.parse, the
    parser for everything from outside), the failure stays an SmsError."""
    if not r.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = codec.parse(r.content, max_bytes=64 * 1024)
    except codec.Rejected:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if type(code) is int else None
