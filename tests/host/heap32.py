"""The full firmware scenario on a 32-bit MicroPython (tools/wasm32/heap32.mjs), from Python.

The x86-64 Unix port the other tests use has 8-byte words and 32-byte GC blocks, so its heap
figures are not a chip's. The official WebAssembly port is 32-bit like an ESP32-S3 or RP2040:
the same objects take the same bytes there. It runs under Node.js, one tick per call, with the
garbage collected between ticks (the port cannot collect inside one: see heap32.mjs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import REPO, compiled_firmware
from tests.host.test_safety_props import CFG, FULL_SCENARIO, expand

TOOL = REPO / "tools" / "wasm32"
HARNESS = REPO / "tests" / "device" / "simharness.py"


def missing() -> str | None:
    """Why the 32-bit check cannot run here, or None when it can."""
    if not shutil.which("node"):
        return "node is not installed: run `make sysdeps` (Debian's nodejs)"
    if not (TOOL / "node_modules" / "@micropython" / "micropython-webassembly-pyscript").is_dir():
        return "the 32-bit MicroPython is not installed: run `make wasm32` (npm ci in tools/wasm32)"
    return None


def run_heap32(heap: str = "96k", actions: list | None = None, cfg: dict | None = CFG) -> dict:
    """Run a script (the full scenario by default); its figures plus the harness's trace."""
    why = missing()
    if why:
        raise RuntimeError(why)
    if actions is None:
        actions, _ = expand(FULL_SCENARIO)
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "script.json"
        script.write_text(json.dumps({"cfg": cfg, "actions": actions}))
        proc = subprocess.run(
            ["node", str(TOOL / "heap32.mjs"), "--heap", heap, "--fw", str(compiled_firmware("sim")),
             "--harness", str(HARNESS), "--script", str(script)],
            capture_output=True, timeout=600, cwd=REPO,
        )
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"heap32.mjs exited {proc.returncode}:\n{out[-3000:]}\n{proc.stderr.decode()[-3000:]}")
    res: dict = {"events": [], "trace": [], "boots": [], "harness": None}
    for line in out.splitlines():
        if line.startswith("@@HEAP32 "):
            res.update(json.loads(line[9:]))
        elif line.startswith("@@OUT "):
            res["harness"] = json.loads(line[6:])
        elif line.startswith("@@E "):
            res["events"].append(json.loads(line[4:]))
        elif line.startswith("@@T "):
            res["trace"].append(json.loads(line[4:]))
        elif line.startswith("@@B "):
            res["boots"].append(int(line[4:]))
    if "max_live_bytes" not in res:
        raise RuntimeError(f"heap32.mjs gave no figures:\n{out[-3000:]}")
    res["firmware_max_live_bytes"] = res["max_live_bytes"] - res["sim_and_harness_bytes"] - res["interpreter_bytes"]
    return res
