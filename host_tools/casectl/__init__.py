"""casectl: the LockCase technician's tool (build, flash, deploy, provision, monitor)."""

__version__ = "0.1.0"
