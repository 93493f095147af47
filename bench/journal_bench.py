"""Journal figures for `make bench`: capacity per board, flash bytes per record, append time.

bench/journal_flash.py runs under MicroPython on a RAM littlefs the size and block size (4 KiB) of
each board's filesystem, with the firmware's files on it, and sizes the journal from statvfs as a
case does at boot. Times are the Unix port's on this machine, not a chip's: a chip's append is
dominated by the flash sector erase each append costs (erases_per_append), which a RAM device
does not model.
"""

from __future__ import annotations

import json

from tests.conftest import run_micropython


def journal_figures() -> dict[str, object]:
    proc = run_micropython(["bench/journal_flash.py"], heap="16m", timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"journal bench failed:\n{proc.stdout.decode()[-2000:]}\n{proc.stderr.decode()[-2000:]}")
    out: dict[str, object] = {}
    for line in proc.stdout.decode().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            board = r.pop("board")
            for k, v in r.items():
                out[f"journal_{board}_{k}"] = v
    return out


if __name__ == "__main__":  # on its own: .venv/bin/python -m bench.journal_bench
    for k, v in journal_figures().items():
        print(f"{k}: {v}")
