"""The cloud side of `make sim`, on Python alone: an embedded MQTT broker (amqtt), the reference
cloud (worker + HTTP API) on SQLite, a demo store with one case and a few loyalty members.

Production and the tests use Mosquitto with per-case credentials (docs/cloud.md); the embedded
broker here lets anyone connect, which is fine on a developer's loopback and nowhere else.

The cloud logs through `logging` and never prints: whoever runs it decides where the lines go
(`make sim` sends them to a file, since the terminal is the case's screen).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from amqtt.broker import Broker
from amqtt.session import Session
from sqlalchemy import select

from casecloud import registry
from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Case, Member, SmsOutbox, Store
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.tasks import supervised
from sim.demo import CASE, MEMBERS, STORE
from sim.process import free_port, write_private


class SpecBroker(Broker):
    """amqtt's broker, with retained messages sent only to the subscriptions that match them.

    amqtt 0.12.1 sends a client that connects every retained message matching any filter that
    any client holds (broker.py, _handle_client_session: "for topic in self._subscriptions"),
    whether or not that client subscribed to it. So a sim case that reset got its own retained
    presence ("offline", its Last Will) on connecting, as a message on a topic it never
    subscribed to, and logged `cloud: dropped message: bad_json`, once for each filter of the
    cloud's that covers presence. MQTT 3.1.1 (3.3.1.3) gives a retained message to a
    subscription matching its topic, as Mosquitto does: this session's own subscriptions only.
    """

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        holders = self._subscriptions.get(subscription[0], [])
        if any(held.client_id == session.client_id for held, _qos in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


HQ_EMAIL = "hq@demo-store.example"  # the demo's HQ account, where the cloud has accounts
# One demo account a role below HQ, of the demo store, so a newcomer can watch the console as an
# associate or a manager would (docs/accounts.md).
STAFF_ACCOUNTS = (("associate", "associate@demo-store.example"), ("manager", "manager@demo-store.example"))


class DemoCloud:
    """The demo cloud, anew every run (`workdir`/cloud: the case is provisioned anew too)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker_port = free_port()
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        # The bearer token for the API, in a file of its own, so that `casectl status` and curl can
        # take it from there (CASECTL_TOKEN_FILE, `-H "Authorization: Bearer $(cat ...)"`).
        self.token_file = workdir / "api-token"
        # The demo accounts' logins (role, email, password a line), for the console.
        self.login_file = workdir / "console-logins"
        self.logins: list[tuple[str, str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.rt: Runtime | None = None
        self.secrets: registry.CaseSecrets | None = None
        self.app_tokens: dict[str, str] = {}
        self._server: uvicorn.Server | None = None
        self._serving: Future[Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> DemoCloud:
        shutil.rmtree(self.workdir / "cloud", ignore_errors=True)
        self.thread.start()
        self._run(self._start_broker(), wait=True)
        settings = Settings(data_dir=self.workdir / "cloud", mqtt_host="127.0.0.1", mqtt_port=self.broker_port,
                            api_host="127.0.0.1", api_port=self.api_port, log_level="WARNING",
                            cookie_secure=False)  # plain HTTP on loopback: a Secure cookie would never come back
        self.rt = rt = build(settings)
        self._seed(rt)
        # The tasks `python -m casecloud` runs (worker, retention, offline alerts), supervised the
        # same way, so the demo shows what the service does and its /healthz tells the truth.
        watch = supervised(rt, worker=True)
        self._tasks = [self._spawn(t.run()) for t in watch]
        linked = [t.link for t in watch if t.link is not None]
        # log_config=None: uvicorn adds no handler of its own to the terminal; its lines go wherever
        # the process's logging goes.
        self._server = uvicorn.Server(uvicorn.Config(create_app(rt, Commander(rt), watch), host="127.0.0.1",
                                                     port=self.api_port, log_level="warning", log_config=None,
                                                     lifespan="on"))
        self._serving = self._run(self._server.serve())
        deadline = time.monotonic() + 20
        while not (all(e.is_set() for e in linked) and self._server.started):
            if time.monotonic() > deadline:
                raise RuntimeError("the demo cloud did not start")
            time.sleep(0.05)
        write_private(self.token_file, self._api_access() + "\n")
        return self

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        async def spawn() -> asyncio.Task[Any]:
            return asyncio.get_running_loop().create_task(coro)

        return self._run(spawn(), wait=True).result()

    def _run(self, coro: Any, wait: bool = False) -> Future[Any]:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if wait:
            fut.result(30)
        return fut

    async def _start_broker(self) -> None:
        self._broker = SpecBroker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.broker_port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        })
        await self._broker.start()

    def _seed(self, rt: Runtime) -> None:
        with rt.sessions.begin() as s:
            if s.get(Store, STORE) is None:
                registry.create_store(s, STORE, rt.now(), name="Demo store", country="US")
            # A fresh key every run: the sim case is provisioned anew each time too.
            if s.get(Case, CASE) is None:
                _, self.secrets = registry.register_case(s, STORE, CASE, rt.now(), name="Razors, aisle 7")
            else:
                _, self.secrets = registry.rotate_case(s, CASE)
            for _label, card, phone, status in MEMBERS:
                h = rt.hasher
                existing = s.scalars(select(Member).where(Member.card_hash == h.token(card))).first()
                if existing is not None:
                    s.delete(existing)
                    s.flush()
                _, self.app_tokens[card] = registry.create_member(s, h, rt.now(), card=card, phone=phone,
                                                                  status=status)

    def stop(self) -> None:
        # In order, each to its end: the API (its lifespan closes), the cloud's tasks, the broker,
        # and only then the loop (a loop stopped under running tasks leaves them half-closed).
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                self._serving.result(10)

        async def cancel(tasks: list[asyncio.Task[Any]]) -> None:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._run(cancel(self._tasks), wait=True)
        with contextlib.suppress(Exception):
            self._run(self._broker.shutdown(), wait=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if self.rt is not None:
            self.rt.engine.dispose()

    # -- what the sim shows and does ------------------------------------------------------------
    def case_cloud_config(self) -> dict[str, Any]:
        assert self.secrets is not None
        return {"host": "127.0.0.1", "port": self.broker_port, "user": self.secrets.mqtt_username,
                "password": self.secrets.mqtt_password, "key": self.secrets.key_hex, "keepalive": 15}

    def outbox(self, n: int = 4) -> list[str]:
        """The dev SMS outbox, newest first: 'to ...67: Your LockCase code is 123456'."""
        assert self.rt is not None
        with self.rt.sessions() as s:
            rows = s.scalars(select(SmsOutbox).order_by(SmsOutbox.id.desc()).limit(n)).all()
            return [f"to ********{r.to_last2}: {r.body}" for r in rows]

    def _api_access(self) -> str:
        """The bearer token a newcomer calls the admin API with, got as an operator gets one: the
        cloud's admin token only creates the first HQ account, here with an hq API token
        (docs/accounts.md). Its login, and those of an associate and a manager of the demo store, go to
        `login_file` and `logins`, for the console."""
        assert self.rt is not None
        admin = self.rt.settings.admin_bearer()
        password = secrets.token_urlsafe(16)
        r = httpx.post(f"{self.api_url}/v1/bootstrap/hq-user", headers={"Authorization": f"Bearer {admin}"},
                       json={"email": HQ_EMAIL, "password": password, "display_name": "Demo HQ",
                             "token_name": "make sim"}, timeout=15)
        if r.status_code != 201:
            raise RuntimeError(f"the demo cloud's HQ account: HTTP {r.status_code} {r.text[:200]}")
        self.logins = [("hq", HQ_EMAIL, password)]
        from casecloud.accounts import users

        with self.rt.sessions.begin() as s:
            for role, email in STAFF_ACCOUNTS:
                pw = secrets.token_urlsafe(16)
                users.create(s, self.rt.now(), email=email, password=pw, role=role, display_name=f"Demo {role}",
                             stores=(STORE,))
                self.logins.append((role, email, pw))
        write_private(self.login_file, "".join(f"{role} {email} {pw}\n" for role, email, pw in self.logins))
        return r.json()["token"]["token"]

    def app_unlock(self, card: str) -> str:
        """Press "unlock" in the store app as the member owning this card; what came of it, in words."""
        try:
            r = httpx.post(f"{self.api_url}/v1/app/unlock", json={"token": self.app_tokens[card], "case": CASE},
                           timeout=15)
        except httpx.HTTPError as e:
            return f"app unlock: no answer from the cloud ({type(e).__name__})"
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 200 and body.get("ok"):
            return f"app unlock: the case opened (grant {body.get('grant', '?')})"
        why = body.get("err") or body.get("detail") or r.reason_phrase
        return f"app unlock refused (HTTP {r.status_code}): {why}"
