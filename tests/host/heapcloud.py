"""The production case in a chip's heap: the live sim, its cloud link and its NFC reader.

tests/host/test_heap.py steps the firmware from a harness with a virtual clock and no cloud. Here
the sim boots as it always does (boards/sim/start.py -> boot.py -> main.py -> App.run's asyncio
loop), from the compiled build (start.mpy included, tests/conftest.compiled_firmware) under its
short path, on the 32-bit MicroPython, under `setarch -R`, at a given `-X heapsize`, with:

- "none": no cloud, no reader (the bare App.run);
- "nfc": the emulated PN532 on I2C, no cloud;
- "mqtt+nfc": the reader and the cloud link to a real Mosquitto on loopback, the reference
  worker answering;
- "tls+nfc": the same over TLS (a test CA given to the case as `cloud.ca`): the production case.

The scenario, through the sim's control socket: boot, the greeting answered and the clock synced,
the staff PIN, the door opened and closed, a staff badge on the reader, a phone number and the
code the cloud texts, a trusted member's card answered by the cloud, and the journal's events
delivered and acknowledged (the case's backlog empty). Every step's outcome is checked, and the
console must not show a MemoryError, a crash or the cloud link's own failure logs: a heap too
small fails loudly, with the step and the reason.

Used by tests/host/test_heap_cloud.py and bench/heap_bench.py.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from casecloud import registry
from casecloud.models import Event
from lockcase import creds
from sim.demo import DEMO_PIN, demo_config
from sim.process import SimCase, SimClient, free_port
from tests.conftest import _short_paths, micropython32_binary
from tests.e2e.conftest import Env, cloud_env
from tests.e2e.test_cloud_tls import ca_der_b64, make_ca, make_server_cert
from tests.e2e.test_cloud_unlock import PHONE, texted_code

CONFIGS = ("none", "nfc", "mqtt+nfc", "tls+nfc")
NFC = {"driver": "pn532", "bus": "i2c"}
BADGE = "04aabbcc"
CARD = "04a1b2c3d4e5f6"
# What the console says when something went wrong: an allocation that failed, a crash or reset,
# the cloud link's own failure logs, a journal write lost, a fault event. None appears in a run
# with room to spare.
FAILURE_MARKS = ("MemoryError", "Traceback", "SIM RESET", "cloud: connect failed", "cloud: link down",
                 "cloud: handler failed", "cloud: dropped message", "cloud: out of memory",
                 "cloud: reply to no request", "journal: fault", "journal unavailable", "nfc: deliver failed",
                 "event: fault ", "event: config_error")
_HEAP_LINE = re.compile(r"^HEAP boot live=(\d+) free=(\d+)", re.M)


@dataclass
class HeapRun:
    """One run of the scenario: ok, or the step it failed at and why."""

    config: str
    heap_kib: int
    ok: bool
    reason: str = ""
    live_after_boot: int | None = None  # bytes, gc.mem_alloc() after a collection, app built
    seconds: float = 0.0
    console: str = ""


@dataclass
class Floor:
    """The smallest heap from which every larger one, in 1 KiB steps up to `cap_kib`, completed."""

    config: str
    kib: int | None  # None: the scenario did not complete at the cap
    cap_kib: int
    live_after_boot: int | None
    runs: list[HeapRun] = field(default_factory=list)

    @property
    def first_failure_kib(self) -> int | None:
        """The largest size that failed (just below the floor), if the search met one."""
        failed = [r.heap_kib for r in self.runs if not r.ok]
        return max(failed) if failed else None


class StepFailed(Exception):
    pass


@cache
def sim_rom() -> Path:
    """The sim's own parts (the compiled build's boards/ package: emulated PN532, I2C bus, LCD,
    keypad matrix, control socket) as a ROMFS image, which boards/sim/start.py maps outside the
    GC heap (LOCKCASE_SIM_ROM): a chip has none of them, so their bytecode must not be counted in
    the heap measured. The sim's board module itself (board.mpy) stays in the heap, as a chip's
    board.mpy does. Made once per process."""
    from mpremote.romfs import VfsRomWriter

    root = Path(_short_paths()[0]).resolve() / "boards"
    rom = VfsRomWriter()

    def add(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.is_dir():
                rom.opendir(p.name)
                add(p)
                rom.closedir()
            elif p.suffix == ".mpy":
                rom.mkfile(p.name, p.read_bytes())

    rom.opendir("boards")
    add(root)
    rom.closedir()
    d = Path(tempfile.mkdtemp(prefix="heapcloud-rom-"))
    atexit.register(shutil.rmtree, d, True)
    out = d / "sim.rom"
    out.write_bytes(rom.finalise())
    return out


@cache
def _tls_files() -> Path:
    """A CA and a server certificate for localhost, made once per process."""
    d = Path(tempfile.mkdtemp(prefix="heapcloud-ca-"))
    atexit.register(shutil.rmtree, d, True)
    make_ca(d, "LockCase test CA")
    make_server_cert(d, d)
    return d


def case_config(config: str, env: Env | None, tls_port: int | None) -> dict[str, Any]:
    """The case's config.json for a configuration, a staff badge included."""
    if env is not None:
        cfg = env.case_config(nfc=NFC)
        if config == "tls+nfc":
            assert tls_port is not None
            cfg["cloud"].update(host="localhost", port=tls_port, ca=ca_der_b64(_tls_files()))
    else:
        cfg = demo_config()
        cfg.update(store_id="s1", case_id="c1", unlock_ms=1500, pull_in_ms=200)
        if config == "none":
            cfg.pop("nfc", None)
        else:
            cfg["nfc"] = NFC
    cfg["staff"]["badges"] = [{"id": "badge-7", "hash": creds.hash_badge(BADGE, cfg["staff"]["salt"], 1000)}]
    return cfg


@contextlib.contextmanager
def _cloud(config: str, workdir: Path) -> Iterator[tuple[Env | None, int | None]]:
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}: one of {', '.join(CONFIGS)}")
    if "mqtt" not in config and "tls" not in config:
        yield None, None
        return
    tls_port = free_port() if config.startswith("tls") else None
    broker = ""
    if tls_port is not None:
        ca = _tls_files()
        broker = (f"listener {tls_port} 127.0.0.1\ncafile {ca / 'ca.crt'}\ncertfile {ca / 'srv.crt'}\n"
                  f"keyfile {ca / 'srv.key'}\n")
    with cloud_env(workdir / "cloud", cases=("c1",), broker=broker) as env:
        with env.rt.sessions.begin() as s:
            registry.create_member(s, env.rt.hasher, env.rt.now(), card=CARD, status="trusted")
        yield env, tls_port


def console_failure(console: str) -> str | None:
    """The first failure the console shows, with where its traceback ended, or None."""
    lines = console.splitlines()
    line = next((ln for ln in lines if any(m in ln for m in FAILURE_MARKS)), None)
    if line is None:
        return None
    # Where a traceback ended: in the firmware, or in the sim's own parts and control socket.
    frames = [ln.strip() for ln in lines if ln.strip().startswith('File "')]
    errors = [ln.strip() for ln in lines if "MemoryError" in ln]
    said = f"the console says {line.strip()!r}"
    if frames:
        said += f" (last frame: {frames[-1]})"
    if errors and errors[0] != line.strip():
        said += f" ({errors[0]})"
    return said


class _Steps:
    """The scenario's waits, on what the case streams (`watch`: its outputs and journaled events)
    and on its console: polling the `state` command would allocate its ~600-byte answer in the
    heap being measured ten times a second. Each wait fails at once, with the console's reason,
    when the process has ended or the console shows a failure, instead of waiting out its timeout."""

    def __init__(self, case: SimCase, cl: SimClient) -> None:
        self.case, self.cl = case, cl
        self.step = "boot"
        self.coil = 0.0  # the lock output's duty
        self.display: list[str] = []
        self.events: list[str] = []  # journaled event types, in order

    def check(self) -> None:
        said = console_failure(self.case.console())
        if said:
            raise StepFailed(f"{self.step}: {said}")
        if not self.case.running():
            raise StepFailed(f"{self.step}: the sim case's process ended")

    def _take(self, wait: float) -> None:
        try:
            m = self.cl.stream.get(timeout=wait)
        except queue.Empty:
            return
        if m.get("ev") == "out" and m.get("name") == "lock":
            self.coil = float(m["value"])
        elif m.get("ev") == "out" and m.get("name") == "display":
            self.display = list(m["value"])
        elif m.get("ev") == "event":
            self.events.append(str(m["type"]))

    def until(self, done: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.check()
            if time.monotonic() > deadline:
                raise StepFailed(f"{self.step}: not reached in {timeout:.0f} s (coil {self.coil}, display "
                                 f"{self.display}, last events {self.events[-4:]})")
            self._take(0.05)

    def console_says(self, text: str, timeout: float = 30) -> None:
        self.until(lambda: text in self.case.console(), timeout)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.check()
        try:
            reply = self.cl.call(cmd, **args)
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.check()
            raise StepFailed(f"{self.step}: control socket: {exc}") from exc
        if not reply.get("ok"):
            raise StepFailed(f"{self.step}: {cmd} refused: {reply}")
        return reply

    def keys(self, keys: str) -> None:
        # Held longer than the sim's default: a tap is timed, and a loaded host that stalls the
        # case's loop past a short one loses the key (the run would fail for no want of heap).
        self.call("keys", keys=keys, hold_ms=120, gap_ms=80)

    def opens(self) -> None:
        """The coil energizes; the door opened drops it, and closed again relocks the case."""
        seen = len(self.events)
        self.until(lambda: self.coil > 0)
        self.call("door", open=True)
        self.until(lambda: self.coil == 0 and "opened" in self.events[seen:])
        self.call("door", open=False)
        self.until(lambda: "closed" in self.events[seen:])


def _cloud_events(env: Env, kind: str) -> int:
    with env.rt.sessions() as s:
        return sum(1 for e in s.scalars(select(Event).where(Event.case_id == "c1")) if e.kind == kind)


def _scenario(s: _Steps, config: str, env: Env | None) -> None:
    nfc = config != "none"
    s.step = "watch"
    s.call("watch")
    if env is not None:
        s.step = "greeting answered, clock synced"
        s.console_says("cloud: clock synced")
    if nfc:
        s.step = "reader up"
        s.console_says("nfc: pn532 firmware")
    s.step = "staff PIN"
    s.keys(f"**{DEMO_PIN}#")
    s.opens()
    s.step = "staff badge"
    if nfc:
        s.call("card", uid=BADGE)
        s.opens()
        s.call("remove")
    else:
        s.call("tap", uid=BADGE, src="nfc")
        s.opens()
    if env is None:
        s.step = "end"
        if s.events.count("granted") != 2:
            raise StepFailed(f"{s.step}: the case journaled {s.events.count('granted')} grants, not 2 ({s.events})")
        s.check()
        return
    s.step = "phone request"
    s.keys(PHONE + "#")
    s.until(lambda: bool(s.display) and s.display[0].startswith("Code from SMS"))
    s.step = "texted code"
    s.keys(texted_code(env))
    s.opens()
    s.step = "trusted member's card"
    s.call("card", uid=CARD)
    s.opens()
    s.call("remove")
    s.step = "journal delivered and acknowledged"
    grants = s.events.count("granted")
    if grants != 4:
        raise StepFailed(f"{s.step}: the case journaled {grants} grants, not 4 ({s.events})")
    s.until(lambda: _cloud_events(env, "granted") == grants and not s.call("events", limit=1)["events"],
            timeout=30)
    s.step = "end"
    s.check()


def run(config: str, heap_kib: int) -> HeapRun:
    """Run the scenario once at `-X heapsize={heap_kib}k` in configuration `config` (CONFIGS)."""
    t0 = time.monotonic()
    # Every path the process is given is heap: one length on every run (/tmp/hcXXXXXXXX/...).
    workdir = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))
    res = HeapRun(config, heap_kib, ok=False)
    try:
        with _cloud(config, workdir) as (env, tls_port):
            case = SimCase(workdir / "case", case_config(config, env, tls_port), heap=f"{heap_kib}k",
                           restart=False, interpreter=micropython32_binary(), compiled=_short_paths()[0],
                           no_aslr=True, heap_report=True, extra_env={"LOCKCASE_SIM_ROM": str(sim_rom())})
            try:  # the case stops before its cloud does: the link's logs stay its own
                _start_and_play(case, config, env)
                res.ok = True
            finally:
                case.stop()
                res.console = case.console()
    except StepFailed as exc:
        res.reason = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        res.seconds = round(time.monotonic() - t0, 1)
    m = _HEAP_LINE.search(res.console)
    res.live_after_boot = int(m.group(1)) if m else None
    return res


def _start_and_play(case: SimCase, config: str, env: Env | None) -> None:
    try:
        case.start(timeout=20)
    except RuntimeError as exc:
        raise StepFailed(f"boot: {console_failure(case.console()) or str(exc).splitlines()[0]}") from exc
    cl = SimClient("127.0.0.1", case.port, timeout=30)
    steps = _Steps(case, cl)
    done = threading.Event()

    def watchdog() -> None:
        # A control task the heap killed never answers: a call waiting for it is ended as soon as
        # the console shows why (the call then raises, and the step reports the console's reason).
        while not done.wait(0.1):
            try:
                steps.check()
            except StepFailed:
                with contextlib.suppress(OSError):
                    cl.sock.shutdown(socket.SHUT_RDWR)
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        _scenario(steps, config, env)
    finally:
        done.set()
        cl.close()


def timed_out(r: HeapRun) -> bool:
    """The run failed only by a step's timeout, with no failure on its console."""
    return not r.ok and " not reached in " in r.reason and console_failure(r.console) is None


def smallest_heap(config: str, cap_kib: int | None = None, *, repeat: int = 1, slack_kib: int = 8,
                  low_kib: int = 48, high_kib: int = 256, log: Callable[[HeapRun], None] | None = None) -> Floor:
    """The smallest heap (KiB) from which every larger one up to `cap_kib` completes the scenario.

    A first-fit heap is not monotonic near its floor (docs/memory.md: a size can fail between two
    that pass), so the answer comes from stepping down 1 KiB at a time from the cap, which must
    pass, to the first failure. Without a cap, a bisection between `low_kib` and `high_kib` finds a
    size that passes and the cap is `slack_kib` above it. The live sim runs in real time (network
    and loop timing differ from run to run), so the same size can pass once and fail the next
    time near the floor: `repeat` runs each size of the walk down that many times, all to pass.
    """
    runs: list[HeapRun] = []
    failed: set[int] = set()  # sizes that failed, a timing failure only when every try did

    def once(kib: int) -> HeapRun:
        # A step not reached in time with nothing wrong on the console is the host's timing (a
        # key lost while a loaded machine stalled the case's loop), not the heap: a shortage
        # says so on the console first (_Steps.check). Such a run is repeated, twice at most,
        # and counts as a failure only if every try ends that way.
        r = HeapRun(config, kib, ok=False)
        for _ in range(3):
            r = run(config, kib)
            runs.append(r)
            if log:
                log(r)
            if r.ok or not timed_out(r):
                break
        if not r.ok:
            failed.add(kib)
        return r

    def go(kib: int, times: int = 1) -> HeapRun:
        r = HeapRun(config, kib, ok=False)
        for _ in range(times):
            r = once(kib)
            if not r.ok:
                break
        return r

    if cap_kib is None:
        lo, hi = low_kib, high_kib
        while lo < hi:
            mid = (lo + hi) // 2
            if go(mid).ok:
                hi = mid
            else:
                lo = mid + 1
        cap_kib = lo + slack_kib
    top = go(cap_kib, repeat)
    if not top.ok:
        return Floor(config, None, cap_kib, top.live_after_boot, runs)
    size = cap_kib
    while size > 1 and go(size - 1, repeat).ok:
        size -= 1
    # A failure the bisection met between here and the cap counts too: every size from the floor
    # up must have completed every time it ran.
    below = [k for k in failed if k <= cap_kib]
    floor = max(size, max(below) + 1) if below else size
    if floor > cap_kib:
        return Floor(config, None, cap_kib, top.live_after_boot, runs)
    live = next(r.live_after_boot for r in reversed(runs) if r.ok and r.heap_kib == floor)
    return Floor(config, floor, cap_kib, live, runs)
