"""Telling store staff: help calls and abuse alerts, POSTed to the store's webhook if it has one.

The alert row in the database is the record; delivery is best effort and marked on the row.
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

log = logging.getLogger("casecloud.notify")


class Notifier(Protocol):
    def notify(self, url: str | None, message: dict[str, str | int | None]) -> bool:
        """True when delivered. `message` never holds personal data."""
        ...


class WebhookNotifier:
    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(timeout=5.0, transport=transport)

    def notify(self, url: str | None, message: dict[str, str | int | None]) -> bool:
        if not url:
            log.warning("store alert (no notify_url set): %s", message)
            return False
        try:
            r = self._client.post(url, json=message)
        except httpx.HTTPError as e:
            log.warning("store alert not delivered: %s", type(e).__name__)
            return False
        if r.status_code >= 300:
            log.warning("store alert not delivered: HTTP %s", r.status_code)
            return False
        return True


class RecordingNotifier:
    """Keeps messages in memory (tests, and the simulator's console)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, dict[str, str | int | None]]] = []

    def notify(self, url: str | None, message: dict[str, str | int | None]) -> bool:
        self.sent.append((url, message))
        return True
