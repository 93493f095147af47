"""Over-the-air update figures, the case's side (issue 13, docs/ota.md).

- time to update one sim case over loopback: a sim release (the deploy build, signed as
  `casectl release build` does) published to the reference cloud and rolled out to the case;
  from the cloud's `fw` command to the release confirmed, split into the first chunk request to
  the switch (download and checks, seen on the case's console) and the switch to the release
  confirmed (the reboot, the greeting answered); at the default pace (250 ms between chunk
  requests) and at 20 ms; a chunk's time, and of that the time from the case's fwget to the
  cloud's fwdata as the broker sees them (the cloud's worker); bytes on the wire (every MQTT payload to and from the case meanwhile, seen by a spy on
  the broker) against the release's own bytes;
- the signature check on the 32-bit MicroPython (a chip's object sizes) from the .mpy build:
  time for an esp32s3 release's manifest, and the heap it needs: the smallest `-X heapsize` the
  check completes in, less that of the same script without it;
- the download's heap on the 32-bit port the same way: a real release's files fetched chunk by
  chunk from a stand-in cloud, streamed to a directory and hashed; and the longest step of it
  (one `step()` or one chunk's `reply()`), what a key pressed meanwhile waits at most.

`python bench/ota_bench.py` prints them; bench/run.py adds them to build/bench.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "firmware"), str(REPO / "host_tools")]

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from casectl import release as crel  # noqa: E402
from casectl.build import compile_board  # noqa: E402
from tests.conftest import micropython32_binary  # noqa: E402

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUB = crel.public_hex(KEY)


# -- over loopback ------------------------------------------------------------------------------
def _spy(host: str, port: int, counts: dict[str, int], rtt: list[float], seen: dict[str, float]) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.e2e.conftest import SERVICE_PASSWORD, SERVICE_USER

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SERVICE_USER)
    c.username_pw_set(SERVICE_USER, SERVICE_PASSWORD)
    lock = threading.Lock()
    asked: dict[str, float] = {}

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        t = time.perf_counter()
        kind = msg.topic.rsplit("/", 1)[-1]
        with lock:
            counts[kind] = counts.get(kind, 0) + len(msg.payload)
            counts["messages"] = counts.get("messages", 0) + 1
            if kind in ("req", "rep", "cmd"):
                body = json.loads(json.loads(msg.payload)["p"])
                seen.setdefault(body.get("t"), t)  # the first of each type
                if body.get("t") == "fwget":
                    asked[body["id"]] = t
                elif body.get("t") == "fwdata" and body["re"] in asked:
                    rtt.append(t - asked.pop(body["re"]))  # the broker and the cloud's worker

    def on_connect(cl: Any, *_a: Any) -> None:
        cl.subscribe("lockcase/v1/s1/c1/#", qos=1)

    c.on_message = on_message
    c.on_connect = on_connect
    c.connect(host, port)
    c.loop_start()
    return c


def update_over_loopback(pace_ms: int) -> dict[str, Any]:
    """The release is published and rolled out before the case boots, so the cloud's `fw` answers
    its hello at once (a case already online gets it with its next beat, up to 60 s later): the
    clock starts at that `fw` command, as the broker sees it."""
    from casecloud.models import Rollout
    from casecloud.releases import rollout, store
    from sim.process import SimCase
    from tests.e2e.conftest import cloud_env

    r = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
    size = len(r.manifest) + sum(len(b) for b in r.files.values())
    with tempfile.TemporaryDirectory() as d, \
            cloud_env(Path(d), cases=("c1",), release_keys=[PUB], rollout_check_every_s=0.5) as env:
        with env.rt.sessions.begin() as s:
            store.create(s, r.manifest, r.sig, [PUB], env.rt.now(), "bench")
            for i, (path, _, _) in enumerate(r.doc["files"]):
                store.put_file(s, "sim-0.2.0", i, r.files[path])
            rollout.create(s, "sim-0.2.0", rollout.Target(case="c1"), env.rt.now(), "bench")
        counts: dict[str, int] = {}
        rtt: list[float] = []
        seen: dict[str, float] = {}
        spy = _spy(env.host, env.port, counts, rtt, seen)
        time.sleep(0.5)

        def state() -> str:
            with env.rt.sessions.begin() as s:
                ro = s.query(Rollout).one()
                st: str = rollout.summary(s, ro, cases=True)["cases"][0]["state"]
                return st

        ota = {"pace_ms": pace_ms, "boots": 3, "confirm_s": 600}
        with SimCase(Path(d) / "case", env.case_config(ota_key=PUB, ota=ota), heap="512k") as case:
            switch = None
            deadline = time.perf_counter() + 600
            while True:
                st = state()
                # staged and switching reach the cloud with the confirmation, after the reset: the
                # switch is seen on the case's console
                if switch is None and "ota: reset to switch firmware" in case.console():
                    switch = time.perf_counter()
                if st == "confirmed":
                    break
                if st in ("failed", "refused", "rolled_back") or time.perf_counter() > deadline:
                    raise RuntimeError(f"update ended {st}: {case.console()[-2000:]}")
                time.sleep(0.05)
            done = time.perf_counter()
        spy.loop_stop()
        spy.disconnect()
    wire = counts.get("rep", 0) + counts.get("req", 0)
    chunks = sum((n + 511) // 512 for n in [len(r.manifest), *(len(b) for b in r.files.values())])
    t0 = seen.get("fw", done)
    switch = switch or done
    download = switch - seen.get("fwget", t0)
    return {"pace_ms": pace_ms, "fw_cmd_to_confirmed_s": round(done - t0, 1),
            "first_fwget_to_switch_s": round(download, 1), "switch_to_confirmed_s": round(done - switch, 1),
            "chunks": chunks, "ms_per_chunk": round(download * 1000 / chunks),
            "cloud_ms_per_chunk_median": round(statistics.median(rtt) * 1000, 1) if rtt else None,
            "cloud_ms_per_chunk_p90": round(sorted(rtt)[int(len(rtt) * 0.9)] * 1000, 1) if rtt else None,
            "release_bytes": size, "chunk_bytes_on_wire": wire, "overhead": round(wire / size, 2),
            "all_bytes_to_and_from_case": sum(v for k, v in counts.items() if k != "messages"),
            "messages": counts.get("messages", 0)}


# -- on the 32-bit port --------------------------------------------------------------------------
_VERIFY = """
import gc, time, sys
with open('pub') as f: pub = bytes.fromhex(f.read())
with open('sig') as f: sig = bytes.fromhex(f.read())
MODE = sys.argv[1]
gc.collect()
if MODE == 'verify':
    from lockcase.ota import ed25519
    def chunks():
        with open('manifest', 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    return
                yield b
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.ticks_ms()
        ok = ed25519.run(ed25519.verify_steps(pub, sig, chunks()))
        times.append(time.ticks_diff(time.ticks_ms(), t))
        assert ok
    print('MS', times)
print('OK')
"""

_DOWNLOAD = """
import gc, sys, os, json, binascii
os.chdir(sys.argv[2])
MODE = sys.argv[1]
R = sys.argv[3]

class Lock:
    state = 'locked'
    def door_open(self): return False
    def alarms(self): return False
class Entry:
    state = 'idle'
class Bus:
    def __init__(self): self.n = 0
    def emit(self, kind, **d): self.n += 1
class Link:
    up = True
    def __init__(self): self.sent = None
    def publish(self, topic, payload):
        self.sent = payload
        return True
class Codec:
    n = 0
    def sign(self, topic, body):
        Codec.n += 1
        body['id'] = 'm%d' % Codec.n
        return json.dumps(body)
class Client:
    greeted = True
    app = None
    _pending = None
    _held = None
    def __init__(self):
        self.lock = Lock(); self.entry = Entry(); self.bus = Bus(); self.link = Link(); self.codec = Codec()
        self.topics = {'req': 'r'}
    def available(self): return True
    def uptime(self): return 0
class Board:
    NAME = 'sim'
    def reset(self, why): pass
with open(R + '/index') as f:
    NAMES = f.read().split()
gc.collect()
if MODE == 'download':
    from lockcase.ota.update import Ota
    c = Client()
    ota = Ota(c, Board())
    with open(R + '/manifest.sig') as f:
        sig = f.read().strip()
    size = os.stat(R + '/manifest.json')[6]
    assert ota.command({'rel': 'sim-0.2.0', 'size': size, 'sig': sig}, 0) == (True, None)
    buf = bytearray(512)
    now = 0
    peak = 0
    steps = None  # each step's time (us), only when timed (a list is heap)
    if len(sys.argv) > 4:
        from time import ticks_us, ticks_diff
        steps = []
        writes = []
    while ota.dl.get('st') != 'staged':
        now += 300
        if steps is None:
            assert ota.step(now)
        else:
            t0 = ticks_us()
            assert ota.step(now)
            steps.append(ticks_diff(ticks_us(), t0))
        p = c.link.sent
        if p is None:
            continue
        c.link.sent = None
        b = json.loads(p)
        path = R + '/manifest.json' if b['f'] < 0 else R + '/files/' + NAMES[b['f']]
        with open(path, 'rb') as f:
            f.seek(b['off'])
            n = f.readinto(buf)
        d = binascii.b2a_base64(memoryview(buf)[:n]).strip().decode() if n else ''
        rep = {'t': 'fwdata', 're': b['id'], 'd': d}
        if steps is None:
            ota.reply(rep, now)
        else:  # a chunk written to flash and hashed: a step of the loop too, timed apart (its
            # flush is an fsync of the host's disk here, not a chip's flash program time)
            t0 = ticks_us()
            ota.reply(rep, now)
            writes.append(ticks_diff(ticks_us(), t0))
        a = gc.mem_alloc()
        if a > peak:
            peak = a
    print('PEAK', peak, c.bus.n)
    if steps:
        steps.sort()
        writes.sort()
        print('STEPS', len(steps), steps[-1], steps[len(steps) * 99 // 100])
        print('WRITES', len(writes), writes[-1], writes[len(writes) // 2])
print('OK')
"""


def _mp32(script: Path, args: list[str], heap_kib: int, path: str, cwd: Path) -> str | None:
    import os
    import subprocess

    from tests.conftest import _NO_ASLR

    env = dict(os.environ, MICROPYPATH=f".frozen:{path}")
    p = subprocess.run([*_NO_ASLR, micropython32_binary(), "-X", f"heapsize={heap_kib}k", str(script), *args],
                       capture_output=True, env=env, cwd=cwd, timeout=600)
    out = p.stdout.decode(errors="replace")
    return out if p.returncode == 0 and "OK" in out else None


def _smallest(script: Path, args: list[str], path: str, cwd: Path, lo: int = 4, hi: int = 256) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if _mp32(script, args, mid, path, cwd):
            hi = mid
        else:
            lo = mid + 1
    return lo


def on_32_bit() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        w = Path(d)
        build = w / "build"
        compile_board("sim", build)  # the .mpy of lockcase.ota, as a chip imports it
        rel = crel.build("esp32s3", KEY, version="0.2.0", rel="esp32s3-0.2.0", firmware=REPO / "firmware")
        (w / "manifest").write_bytes(rel.manifest)
        (w / "pub").write_text(PUB)
        (w / "sig").write_text(rel.sig)
        script = w / "verify.py"
        script.write_text(_VERIFY)
        got = _mp32(script, ["verify", "7"], 256, str(build), w)
        if got is None:
            raise RuntimeError("the signature check failed on the 32-bit port")
        times = json.loads(got.split("MS ", 1)[1].splitlines()[0])
        out["verify_manifest_bytes"] = len(rel.manifest)
        out["verify_ms_32bit_median"] = statistics.median(times)
        out["verify_ms_32bit_spread"] = [min(times), max(times)]
        base = _smallest(script, ["none", "1"], str(build), w)
        need = _smallest(script, ["verify", "1"], str(build), w)
        out["verify_heap_kib_32bit"] = need - base
        # the download: a real sim release's files from a stand-in cloud, into a directory
        sim = crel.build("sim", KEY, version="0.2.0", rel="sim-0.2.0", firmware=REPO / "firmware")
        rd = w / "rel"
        crel.write_dir(sim, rd)
        (rd / "index").write_text(" ".join(p for p, _, _ in sim.doc["files"]))
        flash = w / "flash"
        flash.mkdir()
        (flash / "config.json").write_text(json.dumps({"ota_key": PUB, "ota": {"pace_ms": 20}}))
        dl = w / "download.py"
        dl.write_text(_DOWNLOAD)

        def fresh() -> None:
            import shutil

            for p in flash.iterdir():
                if p.name != "config.json":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

        def trial(mode: str) -> int:
            lo, hi = 4, 256
            while lo < hi:
                mid = (lo + hi) // 2
                fresh()
                if _mp32(dl, [mode, str(flash), str(rd)], mid, str(build), w):
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        out["download_heap_kib_32bit"] = trial("download") - trial("none")
        # The longest the app loop waits on one step of the update (a slice of the signature
        # check, of the manifest's parse, of a re-hash), at a roomy heap, 5 runs: what a key
        # pressed meanwhile waits at most before the loop scans the keypad again (docs/ota.md,
        # "Heap and pacing"); a chip takes some 30-60 times longer (not measured on one). A
        # chunk's answer (written, flushed, hashed) apart: its flush is the host disk's fsync
        # here, which other work on the machine delays, not a chip's flash.
        longest, p99, wmax, wmed = [], [], [], []
        for _ in range(5):
            fresh()
            got = _mp32(dl, ["download", str(flash), str(rd), "time"], 256, str(build), w)
            if got is None:
                raise RuntimeError("the download failed on the 32-bit port")
            _, top, pct = got.split("STEPS ", 1)[1].split()[:3]
            longest.append(int(top) / 1000)
            p99.append(int(pct) / 1000)
            _, top, med = got.split("WRITES ", 1)[1].split()[:3]
            wmax.append(int(top) / 1000)
            wmed.append(int(med) / 1000)
        out["download_longest_step_ms_32bit_median"] = round(statistics.median(longest), 1)
        out["download_longest_step_ms_32bit_spread"] = [round(min(longest), 1), round(max(longest), 1)]
        out["download_step_p99_ms_32bit_median"] = round(statistics.median(p99), 2)
        out["download_chunk_write_ms_32bit_median"] = round(statistics.median(wmed), 2)
        out["download_chunk_write_longest_ms_32bit_median"] = round(statistics.median(wmax), 1)
        out["download_release_bytes"] = sum(len(b) for b in sim.files.values()) + len(sim.manifest)
    return out


def figures() -> dict[str, Any]:
    f: dict[str, Any] = {}
    for k, v in on_32_bit().items():
        f[f"ota_{k}"] = v
    for pace in (250, 20):
        res = update_over_loopback(pace)
        for k, v in res.items():
            if k != "pace_ms":
                f[f"ota_loopback_pace{pace}_{k}"] = v
    return f


if __name__ == "__main__":
    for k, v in figures().items():
        print(f"{k}: {v}")
