"""A config or state file cut short by a power cut must read as corrupt on every MicroPython.

MicroPython 1.25 (the 32-bit interpreter of the heap tests, and what many boards in the field
still run) parses '{"a": 1' as {'a': 1}: without lockcase.compat.json_whole, a truncated
config.json would boot as a shorter, "valid" config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_micropython

CUT = ['{"unlock_ms": ', '{"board": "sim", "staff": {"pins": []}', '[1, 2', '{"s": "x']

CODE = """
import json, sys
from lockcase.compat import json_whole
from lockcase import config
try:
    json.loads('{"a": 1')
    print("lenient")
except ValueError:
    print("strict")
for text in %r:
    try:
        json_whole(text)
        print("ACCEPTED", text)
    except ValueError:
        pass
    with open(%r, "w") as f:
        f.write(text)
    try:
        config.load(%r)
        print("LOADED", text)
    except config.ConfigError as e:
        print("refused:", e)
print(json_whole('{"a": {"b": "}\\\\""}, "c": [1]}'))
"""


@pytest.mark.parametrize("bits", [32, 64])
def test_truncated_json_is_refused(bits: int, tmp_path: Path) -> None:
    script = tmp_path / "cut.py"  # a file: 1.25 mishandles a long -c argument
    cut = str(tmp_path / "cut.json")
    script.write_text(CODE % (CUT, cut, cut))
    proc = run_micropython([str(script)], heap="256k", bits=bits)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "ACCEPTED" not in out and "LOADED" not in out, out
    assert out.count("refused:") == len(CUT)
    assert "'c': [1]" in out and "'b': '}\"'" in out, out  # quotes and braces inside strings
    if bits == 32:
        assert out.startswith("lenient"), "the 1.25 quirk this guards against is gone: keep the guard anyway"
