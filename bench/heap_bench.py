"""The production case's heap figures for `make bench` (issue 10): for each configuration of
tests/host/heapcloud.py (none, NFC only, plain MQTT + NFC, TLS + NFC), the smallest
`-X heapsize` from which every larger one up to the search's cap completes the live sim's
scenario on the 32-bit MicroPython, and the live heap after boot.

The TLS figure leaves out mbedTLS's own buffers: Debian's 32-bit MicroPython links the system
mbedTLS, which allocates with libc's malloc, outside the GC heap (tools/tls_peak.py measures them).
The sim's emulated parts run from a ROM image outside the heap measured, as a chip has none of
them (heapcloud.sim_rom, docs/memory.md); the sim's board module and the parts' objects and names
are still counted.

Run: `.venv/bin/python -m bench.heap_bench` (from the repository root), about ten minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "firmware"), str(REPO / "host_tools")]

from tests.host.heapcloud import CONFIGS, Floor, HeapRun, smallest_heap  # noqa: E402

# Near the floor the same size can pass and fail by turns (real time: network and loop timing),
# so every size of the walk down runs twice.
REPEAT = 2


def _key(config: str) -> str:
    return config.replace("+", "_")


def floors(log: bool = False) -> dict[str, Floor]:
    def show(r: HeapRun) -> None:
        print(f"  {r.config} {r.heap_kib}k: {'ok' if r.ok else r.reason[:120]} ({r.seconds} s)", flush=True)

    return {c: smallest_heap(c, repeat=REPEAT, log=show if log else None) for c in CONFIGS}


def figures(log: bool = False) -> dict[str, object]:
    """Flat figures: heapcloud_<config>_min_heapsize_kib (None: did not complete at the cap),
    heapcloud_<config>_live_after_boot_bytes, and the search's cap and run count."""
    out: dict[str, object] = {}
    for config, f in floors(log).items():
        k = f"heapcloud_{_key(config)}"
        out[f"{k}_min_heapsize_kib"] = f.kib
        out[f"{k}_live_after_boot_bytes"] = f.live_after_boot
        out[f"{k}_search_cap_kib"] = f.cap_kib
        out[f"{k}_runs"] = len(f.runs)
        ok = [r.seconds for r in f.runs if r.ok]
        out[f"{k}_run_seconds_median"] = sorted(ok)[len(ok) // 2] if ok else None
    return out


if __name__ == "__main__":
    for name, value in figures(log=True).items():
        print(f"{name}: {value}")
