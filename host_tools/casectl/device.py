"""The device at the end of the USB cable, driven through mpremote's SerialTransport.

One Device is one session: open the port exclusively, interrupt whatever runs (the firmware's
main.py, like `mpremote resume`: never a soft reset on connect, which would end the Unix port's
process and re-run boot.py on a board), enter the raw REPL, and find out what is there. Every
failure becomes a CasectlError with a hint, never a pyserial traceback.

Code runs on the device in the raw REPL, whose globals persist for the session: the files of
onboard/ define a few `_lc_*` functions once (what the device is, hashing, writing files from
base64, directories, deploy's swap) so each later call is a single short exec.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from casectl.errors import (
    DeviceBusy,
    DeviceError,
    Disconnected,
    Incompatible,
    NoDevice,
    NotMicroPython,
)

# Bytes of file per exec. The exec's source, its compiled string constant and the decoded bytes
# are all on the heap at once, and a heap the interrupted firmware fragmented may have no larger
# free block (the sim's 256 KiB heap did not, at 4 KiB).
CHUNK = 2048
REPL_TIMEOUT_S = 4.0

# The MicroPython casectl runs on the device: files of host_tools/casectl/onboard/, linted against
# the boards' stubs and tested under the Unix port (tests/device/mp_test_onboard.py).
ONBOARD = Path(__file__).with_name("onboard")


@functools.cache
def onboard_source(name: str) -> str:
    """onboard/NAME.py as sent to the device: without its comment and blank lines, which would
    cost transfer time on every connection and change nothing in what runs."""
    lines = (ONBOARD / f"{name}.py").read_text().splitlines()
    return "".join(x + "\n" for x in lines if x.strip() and not x.lstrip().startswith("#"))


@dataclass
class DeviceInfo:
    port: str
    version: tuple[int, int, int]
    mpy: int | None
    platform: str
    machine: str
    firmware_was_running: bool
    watchdog: str = "none"

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def mpy_version(self) -> int | None:
        return None if self.mpy is None else self.mpy & 0xFF

    @property
    def mpy_sub(self) -> int | None:
        return None if self.mpy is None else (self.mpy >> 8) & 3


def check_compatible(info: DeviceInfo, manifest: dict[str, Any]) -> None:
    """Raise Incompatible when this device's MicroPython cannot run the build."""
    need = tuple(int(x) for x in str(manifest.get("min_micropython", "0.0.0")).split("."))
    if info.version < need:
        raise Incompatible(
            f"MicroPython {info.version_str} on {info.port} is too old: the firmware needs {'.'.join(map(str, need))} or later",
            "flash a current MicroPython with `casectl flash --board NAME`")
    mpy = manifest.get("mpy", {})
    if info.mpy is None:
        raise Incompatible(f"MicroPython {info.version_str} on {info.port} cannot import .mpy files",
                           "flash a current MicroPython with `casectl flash --board NAME`")
    if mpy.get("version") != info.mpy_version:
        raise Incompatible(
            f"wrong .mpy ABI: the build is mpy v{mpy.get('version')}.{mpy.get('sub')}, "
            f"MicroPython {info.version_str} on {info.port} loads v{info.mpy_version}.{info.mpy_sub}",
            "flash the MicroPython that matches this casectl (`casectl flash`), or rebuild with its mpy-cross")
    # Bytecode-only .mpy is accepted across sub-versions; native code (built with -march) is not.
    if mpy.get("arch") and mpy.get("sub") != info.mpy_sub:
        raise Incompatible(
            f"wrong .mpy ABI: native code built for mpy v{mpy.get('version')}.{mpy.get('sub')}, "
            f"the device loads v{info.mpy_version}.{info.mpy_sub}", "rebuild without --arch, or reflash")


def _is_local_path(port: str) -> bool:
    return "://" not in port


class Device:
    """One session with a MicroPython device. Use as a context manager."""

    def __init__(self, port: str, *, repl_timeout: float = REPL_TIMEOUT_S) -> None:
        self.port = port
        self.repl_timeout = repl_timeout
        self.t: SerialTransport | None = None
        self.info: DeviceInfo | None = None
        self._helper = False
        self._reset = False

    # -- session --------------------------------------------------------------------------------
    def __enter__(self) -> Device:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> DeviceInfo:
        self._open()
        try:
            self._enter_repl()
            self.info = self._probe()
            if self.info.firmware_was_running:
                try:
                    self.info.watchdog = self.run_marked("_lc_hold()", "LCHOLD")
                except DeviceError:
                    self.info.watchdog = "unknown"
        except BaseException:
            self.close()
            raise
        return self.info

    def _open(self) -> None:
        port = self.port
        if _is_local_path(port) and not os.path.exists(port):
            raise NoDevice(f"no device on {port}",
                           "check the USB cable and the port name (`casectl flash --list` shows connected boards)")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(port, baudrate=115200, exclusive=True)
        except TransportError:
            raise self._diagnose_open() from None

    def _diagnose_open(self) -> Exception:
        # mpremote says only "failed to access": open the port ourselves to learn why.
        port = self.port
        try:
            s = serial.serial_for_url(port, do_not_open=True, exclusive=True)
            s.open()
            s.close()
        except serial.SerialException as e:
            text = str(e)
            if "exclusively lock" in text or "Resource temporarily unavailable" in text or "busy" in text.lower():
                return DeviceBusy(f"{port} is in use by another program",
                                  "close other serial consoles (mpremote, screen, Thonny, another casectl) and retry")
            if "Permission denied" in text:
                return NoDevice(f"no permission to open {port}",
                                "add yourself to the serial group (`sudo usermod -aG dialout $USER`, then log in again)")
            if "No such file" in text or "could not open port" in text:
                return NoDevice(f"no device on {port}", "check the USB cable and the port name")
            return NoDevice(f"cannot open {port}: {text}", "check the USB cable and the port name")
        return DeviceBusy(f"{port} could not be opened", "another program may hold it; retry")

    def _enter_repl(self) -> None:
        t = self._t()
        # A board that is still starting (a moment after a reset or a plug-in) may swallow the
        # Ctrl-C before its firmware runs, then never read the Ctrl-A: interrupt again until the
        # raw REPL answers or the time is up.
        # A port that errors while connecting may be a board that is resetting (USB enumerating
        # again, the sim's process restarting): reopen it until the time is up.
        deadline = time.monotonic() + self.repl_timeout
        while True:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    t.enter_raw_repl(soft_reset=False, timeout_overall=1)
                return
            except TransportError:
                if time.monotonic() >= deadline:
                    raise NotMicroPython(
                        f"no MicroPython REPL answered on {self.port}",
                        "flash MicroPython first (`casectl flash --board NAME`); if it is flashed, unplug and replug the board") from None
            except (OSError, serial.SerialException) as e:
                with contextlib.suppress(Exception):
                    t.close()
                self.t = None
                while True:
                    if time.monotonic() >= deadline:
                        raise Disconnected(f"{self.port} went away while connecting ({e})",
                                           "check the cable and run the command again") from None
                    time.sleep(0.2)
                    try:
                        self._open()
                        break
                    except (NoDevice, DeviceBusy):
                        continue
                t = self._t()

    def _probe(self) -> DeviceInfo:
        try:
            raw = self.run_marked(onboard_source("probe") + "_lc_probe()\n", "LCPROBE")
            name, ver, mpy, platform, machine, running = json.loads(raw)
        except (DeviceError, ValueError) as e:
            raise NotMicroPython(f"the REPL on {self.port} is not a MicroPython this tool understands ({e})",
                                 "flash MicroPython with `casectl flash --board NAME`") from None
        if name != "micropython":
            raise NotMicroPython(f"{self.port} runs {name}, not MicroPython",
                                 "flash MicroPython with `casectl flash --board NAME`")
        v = tuple((list(ver) + [0, 0, 0])[:3])
        return DeviceInfo(self.port, (int(v[0]), int(v[1]), int(v[2])), mpy, platform, machine, bool(running))

    def close(self) -> None:
        """End the session. A case whose firmware was interrupted is reset back into it, whatever
        happened meanwhile: a refused command must not leave a case sitting at the REPL."""
        if self.t is None:
            return
        if self.info is not None and self.info.firmware_was_running and not self._reset:
            self.soft_reset()
            return
        t, self.t = self.t, None
        with contextlib.suppress(Exception):
            if t.in_raw_repl:
                t.exit_raw_repl()
        with contextlib.suppress(Exception):
            t.close()

    def _t(self) -> SerialTransport:
        if self.t is None:
            raise Disconnected(f"{self.port} is not connected")
        return self.t

    # -- running code ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        try:
            yield
        except TransportExecError as e:
            text = e.error_output.strip()
            full = "ENOSPC" in text or "Errno 28" in text
            raise DeviceError(f"the device failed while {what}:\n{text}",
                              "the board's flash is full: remove old files (or `casectl flash --erase`)"
                              if full else "") from None
        except (TransportError, serial.SerialException, OSError) as e:
            gone = _is_local_path(self.port) and not os.path.exists(self.port)
            self.close()
            raise Disconnected(
                f"the device on {self.port} {'disconnected' if gone else 'stopped answering'} while {what} ({e})",
                "reconnect it and run the same command again: it continues where it stopped") from None

    def exec(self, code: str, *, timeout: float = 15, what: str = "running a command",
             on_output: Callable[[bytes], None] | None = None) -> bytes:
        t = self._t()
        with self._io(what):
            out, err = t.exec_raw(code, timeout=max(1, round(timeout)), data_consumer=on_output)
            if err:
                raise TransportExecError(out, err.decode(errors="replace"))
        return out

    def run_marked(self, code: str, marker: str, *, timeout: float = 15, what: str = "running a command") -> str:
        """Run code that prints `marker + payload` on one line; return the payload."""
        out = self.exec(code, timeout=timeout, what=what).decode(errors="replace")
        for line in reversed(out.splitlines()):
            if line.startswith(marker):
                return line[len(marker):].strip()
        raise DeviceError(f"the device gave no answer while {what}: {out[-300:]!r}")

    def helper(self) -> None:
        if not self._helper:
            self.exec(onboard_source("files"), what="loading the transfer helper")
            self._helper = True

    def call_json(self, expr_call: str, *, timeout: float = 30, what: str = "running a command") -> Any:
        """Run a helper call that prints 'LCJSON' + JSON; return the decoded value."""
        self.helper()
        return json.loads(self.run_marked(expr_call, "LCJSON", timeout=timeout, what=what))

    # -- files ------------------------------------------------------------------------------------
    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(paths), 40):  # keeps each answer line short
            part = paths[i:i + 40]
            out.update(zip(part, self.call_json(f"_lc_hashes({json.dumps(part)})", what="hashing files"),
                           strict=True))
        return out

    def write_file(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        self.helper()
        if not data:
            self.exec(f"_lc_put({path!r}, '', 0)", what=f"writing {path}")
        for off in range(0, len(data), CHUNK):
            chunk = data[off:off + CHUNK]
            b64 = base64.b64encode(chunk).decode()
            self.exec(f"_lc_put({path!r},{b64!r},{1 if off else 0})", what=f"writing {path}")
            if progress:
                progress(len(chunk))

    def read_file(self, path: str) -> bytes | None:
        self.helper()
        out = self.exec(f"_lc_read({path!r})", what=f"reading {path}").decode(errors="replace")
        lines = out.splitlines()
        if "LCJSON null" in lines:
            return None
        data = b"".join(base64.b64decode(x[6:]) for x in lines if x.startswith("LCDATA"))
        ends = [x for x in lines if x.startswith("LCJSON")]
        if not ends or int(ends[-1][6:]) != len(data):
            raise DeviceError(f"reading {path} from the device came back incomplete")
        return data

    # -- reset ------------------------------------------------------------------------------------
    def stay_at_repl(self) -> None:
        """Do not reset on close (`--no-reset`): the board stays at the REPL, its watchdog fed."""
        self._reset = True

    def soft_reset(self) -> None:
        """Restart the firmware: Ctrl-D at the friendly REPL re-runs boot.py and main.py.

        On the Unix port (the sim board) the same Ctrl-D ends the process; its supervisor then
        boots it again from the flash image, which is what a reset is for the sim.
        """
        t = self._t()
        self._reset = True
        try:
            t.exit_raw_repl()
            t.read_until(1, b">>> ", timeout=1)
            ser = cast(serial.Serial, t.serial)
            ser.write(b"\x04")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                if ser.in_waiting and b"soft reboot" in ser.read(ser.in_waiting):
                    break
                time.sleep(0.02)
        except (OSError, serial.SerialException, TransportError):
            pass  # the port went away with the reset: expected on the sim and on native USB
        self.close()
