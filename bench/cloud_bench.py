"""Cloud figures for `make bench` (issue: cloud unlocks), on loopback with a real Mosquitto:

- tap-to-open latency: a trusted member's card presented to the sim case -> request signed and
  sent -> broker -> cloud worker -> signed allow -> coil energized, from the firmware's own
  timestamps (ms), p50/p95/p99 over N unlocks;
- cloud throughput: many light simulated cases (the firmware codec under CPython, paho-mqtt),
  each sending token verifications back to back; verifications answered per second and p99.
"""

from __future__ import annotations

import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from casecloud import registry
from casectl.simproc import SimCase
from tests.cloud.fakecase import FakeCase
from tests.e2e.conftest import cloud_env

NO_LIMITS = {"rate_member": 10**9, "rate_case": 10**9, "rate_store": 10**9, "rate_phone": 10**9}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 1)


def tap_to_open(n: int = 200) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d, cloud_env(Path(d), ("c1",), **NO_LIMITS) as env:
        with env.rt.sessions.begin() as s:
            registry.create_member(s, env.rt.hasher, env.rt.now(), card="04a1b2c3d4", status="trusted")
        cfg = env.case_config(unlock_ms=500, pull_in_ms=100, duty_budget_ms=60000, duty_window_s=10)
        with SimCase(Path(d) / "case", cfg, heap="512k") as case:
            cl = case.client()
            cl.wait_for(lambda s: s["cloud"] and s["cloud"]["synced"], timeout=20, what="synced")
            cl.call("watch")
            lat: list[float] = []
            for _ in range(n):
                t0 = cl.call("tap", uid="04a1b2c3d4", src="nfc")["t"]
                while True:
                    m = cl.stream.get(timeout=10)
                    if m.get("ev") == "out" and m["name"] == "lock" and m["value"]:
                        lat.append(m["t"] - t0)
                        break
                # Open and close the door: the coil drops and the case is ready for the next tap.
                cl.call("door", open=True)
                cl.wait_for(lambda s: s["lock"] == "open", what="open")
                cl.call("door", open=False)
                cl.wait_for(lambda s: s["lock"] == "locked", what="closed")
                while not cl.stream.empty():
                    cl.stream.get_nowait()
            cl.close()
    return {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
            "max_ms": max(lat)}


def throughput(cases: int = 40, seconds: float = 10.0) -> dict[str, Any]:
    ids = tuple(f"t{i}" for i in range(cases))
    with tempfile.TemporaryDirectory() as d, cloud_env(Path(d), ids, **NO_LIMITS) as env:
        with env.rt.sessions.begin() as s:
            registry.create_member(s, env.rt.hasher, env.rt.now(), card="0badge01", status="trusted")
        fakes = [FakeCase(env.host, env.port, "s1", c, bytes.fromhex(env.secrets[c].key_hex),
                          username=env.secrets[c].mqtt_username, password=env.secrets[c].mqtt_password)
                 for c in ids]
        for f in fakes:
            f.hello()
        lat: queue.Queue[float] = queue.Queue()
        errors: list[str] = []
        stop = time.monotonic() + seconds

        def run(f: FakeCase) -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                body, _ = f.send("req", {"t": "token", "tok": "0badge01", "src": "nfc"})
                try:
                    rep = f.expect("rep", re=body["id"], timeout=10)
                except TimeoutError as e:
                    errors.append(str(e))
                    return
                if rep["t"] != "allow":
                    errors.append(rep["t"])
                lat.put((time.perf_counter() - t0) * 1000)

        t_start = time.monotonic()
        threads = [threading.Thread(target=run, args=(f,)) for f in fakes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start
        for f in fakes:
            f.close()
    xs = list(lat.queue)
    return {"cases": cases, "verifications": len(xs), "per_second": round(len(xs) / elapsed, 1),
            "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "mean_ms": round(statistics.mean(xs), 1),
            "errors": len(errors)}


if __name__ == "__main__":
    print("tap-to-open", tap_to_open(50))
    print("throughput", throughput(20, 5))
