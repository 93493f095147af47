"""The firmware in a chip's RAM: the full scenario on a 32-bit MicroPython (tests/host/heap32.py).

An ESP32-S3 without PSRAM leaves MicroPython about 96 KiB of heap. The figures here are taken on
the official WebAssembly port (32-bit, MicroPython 1.29), where objects take the bytes they take
on the chip; `make bench` prints them and docs/memory.md explains them.
"""

from __future__ import annotations

import pytest

from tests.host.heap32 import missing, run_heap32
from tests.host.test_safety_props import CFG, FULL_SCENARIO, check_safety, expand, run_script

# The live heap (firmware, sim and harness) after every tick of the scenario must leave a 96 KiB
# heap at least 12 KiB for what one tick allocates. The firmware's own share is held apart: a
# chip carries neither the sim's emulated hardware nor the harness.
LIVE_BUDGET = 84 * 1024
FIRMWARE_BUDGET = 72 * 1024


@pytest.fixture(scope="module")
def full_run() -> dict:
    why = missing()
    if why:
        pytest.fail(why)  # make test installs it; never skip
    return run_heap32("96k")


def test_full_scenario_runs_the_same_on_32_bit(full_run: dict) -> None:
    actions, _ = expand(FULL_SCENARIO)
    wide = run_script(actions)  # the x86-64 Unix port
    assert full_run["harness"] is not None, "the 32-bit run did not finish the scenario"
    assert [(t, k) for t, k, _ in full_run["events"]] == [(t, k) for t, k, _ in wide["events"]]
    assert full_run["boots"] == wide["boots"]
    res = {"trace": full_run["trace"], "events": full_run["events"], "boots": full_run["boots"], "flash": b""}
    check_safety(res, CFG, [])


def test_live_heap_fits_a_chip(full_run: dict) -> None:
    assert full_run["max_live_bytes"] <= LIVE_BUDGET, full_run
    assert full_run["firmware_max_live_bytes"] <= FIRMWARE_BUDGET, full_run
    assert full_run["live_after_boot_bytes"] <= full_run["max_live_bytes"]


def test_the_check_fails_when_the_heap_is_too_small() -> None:
    # The live heap alone is ~80 KB: 64 KiB must make the port grow its heap, and say so.
    res = run_heap32("64k", actions=[["wait", 100]])
    assert res["fits"] is False and res["grew_by_bytes"] > 0 and res["first_growth_at_step"] == 1
