"""Where casectl's words go: results on stdout (a table, or one JSON document with --json),
progress and messages on stderr (none with --json), both through a redacting filter.

The filter is the second line of defence for secrets: casectl never formats a key, a broker
password or a Wi-Fi password into a message, and any secret it handles is registered here so that
even a message built from a device's or a library's text cannot show it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

MASK = "•••"
_SECRETS: set[str] = set()


def secret(value: str | None) -> None:
    """Register a value that must never be shown. Short values (a 4-digit PIN) are not filtered:
    masking every '1234' would garble sizes and times; they are never printed in the first place."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for s in sorted(_SECRETS, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


class _Redacting:
    """A text stream wrapper for rich consoles."""

    def __init__(self, stream: IO[str]) -> None:
        self._s = stream

    def write(self, text: str) -> int:
        return self._s.write(redact(text))

    def flush(self) -> None:
        self._s.flush()

    def isatty(self) -> bool:
        return self._s.isatty()

    def fileno(self) -> int:
        return self._s.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._s, "encoding", "utf-8")


class Out:
    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = Console(file=_Redacting(sys.stdout), highlight=False)  # type: ignore[arg-type]
        self.err = Console(file=_Redacting(sys.stderr), highlight=False, stderr=True)  # type: ignore[arg-type]

    def info(self, msg: str) -> None:
        if not self.json_mode:
            self.err.print(msg)

    def document(self, obj: Any) -> None:
        sys.stdout.write(redact(json.dumps(obj, indent=1, default=str)) + "\n")
        sys.stdout.flush()

    def line(self, obj: Any) -> None:
        sys.stdout.write(redact(json.dumps(obj, default=str)) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, transfer: bool = False) -> Iterator[Progress]:
        cols: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if transfer:
            cols += [BarColumn(), DownloadColumn(), TransferSpeedColumn()]
        else:
            cols += [BarColumn(), TextColumn("{task.completed}/{task.total}")]
        cols.append(TimeElapsedColumn())
        with Progress(*cols, console=self.err, transient=True,
                      disable=self.json_mode or not self.err.is_terminal) as p:
            yield p
