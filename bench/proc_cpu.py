"""CPU seconds of processes and threads, read from /proc (Linux), for the cloud benches' per-component
figures: a process's own threads (the worker's event loop apart from its deciding threads) and a
process tree (PostgreSQL's server and its backends)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _fields(stat: str) -> list[str]:
    return stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces


def process(pid: int, children: bool = True) -> float:
    """CPU seconds of a process (user + system), with its reaped children's when `children`."""
    f = _fields(Path(f"/proc/{pid}/stat").read_text())
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / _TICK


def threads(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of a process (the main thread's id is the pid)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = _fields((task / "stat").read_text())
        except OSError:
            continue  # ended meanwhile
        out[int(task.name)] = (int(f[11]) + int(f[12])) / _TICK
    return out


def descendants(pid: int) -> list[int]:
    """The pids of a process's live descendants."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int(_fields((p / "stat").read_text())[1])
            except OSError:
                continue
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        kids = [c for c, pp in parent.items() if pp == cur]
        out += kids
        todo += kids
    return out


def tree(pid: int) -> float:
    """CPU seconds of a process and all its descendants, live and reaped."""
    total = process(pid)
    for p in descendants(pid):
        try:
            total += process(p)
        except OSError:
            continue
    return total
