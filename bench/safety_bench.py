"""Safety and brute-force figures under the reset sequences of issue 8, on the real firmware.

- duty budget: staff PIN grants with a reset just before each coil drop (the sequence that kept
  the coil on 17,940 ms in one 30 s window when the budget lived in RAM only): the most energized
  time in any window against the budget, and how many grants the cool-down shortened or refused;
- wrong staff PINs with a reset after every second one, and with the power cut right after each
  "Wrong PIN" screen: how many were tried before the first lockout, and lockouts in all;
- staff-PIN guesses an attacker gets in one hour at the default lockout settings while resetting
  the case as often as it likes (the entry flow alone, stepped on a virtual clock under
  MicroPython), and the chance that guessing finds a 4-digit PIN in that hour;
- the last `make soak`: examples run and failing.

Run by bench/run.py; `python bench/safety_bench.py` prints them alone.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "firmware"), str(REPO / "host_tools")]

from tests.conftest import run_micropython  # noqa: E402
from tests.host.test_safety_props import CFG, PIN, energized_intervals, expand, run_script  # noqa: E402


def duty_under_resets(cycles: int = 8) -> dict[str, int]:
    actions, _ = expand([("staff", PIN), ("wait", CFG["unlock_ms"] - 100), ("reset", "watchdog")] * cycles)
    res = run_script(actions, heap="256k")
    intervals = energized_intervals(res["trace"], 10**9)
    window = CFG["duty_window_s"] * 1000
    worst = max(sum(max(0, min(b, s + window) - max(a, s)) for a, b in intervals) for s, _ in intervals)
    grants = [d for _, k, d in res["events"] if k == "granted"]
    limited = [d for _, k, d in res["events"] if k == "duty_limited"]
    return {"budget_ms": CFG["duty_budget_ms"], "window_s": CFG["duty_window_s"], "grants": len(grants),
            "shortened": sum(1 for d in limited if d["ms"] > 0), "refused": sum(1 for d in limited if d["ms"] == 0),
            "max_energized_in_window_ms": worst}


def wrong_pins(steps: list) -> dict[str, int]:
    actions, _ = expand(steps)
    res = run_script(actions, heap="256k")
    kinds = [(k, d) for _, k, d in res["events"]]
    first = next((i for i, (k, _) in enumerate(kinds) if k == "lockout"), None)
    tried_before = sum(1 for k, d in kinds[:first] if k == "denied" and d.get("reason") == "bad_pin")
    return {"wrong_pins_typed": sum(1 for s in steps if s == ("staff", "1111")),
            "checked_before_first_lockout": tried_before if first is not None else -1,
            "lockouts": sum(1 for k, _ in kinds if k == "lockout")}


_HOUR = """
import os
os.chdir(%r)
from lockcase import config, creds
from lockcase.entry import Entry
from lockcase.events import Bus
from lockcase import recover
from lockcase.display import TextDisplay

class Lock:
    state = "locked"; source = None
    def alert(self): return None
    def shoppers_blocked(self): return False
    def grant(self, *a, **k): return True

cfg = config.defaults()
cfg.update(case_id="c1", provisioned=True)
cfg["staff"] = {"salt": "00112233445566778899aabbccddeeff", "iter": 1, "pins": [], "badges": []}
tried = [0]
def count(kind, data):
    if kind == "denied":
        tried[0] += 1
t = 0
end = 3600 * 1000
boots = 0
while t < end:
    bus = Bus(); bus.subscribe(count)
    e = Entry(bus, cfg, creds.StaffCreds(cfg["staff"]), Lock(), TextDisplay(), t, store=recover.load())
    boots += 1
    for _ in range(%d):  # wrong PINs between resets
        for k in "**0000#":
            t += 120
            e.key(k, t)
            e.step(t)
        while e.state != "idle" and t < end:  # the message or the lockout runs its course
            t += 500
            e.step(t)
        if t >= end:
            break
print("@@H", tried[0], boots, cfg["lockout_after"], cfg["lockout_base_s"], cfg["lockout_max_s"])
"""


def guesses_per_hour(reset_every: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "hour.py"
        script.write_text(_HOUR % (d, reset_every))
        out = run_micropython([str(script)], heap="512k", timeout=600).stdout.decode()
    line = next(x for x in out.splitlines() if x.startswith("@@H "))
    tried, boots, after, base, cap = (int(x) for x in line.split()[1:])
    return {"guesses": tried, "resets": boots, "lockout_after": after, "lockout_base_s": base,
            "lockout_max_s": cap, "chance_4_digit_pin_pct": round(100 * tried / 10_000, 2)}


def soak_figures() -> dict[str, object]:
    """The last `make soak` (10,000 random scripts through the safety property test: an hour, so
    not rerun here): examples run, how many failed (shrinking counts), when."""
    f = REPO / "build" / "soak.json"
    if not f.exists():
        return {"soak": "not run: make soak"}
    return {f"soak_{k}": v for k, v in json.loads(f.read_text()).items()}


def safety_figures() -> dict[str, object]:
    figures: dict[str, object] = {}
    for k, v in duty_under_resets().items():
        figures[f"duty_resets_{k}"] = v
    for k, v in wrong_pins([("staff", "1111"), ("staff", "1111"), ("reset", "hard")] * 10).items():
        figures[f"pins_reset_every_2_{k}"] = v
    for k, v in wrong_pins([("cut", "Wrong PIN"), ("staff", "1111")] * 10).items():
        figures[f"pins_cut_after_screen_{k}"] = v
    for k, v in guesses_per_hour().items():
        figures[f"staff_pin_hour_{k}"] = v
    return figures


if __name__ == "__main__":
    print(json.dumps(safety_figures(), indent=1))
