"""NFC figures for `make bench` (issue: NFC reader): tap-to-open latency through the real PN532
driver and the emulated PN532 of the sim board, from the card presented on the control socket to
the coil energized, both read off the sim's own clock (ms), p50/p95/p99 over N taps:

- a staff badge, checked on the case (PBKDF2 against the hashed badge list);
- a trusted member's loyalty card, asked of the cloud worker through Mosquitto.

Each is measured with P70_IRQ wired (the reader waits on the IRQ line while the chip looks for a
card: keys without a prefix) and without it (config nfc.irq false: the reader polls adaptively,
every 20 ms or as its bus share allows, on the sim's modelled 100 kHz I2C: keys prefixed noirq_),
with the reader's share of the loop (per mille of the time it held the loop on the bus, modelled
from the bytes it moved, while idle) as share_pm.
"""

from __future__ import annotations

import queue
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cloud_bench import NO_LIMITS, pct
from casecloud import registry
from lockcase import creds
from sim.demo import demo_config
from sim.process import SimCase, SimClient
from tests.e2e.conftest import cloud_env

BADGE = "04aabbcc"
MEMBER_CARD = "04a1b2c3d4e5f6"
FAST = {"unlock_ms": 500, "pull_in_ms": 100, "duty_budget_ms": 60000, "duty_window_s": 10}


def _taps(cl: SimClient, uid: str, n: int) -> list[float]:
    cl.call("watch")
    lat: list[float] = []
    last = 0.0
    for _ in range(n):
        # The loop below ends right after a poll; a random pause puts the tap anywhere in the
        # poll period, as a shopper's would be. Taps stay 0.4 s apart at least: the lock refuses
        # more than 32 grants in one duty window (10 s here) as abuse.
        time.sleep(random.uniform(0, 0.25) + max(0.0, last + 0.4 - time.monotonic()))
        last = time.monotonic()
        t0 = cl.call("card", uid=uid)["t"]
        deadline = time.monotonic() + 15
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tap {len(lat) + 1} did not open; state {cl.state()}")
            try:
                m = cl.stream.get(timeout=1)
            except queue.Empty:
                continue
            if m.get("ev") == "out" and m["name"] == "lock" and m["value"]:
                lat.append(m["t"] - t0)
                break
            if m.get("ev") == "event" and m.get("type") in ("duty_limited", "denied"):
                raise RuntimeError(f"tap {len(lat) + 1} did not open: {m}")
        # Door open and shut drops the coil; the card leaves so the next tap is a new one.
        cl.call("door", open=True)
        cl.wait_for(lambda s: s["lock"] == "open", what="open")
        cl.call("door", open=False)
        cl.call("remove")
        cl.wait_for(lambda s: s["lock"] == "locked" and s["nfc"]["state"] == "idle", what="ready")
        while not cl.stream.empty():
            cl.stream.get_nowait()
    return lat


def _figures(lat: list[float], share_pm: int, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}n": len(lat), f"{prefix}p50_ms": pct(lat, 50), f"{prefix}p95_ms": pct(lat, 95),
            f"{prefix}p99_ms": pct(lat, 99), f"{prefix}max_ms": max(lat), f"{prefix}share_pm": share_pm}


def _idle_share(cl: SimClient) -> int:
    # The reader's smoothed share after a second with no card on the antenna.
    time.sleep(1.0)
    return int(cl.state()["nfc"]["share_pm"])


def _staff_badge(n: int, irq: bool) -> tuple[list[float], int]:
    cfg = demo_config()
    cfg.update(FAST, nfc={"driver": "pn532", "bus": "i2c", "irq": irq})
    cfg["staff"]["badges"] = [{"id": "b1", "hash": creds.hash_badge(BADGE, cfg["staff"]["salt"], 1000)}]
    with tempfile.TemporaryDirectory() as d, SimCase(Path(d) / "case", cfg) as case:
        cl = case.client()
        cl.wait_for(lambda s: s["nfc"]["state"] == "idle", what="reader up")
        share = _idle_share(cl)
        lat = _taps(cl, BADGE, n)
        cl.close()
    return lat, share


def _loyalty_card(n: int, irq: bool) -> tuple[list[float], int]:
    with tempfile.TemporaryDirectory() as d, cloud_env(Path(d), ("c1",), **NO_LIMITS) as env:
        with env.rt.sessions.begin() as s:
            registry.create_member(s, env.rt.hasher, env.rt.now(), card=MEMBER_CARD, status="trusted")
        cfg = env.case_config()
        cfg.update(FAST, nfc={"driver": "pn532", "bus": "i2c", "irq": irq})
        with SimCase(Path(d) / "case", cfg) as case:
            cl = case.client()
            cl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"] and s["nfc"]["state"] == "idle",
                        timeout=20, what="synced, reader up")
            share = _idle_share(cl)
            lat = _taps(cl, MEMBER_CARD, n)
            cl.close()
    return lat, share


def staff_badge(n: int = 120) -> dict[str, Any]:
    return {**_figures(*_staff_badge(n, True)), **_figures(*_staff_badge(n, False), prefix="noirq_")}


def loyalty_card(n: int = 120) -> dict[str, Any]:
    return {**_figures(*_loyalty_card(n, True)), **_figures(*_loyalty_card(n, False), prefix="noirq_")}


if __name__ == "__main__":
    print("staff badge", staff_badge(100))
    print("loyalty card", loyalty_card(100))
