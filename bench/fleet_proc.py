"""CPU seconds and memory of the fleet's components, read from /proc (bench/fleet.py).

A component is one process (the broker, a worker, the API, a simulator shard) or a process tree
(PostgreSQL: the postmaster and every backend and helper it forks). CPU is user + system time;
for a tree, the root's own time, the time of its children it has reaped (backends that ended)
and the time of its children alive now. A process that is gone keeps the last figure read, so a
broker that is restarted counts its old process and its new one. Memory: a process's peak RSS
(VmHWM, kept by the kernel); a tree's peak proportional set size (Pss: shared buffers split
between the processes mapping them, so they count once), sampled by `Monitor` every `every_s`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, reaped children's CPU s), None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    # fields after the name, from 3 (state): ppid 4, utime 14, stime 15, cutime 16, cstime 17
    return int(f[1]), (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None and st[0] == pid:
                out.append(int(d))
    return out


class Component:
    """pids(): the component's process ids now (one, or a tree's root); tree: count its children."""

    def __init__(self, name: str, pids: Callable[[], list[int]], tree: bool = False) -> None:
        self.name, self.pids, self.tree = name, pids, tree
        self._last: dict[int, float] = {}  # pid -> last CPU s read (kept after the process ends)
        self.peak_kib = 0
        self._lock = threading.Lock()

    def cpu_s(self) -> float:
        with self._lock:
            for pid in self.pids():
                st = _stat(pid)
                if st is None:
                    continue
                total = st[1]
                if self.tree:
                    total += st[2]
                    for c in children(pid):
                        cst = _stat(c)
                        if cst is not None:
                            total += cst[1]
                self._last[pid] = total
            return sum(self._last.values())

    def sample_memory(self) -> None:
        for pid in self.pids():
            if self.tree:
                kib = _pss_kib(pid) + sum(_pss_kib(c) for c in children(pid))
            else:
                kib = _status_kib(pid, "VmHWM")
            self.peak_kib = max(self.peak_kib, kib)

    def rss_kib(self) -> int:
        """Resident now (a tree: Pss summed)."""
        total = 0
        for pid in self.pids():
            if self.tree:
                total += _pss_kib(pid) + sum(_pss_kib(c) for c in children(pid))
            else:
                total += _status_kib(pid, "VmRSS")
        return total


class Monitor:
    """Samples every component's memory (and CPU, so a process that ends keeps a recent figure)
    every every_s on a thread of its own."""

    def __init__(self, components: list[Component], every_s: float = 1.0) -> None:
        self.components = components
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-monitor", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for c in self.components:
                c.sample_memory()
                c.cpu_s()
            self._stop.wait(self.every_s)

    def snapshot(self) -> dict[str, float]:
        return {c.name: c.cpu_s() for c in self.components}

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.components:
            c.sample_memory()
