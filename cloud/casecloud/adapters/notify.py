"""Telling store staff: alerts POSTed to the store's webhook, signed, retried with backoff.

The alert row in the database is the record; a delivery is retried with exponential backoff and
full jitter (tenacity) for a bounded number of tries and time, and how it went is written on the
row. The body is signed so the store's receiver can tell it came from this cloud and is fresh:

    X-LockCase-Timestamp: <epoch seconds>
    X-LockCase-Signature: sha256=<hex HMAC-SHA256(notify secret, timestamp + "." + body)>

(docs/cloud.md shows a receiver's check.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger("casecloud.notify")

SIGNATURE = "X-LockCase-Signature"
TIMESTAMP = "X-LockCase-Timestamp"
Message = dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int = 0
    error: str | None = None
    # not ok and the receiver did not answer or failed (network, timeout, 5xx, 408, 429) through
    # every try: the store's next alerts would most likely fail too
    unreachable: bool = False


class Notifier(Protocol):
    def notify(self, url: str | None, message: Message) -> Delivery:
        """Deliver one alert (may block while it retries). `message` never holds personal data."""
        ...


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp` (what a receiver recomputes)."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _Retry(Exception):
    """A failure worth trying again: the network, a 5xx, 408 or 429."""


class _GiveUp(Exception):
    """The receiver refused the alert (another 4xx): the same body would be refused again."""


class WebhookNotifier:
    def __init__(self, secret: bytes, *, attempts: int = 6, backoff_s: float = 1.0, max_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._client = httpx.Client(timeout=5.0, transport=transport)
        self._clock = clock
        self._attempts, self._backoff_s, self._max_s = attempts, backoff_s, max_s

    def notify(self, url: str | None, message: Message) -> Delivery:
        if not url:
            log.warning("store alert %s (no notify_url set): not delivered", message.get("kind"))
            return Delivery(False, 0, "no notify_url")
        body = json.dumps(message, separators=(",", ":"), sort_keys=True).encode()
        tries = 0
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._max_s),
            wait=wait_random_exponential(multiplier=self._backoff_s, max=max(self._max_s / 4, self._backoff_s)),
            retry=retry_if_exception_type(_Retry), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    tries += 1
                    self._post(url, body)
        except (_Retry, _GiveUp) as e:
            log.warning("store alert %s not delivered after %d tries: %s", message.get("kind"), tries, e)
            return Delivery(False, tries, str(e)[:200], unreachable=isinstance(e, _Retry))
        return Delivery(True, tries)

    def _post(self, url: str, body: bytes) -> None:
        ts = str(int(self._clock()))  # signed anew per try: a receiver may refuse stale timestamps
        headers = {"content-type": "application/json", TIMESTAMP: ts, SIGNATURE: sign(self._secret, ts, body)}
        try:
            r = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise _Retry(type(e).__name__) from None
        if r.status_code < 300:
            return
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise _Retry(f"HTTP {r.status_code}")
        raise _GiveUp(f"HTTP {r.status_code}")


class RecordingNotifier:
    """Keeps messages in memory (tests, and the simulator's console)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, Message]] = []

    def notify(self, url: str | None, message: Message) -> Delivery:
        self.sent.append((url, message))
        return Delivery(True, 1)
