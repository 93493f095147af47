"""The sim board as a technician's laptop sees a real one: a serial port with MicroPython on it.

socat gives the MicroPython Unix port a pseudo-terminal with a stable name (the "USB port"), and
the launcher below plays the chip's boot ROM: mount the flash (a LittleFS image in a file), run
boot.py and main.py from it when they are there, and fall to the REPL otherwise, or when the
firmware is interrupted with Ctrl-C (isig on the pty turns the byte into SIGINT, as the USB REPL
of a board does). So `casectl deploy`, `provision` and `mpremote connect <port> resume ...` work
on it as on a board.

A reset ends the process (Ctrl-D at the REPL does that on the Unix port; so do the sim's watchdog
and reset command), and the supervisor thread boots it again on the same flash image: that is
what "soft reset" means for this board. The sim's emulated parts (boards/sim) are the chip's
hardware and come from the repo; everything else runs from the flash.

`hands`: a TCP port that works the case like a technician's hands while the REPL is busy (the
firmware's own control socket only runs with the firmware): `door 1`, `key 5`, `spring 1` (a
spring-loaded door that pops open while the coil pulls), `outputs`.
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

from casectl.simproc import REPO, SIM_HEAP, free_port, micropython

LAUNCHER = """\
import os, sys
REPO = @REPO@
FLASH = @FLASH@
CTL = @CTL@
HANDS = @HANDS@
sys.path[:] = ['/flash', REPO, '.frozen']
from boards.sim import flash as _simflash
_simflash.mount(FLASH)
open(FLASH + '.ready', 'w').close()
_cause_file = FLASH + '.cause'
_cause = 'power_on'
try:
    with open(_cause_file) as _f:
        _cause = _f.read().strip() or 'power_on'
    os.remove(_cause_file)
except OSError:
    pass

def _has(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False

def _hands_serve(board, last):
    import _thread, socket, time, json
    hw = board.HW
    spring = [0]
    def on_out(t, name, value):
        if name == 'lock' and spring[0] and value:
            hw.inputs['door'] = 1
            def close():
                time.sleep_ms(spring[0])
                hw.inputs['door'] = 0
            _thread.start_new_thread(close, ())
    hw.listeners.append(on_out)
    def serve():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo('127.0.0.1', HANDS)[0][-1])
        s.listen(2)
        while True:
            c, _ = s.accept()
            while True:
                line = c.readline()
                if not line:
                    break
                w = line.decode().split()
                r = 'ok'
                try:
                    if w[0] == 'door':
                        hw.inputs['door'] = int(w[1])
                    elif w[0] == 'key':
                        last[0].keys.tap(w[1], int(w[2]) if len(w) > 2 else 80)
                    elif w[0] == 'spring':
                        spring[0] = int(w[1]) and 1000
                    elif w[0] == 'outputs':
                        r = json.dumps(hw.outputs)
                    else:
                        r = 'error unknown'
                except Exception as e:
                    r = 'error %r' % (e,)
                c.write((r + '\\n').encode())
            c.close()
    _thread.start_new_thread(serve, ())

if _has('main.py') and _has('boot.py'):
    import board
    board.OPTIONS['reset_cause'] = _cause
    board.OPTIONS['ctl'] = CTL
    board.end_process_on_reset(_cause_file)
    if HANDS:
        _last = [None]
        _create = board.create
        def _tracked(cfg):
            b = _create(cfg)
            _last[0] = b
            return b
        board.create = _tracked
        _hands_serve(board, _last)
    import boot
    import main
    main.main()
else:
    print('sim board: MicroPython with no firmware on the flash')
"""


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
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = False
        self._sup: threading.Thread | None = None
        self.log_path = self.workdir / "socat.log"
        socat = shutil.which("socat")
        if not socat:
            raise RuntimeError("socat is not installed: run `make sysdeps`")
        self.socat = socat

    def _write_launcher(self) -> Path:
        launcher = self.workdir / "launcher.py"
        text = LAUNCHER
        for k, v in (("REPO", str(REPO)), ("FLASH", self.flash), ("CTL", f"127.0.0.1:{self.ctl_port}"),
                     ("HANDS", self.hands_port)):
            text = text.replace(f"@{k}@", repr(v))
        launcher.write_text(text)
        # socat splits its exec address on spaces and colons: a script without arguments is safe.
        boot = self.workdir / "boot.sh"
        boot.write_text(f"#!/bin/sh\ncd {_sh(str(self.workdir))}\necho $$ > mp.pid\ntrap '' INT\n"
                        f"exec {_sh(micropython())} -X heapsize={self.heap} -i {_sh(str(launcher))}\n")
        boot.chmod(0o755)
        return boot

    def _cmd(self, boot: Path) -> list[str]:
        if any(c in str(boot) + self.port for c in " :,!"):
            raise RuntimeError(f"socat cannot take {self.workdir} (spaces, colons or commas in the path)")
        return [self.socat, f"pty,link={self.port},raw,echo=0",
                f"exec:{boot},pty,stderr,setsid,ctty,raw,echo=0,isig=1"]

    def start(self, timeout: float = 20) -> SimDevice:
        boot = self._write_launcher()
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
                self.proc.wait()
                if not self.restart or self._stop:
                    break
                time.sleep(0.05)

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

    def ctl(self) -> Any:
        from casectl.simproc import SimClient

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
