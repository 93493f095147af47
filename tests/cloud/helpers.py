"""Small helpers shared by the cloud tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from casecloud.accounts import passwords, tokens, users
from casecloud.models import ApiToken, Case, SmsOutbox, Store, User
from casecloud.runtime import Runtime


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def wait_listening(proc: subprocess.Popen[Any], port: int, timeout: float, exited: Callable[[], str],
                   name: str = "mosquitto") -> None:
    """Until a started server accepts connections on 127.0.0.1:port; RuntimeError (with what
    `exited()` says) if the process ends first, or when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(exited())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start listening") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Loop:
    """An asyncio loop in a thread, for the service's coroutines beside synchronous test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[Any] = []

    def start(self, coro: Any) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self.tasks.append(fut)
        return fut

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        time.sleep(0.1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)



def texted_code(rt: Runtime) -> str:
    with rt.sessions() as s:
        row = s.scalars(select(SmsOutbox).order_by(SmsOutbox.id.desc())).first()
        assert row is not None
        m = re.search(r"\b(\d{6})\b", row.body)
        assert m
        return m.group(1)


@contextlib.contextmanager
def ctx(rt: Runtime, case_id: str = "c1") -> Iterator[tuple[Session, Store, Case]]:
    """A transaction with the case and its store, for calling the policy directly."""
    with rt.sessions.begin() as s:
        case = s.get(Case, case_id)
        assert case is not None
        store = s.get(Store, case.store_id)
        assert store is not None
        yield s, store, case


HQ_EMAIL, HQ_PASSWORD = "hq@tests.invalid", "tests hq passphrase"


@functools.cache
def _hq_hash() -> str:
    return passwords.hash_password(HQ_PASSWORD)  # once per process: argon2 takes ~0.2 s


def seed_hq(rt: Runtime, token: str = "test-admin-token") -> str:
    """An HQ user and an hq API token of exactly this value, for the tests that drive the admin
    API as HQ does (the settings' admin token only bootstraps the first HQ user: docs/accounts.md).
    A chosen value, so the tests' `Authorization` headers stay constants. Returns the user's id;
    calling it again adds only a token not seeded yet."""
    with rt.sessions.begin() as s:
        u = users.by_email(s, HQ_EMAIL)
        if u is None:
            u = User(id="u_tests_hq", email=HQ_EMAIL, display_name="HQ (tests)", password_hash=_hq_hash(),
                     role="hq", created_at=rt.now())
            s.add(u)
            s.flush()
        digest = tokens.digest(token)
        if s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first() is None:
            s.add(ApiToken(id="t_" + digest[:12], token_hash=digest, hint=token[:8], name="tests", created_by=u.id,
                           role="hq", created_at=rt.now()))
        return u.id
