"""`make bench`: the figures the issues set targets for, measured on this machine.

- live heap of the full firmware scenario (split into firmware and the sim's emulated hardware
  plus the test harness), the smallest `-X heapsize` it completes in, and whether 96k suffices,
  on a 32-bit MicroPython (a chip's object sizes) and on the 64-bit one;
- boot-to-ready time of the sim case (process start to the firmware's READY line), from source
  and from the compiled .mpy build;
- total compiled size per board;
- time of one staff PIN check (PBKDF2, 1000 iterations) under MicroPython;
- tap-to-open latency through Mosquitto and the cloud worker, and cloud verification throughput
  (bench/cloud_bench.py);
- the worker past saturation (1.5x and 2.4x its capacity: answered in time, shed, p99, peak RSS)
  and through a 10 s PostgreSQL outage (events and requests lost, log bytes) (bench/load_bench.py);
- tap-to-open latency through the PN532 driver and the emulated reader, card presented to coil
  energized: a staff badge checked on the case, and a trusted loyalty card through the cloud
  (bench/nfc_bench.py);
- casectl, end to end against the sim board on a pty and the cloud API: time to provision one case
  (with and without the on-device self-test) and to redeploy after a one-file change
  (bench/casectl_bench.py);
- safety and brute force under resets and power cuts: the duty budget with a reset before every
  coil drop, wrong staff PINs with resets and power cuts between them, staff-PIN guesses an hour
  at the defaults (bench/safety_bench.py);
- texted-code guesses an attacker rotating numbers and cases gets in one hour at one store at the
  default limits, driven through the real cloud policy on a fake clock, and the chance of a hit
  (bench/guess_bench.py);
- the event journal per board's filesystem: capacity (records, hours offline at one event per
  10 s), flash bytes per record on littlefs, append time, erases per append, open and drain time,
  its RAM (bench/journal_bench.py);
- store analytics: the full rebuild of the counts from 1,000,000 events on SQLite and on
  PostgreSQL, one day's incremental fold, the store-week page's response time
  (bench/analytics_bench.py);
- an over-the-air update of one sim case over loopback through the cloud (time, bytes on the
  wire), the release signature check's time and heap and a download's heap on the 32-bit port
  (bench/ota_bench.py);
- the fleet at 2,000 cases (bench/fleet.py, `make fleet` runs it at 10,000): latency per message
  kind, throughput, CPU and memory per component, a whole-fleet reconnect.

Figures are printed and written to build/bench.json. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "firmware"), str(REPO / "host_tools")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from casectl.build import compile_board  # noqa: E402
from sim.demo import demo_config  # noqa: E402
from sim.process import START, micropython  # noqa: E402
from tests.conftest import run_micropython  # noqa: E402
from tests.host.test_safety_props import FULL_SCENARIO, expand, run_script  # noqa: E402


def scenario(heap: str, bits: int) -> dict | None:
    actions, _ = expand(FULL_SCENARIO)
    try:
        return run_script(actions, heap=heap, bits=bits)
    except AssertionError:
        return None


def min_heap(bits: int) -> int:
    """The smallest heap from which every larger one completes the scenario (KiB). A first-fit
    heap is not monotonic near its floor (a size can fail between two that pass), so: bisect to a
    size that passes, then walk down from above it to the first failure."""
    lo, hi = 48, 256  # the upper bound must pass
    while lo < hi:
        mid = (lo + hi) // 2
        if scenario(f"{mid}k", bits):
            hi = mid
        else:
            lo = mid + 1
    size = lo + 8
    while size > lo and scenario(f"{size - 1}k", bits):
        size -= 1
    return size


def boot_to_ready(fw: Path | None, heap: str, runs: int = 5) -> list[float]:
    times = []
    cfg = demo_config()
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "cfg.json").write_text(json.dumps(cfg))
            cmd = [micropython(), "-X", f"heapsize={heap}", str(START), "--flash", f"{d}/flash.img", "--config", f"{d}/cfg.json"]
            if fw:
                cmd += ["--fw", str(fw)]
            # First boot formats the flash; measure the second, the one a case does every day.
            elapsed = 0.0
            for _boot in range(2):
                t0 = time.perf_counter()
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=d)
                assert p.stdout is not None
                for line in p.stdout:
                    if line.startswith(b"READY"):
                        break
                else:
                    raise RuntimeError("sim never became ready")
                elapsed = time.perf_counter() - t0
                p.kill()
                p.wait()
            times.append(elapsed * 1000)
    return times


def pin_check_ms() -> float:
    out = run_micropython(["-c", """
import time
from lockcase import creds
salt = "00112233445566778899aabbccddeeff"
c = creds.StaffCreds({"salt": salt, "iter": 1000, "pins": [{"id": "a", "hash": creds.hash_pin("2468", salt, 1000)}], "badges": []})
t = time.ticks_us()
for _ in range(3):
    c.check_pin("1357")
print(time.ticks_diff(time.ticks_us(), t) / 3000)
"""])
    return float(out.stdout.decode().strip().splitlines()[-1])


def casectl_figures() -> dict[str, object]:
    """The technician's tool: provisioning one case, redeploying after a one-file change."""
    from bench.casectl_bench import technician

    return {f"casectl_{k}": v for k, v in technician().items()}


def main() -> int:
    con = Console()
    figures: dict[str, object] = {}
    # The full scenario on a 32-bit MicroPython (Debian's i386 Unix port: a chip's object sizes)
    # and on the 64-bit one the other tests use, whose objects take up to twice the bytes.
    for bits in (32, 64):
        res = scenario("256k", bits)
        if res is None:
            con.print(f"[red]the full scenario failed on the {bits}-bit port[/red]")
            return 1
        figures[f"heap{bits}_live_after_boot_bytes"] = res["heap_live_boot"]
        figures[f"heap{bits}_live_at_end_bytes"] = res["heap_live_end"]
        figures[f"heap{bits}_sim_and_harness_bytes"] = res["heap_live_before_firmware"]
        figures[f"heap{bits}_firmware_live_bytes"] = res["heap_live_end"] - res["heap_live_before_firmware"]
        figures[f"heap{bits}_min_heapsize_kib"] = min_heap(bits)
        figures[f"heap{bits}_passes_at_96k"] = scenario("96k", bits) is not None
    src = boot_to_ready(None, "256k")
    sim_build = compile_board("sim", REPO / "build" / "bench-sim")
    mpy = boot_to_ready(REPO / "build" / "bench-sim", "192k")
    figures["boot_to_ready_ms_source_median"] = round(statistics.median(src), 1)
    figures["boot_to_ready_ms_mpy_median"] = round(statistics.median(mpy), 1)
    for board in ("esp32s3", "picow"):
        built = compile_board(board, REPO / "build" / f"bench-{board}")
        figures[f"mpy_total_bytes_{board}"] = sum(b.size for b in built)
        figures[f"files_{board}"] = len(built)
    figures["mpy_total_bytes_sim"] = sum(b.size for b in sim_build)
    figures["staff_pin_check_ms_iter1000_unix"] = round(pin_check_ms(), 2)
    from bench.safety_bench import safety_figures, soak_figures

    figures.update(safety_figures())
    figures.update(soak_figures())
    from bench.guess_bench import guesses_per_hour

    figures.update(guesses_per_hour())
    from bench.cloud_bench import tap_to_open, throughput

    for k, v in tap_to_open(200).items():
        figures[f"tap_to_open_cloud_{k}"] = v
    for k, v in throughput(40, 10).items():
        figures[f"cloud_throughput_{k}"] = v
    for k, v in throughput(200, 10, rate=1000).items():  # latency at the target load
        figures[f"cloud_at_1000_per_s_{k}"] = v
    from bench.load_bench import main as load_figures

    for name, res in load_figures().items():
        for k, v in res.items():
            figures[f"cloud_{name}_{k}"] = v
    from bench.nfc_bench import loyalty_card, staff_badge

    for k, v in staff_badge().items():
        figures[f"tap_to_open_nfc_staff_badge_{k}"] = v
    for k, v in loyalty_card().items():
        figures[f"tap_to_open_nfc_loyalty_cloud_{k}"] = v
    figures.update(casectl_figures())
    from bench.journal_bench import journal_figures

    figures.update(journal_figures())
    from bench.tls_bench import figures as tls_figures

    figures.update(tls_figures())
    from bench.heap_bench import figures as heapcloud_figures

    figures.update(heapcloud_figures())  # the production case's heap: about 7 minutes
    from bench.console_bench import figures as console_figures

    figures.update(console_figures())  # screenshots, and a forced door to the alarm on screen
    from bench.ota_bench import figures as ota_figures

    # over-the-air update: one sim case over loopback at two paces, the verifier on 32 bits (~4 min)
    figures.update(ota_figures())
    from bench.analytics_bench import figures as analytics_figures

    # store analytics: rebuild of 1,000,000 events on SQLite and PostgreSQL, the store-week page
    figures.update(analytics_figures())
    from bench.fleet import FleetConfig
    from bench.fleet import figures as fleet_figures
    from bench.fleet import run as fleet_run

    # The fleet at a fifth of `make fleet`'s size: 2,000 cases, 100 requests/s, one worker on
    # PostgreSQL (two contend for the cases' rows until that is fixed: docs/scaling.md), then a
    # whole-fleet reconnect (about three minutes).
    figures.update(fleet_figures(fleet_run(FleetConfig(cases=2000, workers=1, rate=100, steady_s=20), log=con.print)))
    t = Table("figure", "value", title="LockCase bench")
    for k, v in figures.items():
        t.add_row(k, str(v))
    con.print(t)
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "bench.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
