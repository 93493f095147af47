"""Collects tests/device/mp_test_*.py and runs them inside the real MicroPython Unix port.

Each module runs once per session in `micropython -X heapsize=96k`, under tests/device/mprunner.py,
which prints one JSON line per test function. Each function becomes its own pytest item.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_micropython

_results: dict[Path, dict[str, dict]] = {}


def _run_module(path: Path) -> dict[str, dict]:
    if path not in _results:
        heap = "96k"
        m = re.search(r"^# heap: (\w+)", path.read_text(), re.M)
        if m:
            heap = m.group(1)
        proc = run_micropython(
            [str(Path(__file__).with_name("mprunner.py")), path.stem], heap=heap, timeout=600
        )
        results: dict[str, dict] = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            if line.startswith("@@RESULT "):
                r = json.loads(line[9:])
                results[r["name"]] = r
        if proc.returncode != 0 or not results:
            results["__module__"] = {
                "ok": False,
                "error": f"exit {proc.returncode}\n{proc.stdout.decode(errors='replace')[-4000:]}\n"
                f"{proc.stderr.decode(errors='replace')[-4000:]}",
            }
        _results[path] = results
    return _results[path]


class MicroPythonItem(pytest.Item):
    def __init__(self, *, fname: str, **kw):
        super().__init__(**kw)
        self.fname = fname

    def runtest(self) -> None:
        results = _run_module(self.path)
        r = results.get(self.fname)
        if r is None:
            mod = results.get("__module__", {})
            raise AssertionError(f"{self.fname} produced no result under MicroPython\n{mod.get('error', '')}")
        if not r["ok"]:
            raise AssertionError(f"under MicroPython:\n{r['error']}")

    def reportinfo(self):
        return self.path, 0, f"[micropython] {self.fname}"


class MicroPythonFile(pytest.File):
    def collect(self):
        for name in re.findall(r"^def (test_\w+)\(", self.path.read_text(), re.M):
            yield MicroPythonItem.from_parent(self, name=name, fname=name)


def pytest_pycollect_makemodule(module_path: Path, parent):
    # mp_test_* files are MicroPython code: never import them into CPython.
    if module_path.name.startswith("mp_test_"):
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None
