"""Whether a process has a serial port open, read from /proc: what a test waits for before it
acts on "the monitor (or another console) is on the port", instead of sleeping for as long as a
process start takes on a quiet machine."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any


def holds(pid: int, port: str | Path) -> bool:
    """Process `pid` has `port` (a pty or its symlink) open. Passive: opening the port to try its
    lock would race the process it waits for (the port is opened exclusively)."""
    target = os.path.realpath(port)
    fds = Path(f"/proc/{pid}/fd")
    try:
        names = list(fds.iterdir())
    except OSError:
        return False
    for fd in names:
        try:
            if os.path.realpath(os.readlink(fd)) == target:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def wait_holding(proc: subprocess.Popen[Any], port: str | Path, timeout: float = 60) -> None:
    """Until `proc` has `port` open; AssertionError if it ends first or `timeout` passes (a
    process start under a CI machine's load takes seconds, not the fraction of one it does here)."""
    deadline = time.monotonic() + timeout
    while not holds(proc.pid, port):
        assert proc.poll() is None, f"the process ended ({proc.returncode}) before it opened {port}"
        assert time.monotonic() < deadline, f"the process did not open {port} in {timeout} s"
        time.sleep(0.02)
