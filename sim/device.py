"""The sim board as a technician's laptop sees a real one: a serial port with MicroPython on it.

socat gives the MicroPython Unix port a pseudo-terminal with a stable name (the "USB port"), and
the sim board's boot path (boards/sim/start.py --fw flash, the same file every sim process boots
through) plays the chip's boot ROM: mount the flash (a LittleFS image in a file), run boot.py and
main.py from it when they are there, and fall to the REPL (`micropython -i`) otherwise, or when
the firmware is interrupted with Ctrl-C (the sim board reads the byte off the console, as a
board's UART interrupt does: boards/sim/hw.py, watch_console; not SIGINT, which the Unix port
mishandles while the board's timer thread runs). So `casectl deploy`, `provision` and `mpremote connect <port> resume ...`
work on it as on a board.

A reset ends the process (Ctrl-D at the REPL does that on the Unix port; so do the sim's watchdog
and reset command), and the supervisor thread boots it again on the same flash image: that is
what "soft reset" means for this board. The sim's emulated parts (boards/sim) are the chip's
hardware and come from the repo; everything else runs from the flash.

`hands`: a TCP port that works the case like a technician's hands while the REPL is busy (the
firmware's own control socket only runs with the firmware): `door 1`, `key 5`, `spring 1` (a
spring-loaded door that pops open while the coil pulls), `outputs` (boards/sim/hands.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sim.process import SIM_HEAP, START, SimClient, free_port, micropython


class SimDevice:
    """The sim board on a pseudo-terminal at `port` (a symlink socat keeps for us)."""

    def __init__(self, workdir: Path, *, heap: str = SIM_HEAP, hands: bool = True, restart: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = str(self.workdir / "ttySIM")
        self.flash = str(self.workdir / "flash.img")
        self.ctl_port = free_port()
        self.hands_port = free_port() if hands else 0
        self.heap = heap
        self.restart = restart
        self.boots = 0
        # One line per process that ended: how and why (the cause a reset wrote for the next boot),
        # so a test that meets an unexpected restart can say what restarted the board.
        self.history: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = False
        self._sup: threading.Thread | None = None
        self.log_path = self.workdir / "socat.log"
        socat = shutil.which("socat")
        if not socat:
            raise RuntimeError("socat is not installed: run `make sysdeps`")
        self.socat = socat

    def _write_boot(self) -> Path:
        args = ["--flash", self.flash, "--ctl", f"127.0.0.1:{self.ctl_port}", "--fw", "flash", "--uart", "1"]
        if self.hands_port:
            args += ["--hands", str(self.hands_port)]
        # socat splits its exec address on spaces and colons: a script without arguments is safe.
        boot = self.workdir / "boot.sh"
        boot.write_text(f"#!/bin/sh\ncd {_sh(str(self.workdir))}\necho $$ > mp.pid\ntrap '' INT\n"
                        f"exec {_sh(micropython())} -X heapsize={self.heap} -i {_sh(str(START))} "
                        + " ".join(_sh(a) for a in args) + "\n")
        boot.chmod(0o755)
        return boot

    def _cmd(self, boot: Path) -> list[str]:
        if any(c in str(boot) + self.port for c in " :,!"):
            raise RuntimeError(f"socat cannot take {self.workdir} (spaces, colons or commas in the path)")
        # SIM_DEVICE_TRACE=1: socat writes everything that crosses the port to socat.log
        trace = ["-v"] if os.environ.get("SIM_DEVICE_TRACE") else []
        return [self.socat, *trace, f"pty,link={self.port},raw,echo=0",
                f"exec:{boot},pty,stderr,setsid,ctty,raw,echo=0"]

    def start(self, timeout: float = 20) -> SimDevice:
        boot = self._write_boot()
        self._sup = threading.Thread(target=self._supervise, args=(boot,), daemon=True)
        self._sup.start()
        self.wait_port(timeout)
        return self

    def _supervise(self, boot: Path) -> None:
        with open(self.log_path, "ab") as log:
            while not self._stop:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.flash + ".ready")
                self.proc = subprocess.Popen(self._cmd(boot), stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
                self.boots += 1
                t0 = time.monotonic()
                rc = self.proc.wait()
                self.history.append(self._ended(rc, time.monotonic() - t0))
                if not self.restart or self._stop:
                    break
                time.sleep(0.05)

    def _ended(self, rc: int, ran_s: float) -> str:
        try:
            cause = Path(self.flash + ".cause").read_text().strip()
        except OSError:
            cause = "no reset cause written (soft reset, exit or power cut)"
        return f"boot {self.boots}: ran {ran_s:.1f} s, socat exit {rc}, {cause}"

    def wait_port(self, timeout: float = 20) -> None:
        """Wait for the port, and for the board to have mounted its flash (so it is booting)."""
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.port) and os.path.exists(self.flash + ".ready")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sim device's port {self.port} did not appear; see {self.log_path}")
            time.sleep(0.01)

    def wait_boot(self, boots_before: int, timeout: float = 20) -> None:
        """Wait for the process to have restarted after a reset, and for its port."""
        deadline = time.monotonic() + timeout
        while self.boots <= boots_before:
            if time.monotonic() > deadline:
                raise RuntimeError("the sim device did not restart")
            time.sleep(0.01)
        self.wait_port(max(0.1, deadline - time.monotonic()))

    def wait_firmware(self, timeout: float = 20) -> None:
        """Wait until the firmware's own control socket listens (it runs and is READY)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.ctl_port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sim device's firmware did not come up") from None
                time.sleep(0.05)

    def power_cut(self) -> None:
        """Kill the board mid-whatever, as pulling the cable out of a bus-powered board would."""
        # socat runs MicroPython in a session of its own, so it is killed by its own pid.
        try:
            os.kill(int((self.workdir / "mp.pid").read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            p = self.proc
            if p and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()

    def hands(self, *words: str | int) -> str:
        if not self.hands_port:
            raise RuntimeError("this sim device was started without hands")
        with socket.create_connection(("127.0.0.1", self.hands_port), timeout=5) as s:
            s.sendall((" ".join(map(str, words)) + "\n").encode())
            return s.makefile("rb").readline().decode().strip()

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.hands("outputs"))

    def ctl(self) -> SimClient:
        return SimClient("127.0.0.1", self.ctl_port)

    def stop(self) -> None:
        self._stop = True
        # A reset may be restarting the board right now: the new socat can start after the kill
        # below, and its MicroPython may not have written mp.pid yet. Keep at it until the
        # supervisor has seen its last process end.
        deadline = time.monotonic() + 10
        while True:
            self.power_cut()
            p = self.proc
            if p and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()  # socat removes its link on SIGTERM
            if not self._sup or time.monotonic() > deadline:
                break
            self._sup.join(timeout=0.5)
            if not self._sup.is_alive():
                break
        p = self.proc
        if p and p.poll() is None:
            p.kill()
            p.wait(5)
        # socat only removes the link when it ends cleanly; a stale link would look like a board.
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.port)

    def __enter__(self) -> SimDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sh(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
