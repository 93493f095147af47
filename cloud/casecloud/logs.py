"""The cloud's logs: JSON, one event a line (structlog), for every `logging` call in casecloud.

The modules keep logging with the standard library (`logging.getLogger(...).info("case %s ...")`):
`setup` puts one handler on the root logger whose formatter is structlog's ProcessorFormatter, so
uvicorn's, SQLAlchemy's and our own records all come out the same way, one system:

    {"ts": "2026-12-02T03:00:00.123Z", "level": "info", "logger": "casecloud.worker",
     "event": "case c1 phone -> challenge", "case": "c1", "store": "s1", "req": "5f2a..."}

Ids: `case`, `store` and `req` come from the call's `extra=` (logs.ids), from the context
(`request_id` of the HTTP request being served, bound by `RequestIds`), or are read from a topic
(`lockcase/v1/<store>/<case>/<kind>`) among the arguments. A topic's own text names no person.

Never in a line: a phone number, a one-time code, a token, a key, a password, a session id. The
code logs none of them (numbers only masked, `…67`), and `redact` backs that up on the way out:
runs of 7 or more digits (a phone number in any form) and long hex or base64-like words (keys,
tokens, session ids, HMACs) are replaced, and so is the whole value of any field whose name says
secret (password, token, secret, key, cookie, authorization, session, code, phone). A six-digit
code is caught by its field only: a bare 6-digit number can be a count.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOPIC = re.compile(r"^[^/]+/v\d+/([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_-]{1,64})/[a-z]+$")
# A phone number (7+ digits, maybe with separators), or a long secret-looking word: hex of 24+,
# or 20+ characters of base64/url-safe alphabet holding both digits and letters.
_DIGITS = re.compile(r"(?<![\w.:])\+?\d[\d\s()-]{5,}\d(?![\w.])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# The safety net under the net: nine digits or more in one run, whatever stands around them (a
# trailing dot or letter, a "+" sent as %2B, dots or brackets between groups) are a number to hide,
# unless the run is a dotted IPv4 address or begins with a date.
_LONG_RUN = re.compile(r"\+?\d(?:[\s().-]{0,2}\d){8,}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_PLUS = re.compile(r"%2B", re.I)
_HEXISH = re.compile(r"\b[0-9a-fA-F]{24,}\b")
_TOKENISH = re.compile(r"(?<![\w/.-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{20,}={0,2}(?![\w/.-])")
_SECRET_FIELDS = re.compile(r"pass|token|secret|key|cookie|authori|session|sid|code|otp|phone|num|pin", re.I)
_OURS = frozenset({"ts", "level", "logger"})  # written here, never from input
_KEEP_FIELDS = frozenset({"ts", "level", "logger", "event", "case", "store", "req", "request_id", "exception",
                          "count", "status"})


def _mask_digits(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return m.group(0) if len(digits) < 7 or _DATE.fullmatch(m.group(0)) else "…" + digits[-2:]


def _mask_long_run(m: re.Match[str]) -> str:
    run = m.group(0)
    if _IPV4.fullmatch(run) or _DATE.match(run.lstrip("+")):
        return run
    return "…" + re.sub(r"\D", "", run)[-2:]


def scrub_text(text: str) -> str:
    """What a line must not carry, replaced: phone-like digit runs keep their last two digits."""
    text = _HEXISH.sub("[hex]", _PLUS.sub("+", text))  # hex first: its digit runs are not numbers
    text = _LONG_RUN.sub(_mask_long_run, text)  # before the 7-digit rule, which would take a part
    text = _DIGITS.sub(_mask_digits, text)
    return _TOKENISH.sub("[redacted]", text)


def redact(_logger: WrappedLogger, _name: str, ed: EventDict) -> EventDict:
    for k, v in list(ed.items()):
        if k in _OURS:
            continue
        if k not in _KEEP_FIELDS and _SECRET_FIELDS.search(k):
            ed[k] = "[redacted]"
        elif isinstance(v, str):
            ed[k] = scrub_text(v)
    return ed


def _ids_from_args(_logger: WrappedLogger, _name: str, ed: EventDict) -> EventDict:
    """`case` and `store` from a record's arguments, unless the call named them: from a topic
    among them, or the first one of a line that begins "case %s" (the code's habit for a line
    about one case) or "store %s"."""
    args = ed.pop("positional_args", None)
    if "case" in ed or not isinstance(args, tuple) or not args:
        return ed
    for a in args:
        if isinstance(a, str) and (m := _TOPIC.match(a)):
            ed.setdefault("store", m.group(1))
            ed["case"] = m.group(2)
            return ed
    record = ed.get("_record")
    fmt = getattr(record, "msg", None)
    if isinstance(fmt, str) and isinstance(args[0], str) and _ID.match(args[0]):
        for prefix, key in (("case %s", "case"), ("store %s", "store")):
            if fmt.startswith(prefix):
                ed.setdefault(key, args[0])
    return ed


def ids(case: str | None = None, store: str | None = None, req: Any = None) -> dict[str, Any]:
    """`extra=` for a stdlib logging call about a case, its store, a request."""
    out: dict[str, Any] = {}
    if case is not None:
        out["case"] = case
    if store is not None:
        out["store"] = store
    if isinstance(req, str):
        out["req"] = req[:40]
    return out


def formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(allow=("case", "store", "req")),
            _ids_from_args,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        ],
        pass_foreign_args=True,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # the traceback as text (no locals), redacted too
            redact,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )


def setup(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """JSON lines on `stream` (stderr) for every record at `level` and up; replaces the root
    logger's handlers (a second call, from a test, does not double the lines). Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_casecloud", False):
            root.removeHandler(h)
    handler._casecloud = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # What no line shows is not gathered for every record (the logging HOWTO's "Optimization"):
    # the caller's file, line and function (a walk up the stack), the thread, the process id and
    # name. A worker logs a line per decision: this was 4 of its 27 us.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # uvicorn's loggers keep no handlers of their own (log_config=None): theirs propagate here.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(), cache_logger_on_first_use=True)
    return handler


_REQ_ID = re.compile(r"^[A-Za-z0-9._-]{1,40}$")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIds:
    """ASGI middleware: each HTTP request gets an id (the proxy's `X-Request-ID` when it is a
    plain one, else a new one), bound into every line logged while it is served (uvicorn's access
    line too) and sent back in `X-Request-ID`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), "")
        rid = given if _REQ_ID.match(given) else secrets.token_hex(8)

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            await self.app(scope, receive, send_with_id)
