"""LockCase reference cloud service."""
