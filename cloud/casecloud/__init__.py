"""LockCase reference cloud service."""

__version__ = "0.1.0"
