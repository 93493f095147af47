"""What casectl sends of its on-device code (host_tools/casectl/onboard/, tested under MicroPython
in tests/device/mp_test_onboard.py) is that code: only comment and blank lines are left out."""

from __future__ import annotations

import ast

import pytest

from casectl.device import ONBOARD, onboard_source

NAMES = sorted(p.stem for p in ONBOARD.glob("*.py") if p.stem != "__init__")


def test_every_onboard_file_is_sent_by_name() -> None:
    assert NAMES == ["files", "probe"]


@pytest.mark.parametrize("name", NAMES)
def test_the_source_sent_compiles_to_the_file(name: str) -> None:
    full = (ONBOARD / f"{name}.py").read_text()
    sent = onboard_source(name)
    assert ast.dump(ast.parse(sent)) == ast.dump(ast.parse(full))
    assert not [x for x in sent.splitlines() if not x.strip() or x.lstrip().startswith("#")]
