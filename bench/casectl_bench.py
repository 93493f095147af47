"""The technician's figures: time to provision one case, and to redeploy after a one-file change.

Measured end to end through the `casectl` command, as a technician runs it, against the sim board
on a pty (socat + the MicroPython Unix port, driven by mpremote) and the cloud API under uvicorn.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASECTL = str(Path(sys.executable).parent / "casectl")


def _run(*args: str | Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([CASECTL, *map(str, args)], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"casectl {args[0]} failed ({p.returncode}): {p.stderr[-800:]}")
    return elapsed


def technician(runs: int = 3) -> dict[str, float]:
    from casecloud import registry
    from sim.device import SimDevice
    from tests.casectl.conftest import TOKEN, CloudServer

    env = dict(os.environ, CASECTL_TOKEN=TOKEN, NO_COLOR="1")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="casectl-bench-") as d:
        tmp = Path(d)
        src = tmp / "fw"
        shutil.copytree(REPO / "firmware", src, ignore=shutil.ignore_patterns("__pycache__"))
        build = tmp / "build"
        _run("build", "--board", "sim", "--src", src, "--out", build, env=env)
        cloud = CloudServer(tmp / "cloud").start()
        with cloud.rt.sessions.begin() as s:
            registry.create_store(s, "s1", cloud.rt.now())
        sd = SimDevice(tmp / "dev").start()
        try:
            boots = sd.boots
            out["first_deploy_s"] = round(_run("deploy", sd.port, "--build-dir", build, env=env), 3)
            sd.wait_boot(boots)
            sd.wait_firmware()
            sd.hands("spring", 1)  # a spring-loaded door, so the self-test's lock step completes
            prov, prov_nt, build_t, deploy_t = [], [], [], []
            # --online-timeout 0: this cloud runs no broker, so the case cannot come online; the
            # figures are the technician's steps (the wait for the case is its network's time).
            for i in range(runs):
                boots = sd.boots
                prov.append(_run("provision", sd.port, "--store", "s1", "--case", f"bench-{i}", "--force",
                                 "--cloud", cloud.url, "--key-wait", "0", "--labels", tmp / "labels",
                                 "--online-timeout", "0", env=env))
                sd.wait_boot(boots)
                sd.wait_firmware()
                boots = sd.boots
                prov_nt.append(_run("provision", sd.port, "--store", "s1", "--case", f"bench-nt-{i}", "--force",
                                    "--cloud", cloud.url, "--no-selftest", "--labels", tmp / "labels",
                                    "--online-timeout", "0", env=env))
                sd.wait_boot(boots)
                sd.wait_firmware()
                with (src / "lockcase" / "entry.py").open("a") as f:  # the one-file change
                    f.write(f"\n_BENCH_EDIT = {i}\n")
                boots = sd.boots
                build_t.append(_run("build", "--board", "sim", "--src", src, "--out", build, env=env))
                deploy_t.append(_run("deploy", sd.port, "--build-dir", build, env=env))
                sd.wait_boot(boots)
                sd.wait_firmware()
            out["provision_one_case_s_median"] = round(statistics.median(prov), 3)
            out["provision_one_case_no_selftest_s_median"] = round(statistics.median(prov_nt), 3)
            out["redeploy_one_file_change_s_median"] = round(
                statistics.median(b + t for b, t in zip(build_t, deploy_t, strict=True)), 3)
            out["redeploy_one_file_change_deploy_only_s_median"] = round(statistics.median(deploy_t), 3)
        finally:
            sd.stop()
            cloud.stop()
    return out


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(REPO / "host_tools"), str(REPO / "firmware")]
    print(technician())
