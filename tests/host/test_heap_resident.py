"""What stays loaded (issue 10): the modules a case needs only now and then are loaded when used
and dropped after, so the heap of a case that is waiting for its next shopper does not hold them.

Run on the compiled firmware on the 32-bit MicroPython, as a chip runs it.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_micropython

# The phone numbering table and its code (lockcase.phone) are loaded while a shopper types a
# number and go with the digits: once the number is sent, and when an abandoned entry times out.
_PHONE_ON_USE = """
import sys
from fakecloud import Cloud
from mp_test_entry import Rig, PHONE, WAIT, IDLE

def loaded():
    return "lockcase.phone" in sys.modules

assert not loaded(), "loaded with the keypad flows"
cloud = Cloud()
r = Rig(cloud=cloud)
assert not loaded(), "loaded with the entry"
r.type("2025550")
assert r.e.state == PHONE and r.d.text[1] == "202 555 0", (r.e.state, r.d.text)
assert loaded(), "not loaded while a number is typed"
r.type("143#")
assert r.e.state == WAIT and cloud.sent == [("phone", "+12025550143")], (r.e.state, cloud.sent)
assert not loaded(), "kept after the number was sent"
r.e.cloud_result("timeout", r.t)
r.wait(5000)
r.type("2025550")
assert loaded()
r.wait(r.e.timeout_ms + 1000)
assert r.e.state == IDLE, r.e.state
assert not loaded(), "kept after the entry timed out"
print("PHONE OK")
"""


def _run_compiled(tmp_path: Path, name: str, source: str) -> str:
    """Runs `source` on the 32-bit port against the compiled build; returns its output."""
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    r = run_micropython([str(script)], heap="256k", compiled=True, bits=32, cwd=tmp_path)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    return out


def test_phone_module_is_loaded_on_use_and_dropped_after(tmp_path: Path) -> None:
    out = _run_compiled(tmp_path, "phone_on_use", _PHONE_ON_USE)
    assert "PHONE OK" in out, out


# With no memory left to load the table, typing and sending a number must not end the case's
# loop with a MemoryError: the digits show ungrouped, '#' asks for another try, and once memory is
# back the same number goes out.
_PHONE_NO_MEMORY = """
import gc, sys
from fakecloud import Cloud
from mp_test_entry import Rig, PHONE, WAIT, MESSAGE

cloud = Cloud()
r = Rig(cloud=cloud)
gc.collect()
hog = None  # a chain, not a list: a growing list would leave its old arrays free
for size in (4096, 1024, 256, 64):
    try:
        while True:
            hog = (bytearray(size), hog)
    except MemoryError:
        pass
for _ in range(6):  # a few hundred bytes back: enough to step, not to load a module
    hog = hog[1]
r.type("2025550143")
assert r.e.state == PHONE and r.d.text[1] == "2025550143", (r.e.state, r.d.text)
assert "lockcase.phone" not in sys.modules
r.type("#")
assert r.e.state == MESSAGE and r.d.text == ("Busy, sorry", "Press # again"), (r.e.state, r.d.text)
assert cloud.sent == []
hog = None
gc.collect()
r.wait(4000)
assert r.e.state == PHONE, r.e.state
r.type("#")
assert r.e.state == WAIT and cloud.sent == [("phone", "+12025550143")], (r.e.state, cloud.sent)
print("NO MEMORY OK")
"""


def test_phone_entry_without_memory_for_the_table(tmp_path: Path) -> None:
    out = _run_compiled(tmp_path, "phone_no_memory", _PHONE_NO_MEMORY)
    assert "NO MEMORY OK" in out, out
