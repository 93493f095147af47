"""casectl: the LockCase technician's tool (build, flash, deploy, provision, monitor)."""

import sys
from pathlib import Path

__version__ = "0.1.0"

# The firmware's pure-logic modules (staff PIN hashing, config validation) run under CPython too;
# the host tools use them from the repo instead of keeping a second copy of that logic.
_FIRMWARE = str(Path(__file__).resolve().parents[2] / "firmware")
if _FIRMWARE not in sys.path:
    sys.path.append(_FIRMWARE)
