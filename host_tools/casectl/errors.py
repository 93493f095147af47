"""The errors casectl reports to a technician: each has a stable code (for `--json` and exit
status) and a hint that says what to do next, so a failure on the shop floor is never a traceback."""

from __future__ import annotations

from typing import Any


class CasectlError(Exception):
    code = "error"
    exit_code = 1

    def __init__(self, message: str, hint: str = "", data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data  # what was done before the failure, for --json

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class NoDevice(CasectlError):
    code = "no_device"
    exit_code = 3


class DeviceBusy(CasectlError):
    code = "device_busy"
    exit_code = 4


class NotMicroPython(CasectlError):
    code = "not_micropython"
    exit_code = 5


class Incompatible(CasectlError):
    """MicroPython too old, or its .mpy ABI differs from the build's."""

    code = "incompatible"
    exit_code = 6


class CloudUnreachable(CasectlError):
    code = "cloud_unreachable"
    exit_code = 7


class CloudError(CasectlError):
    code = "cloud_error"
    exit_code = 7


class AlreadyProvisioned(CasectlError):
    code = "already_provisioned"
    exit_code = 8


class Disconnected(CasectlError):
    code = "disconnected"
    exit_code = 9


class BoardMismatch(CasectlError):
    code = "board_mismatch"
    exit_code = 10


class SelfTestFailed(CasectlError):
    code = "selftest_failed"
    exit_code = 11


class DeviceError(CasectlError):
    """The device ran our code and raised: a full flash, a refused config, a missing module."""

    code = "device_error"
    exit_code = 12


class BuildFailed(CasectlError):
    code = "build_failed"
    exit_code = 13


class NotDeployed(CasectlError):
    code = "not_deployed"
    exit_code = 14


class CaseOffline(CasectlError):
    """Provisioned, but the case did not come back online with its new login and key in time."""

    code = "case_offline"
    exit_code = 15


class Usage(CasectlError):
    code = "usage"
    exit_code = 2
