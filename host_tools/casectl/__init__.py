"""casectl: the LockCase technician's tool (build, flash, deploy, provision, monitor).

The firmware's pure-logic modules (staff PIN hashing, config validation) run under CPython too:
casectl imports them as the `lockcase` package, installed with it (pyproject.toml), instead of
keeping a second copy of that logic.
"""

__version__ = "0.1.0"
