"""The cloud side of `make sim`, on Python alone: an embedded MQTT broker (amqtt), the reference
cloud (worker + HTTP API) on SQLite, a demo store with one case and a few loyalty members.

Production and the tests use Mosquitto with per-case credentials (docs/cloud.md); the embedded
broker here lets anyone connect, which is fine on a developer's loopback and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from casecloud import registry
from casecloud.api import create_app
from casecloud.commands import Commander
from casecloud.models import Case, Member, SmsOutbox, Store
from casecloud.runtime import Runtime, build
from casecloud.settings import Settings
from casecloud.tasks import supervised
from sim.demo import CASE, MEMBERS, STORE
from sim.process import free_port


class DemoCloud:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker_port = free_port()
        self.api_port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.rt: Runtime | None = None
        self.secrets: registry.CaseSecrets | None = None
        self.app_tokens: dict[str, str] = {}
        self._server: uvicorn.Server | None = None
        self._tasks: list[Future[Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> DemoCloud:
        self.thread.start()
        self._run(self._start_broker(), wait=True)
        settings = Settings(data_dir=self.workdir / "cloud", mqtt_host="127.0.0.1", mqtt_port=self.broker_port,
                            api_host="127.0.0.1", api_port=self.api_port, log_level="WARNING")
        self.rt = rt = build(settings)
        self._seed(rt)
        # The tasks `python -m casecloud` runs (worker, retention, offline alerts), supervised the
        # same way, so the demo shows what the service does and its /healthz tells the truth.
        watch = supervised(rt, worker=True)
        for t in watch:
            self._tasks.append(self._run(t.run()))
        linked = [t.link for t in watch if t.link is not None]
        self._server = uvicorn.Server(uvicorn.Config(create_app(rt, Commander(rt), watch), host="127.0.0.1",
                                                     port=self.api_port, log_level="warning", lifespan="on"))
        self._tasks.append(self._run(self._server.serve()))
        deadline = time.monotonic() + 20
        while not (all(e.is_set() for e in linked) and self._server.started):
            if time.monotonic() > deadline:
                raise RuntimeError("the demo cloud did not start")
            time.sleep(0.05)
        return self

    def _run(self, coro: Any, wait: bool = False) -> Future[Any]:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if wait:
            fut.result(30)
        return fut

    async def _start_broker(self) -> None:
        from amqtt.broker import Broker

        self._broker = Broker({
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
        if self._server is not None:
            self._server.should_exit = True
        for t in self._tasks:
            t.cancel()
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

    def app_unlock(self, card: str) -> str:
        """Press "unlock" in the store app as the member owning this card."""
        r = httpx.post(f"http://127.0.0.1:{self.api_port}/v1/app/unlock",
                       json={"token": self.app_tokens[card], "case": CASE}, timeout=15)
        return f"app unlock: HTTP {r.status_code} {r.text[:60]}"
