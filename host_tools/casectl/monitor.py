"""Follow a running case on its serial console: every line it prints, and the state those lines
imply (ready, lock, alarms, cloud link, last event). Opening the port sends nothing, so the
firmware keeps running; a reset that drops the port (native USB, the sim) is waited out.
"""

from __future__ import annotations

import ast
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import serial

from casectl.errors import DeviceBusy, NoDevice

_LOCK_AFTER = {"granted": "released", "opened": "open", "closed": "locked", "relocked": "locked",
               "forced": "forced", "boot": "locked"}
_ALARM_ON = {"forced": "forced", "held_open": "held_open", "tamper": "tamper"}
_ALARM_OFF = {"closed": ("forced", "held_open"), "tamper_cleared": ("tamper",), "tamper_reset": ("tamper",)}


@dataclass
class Line:
    t: float
    text: str
    event: str | None = None
    data: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": round(self.t, 3), "line": self.text}
        if self.event:
            d["event"] = self.event
            d["data"] = self.data
        return d


@dataclass
class State:
    ready: bool = False
    lock: str = "?"
    alarms: list[str] = field(default_factory=list)
    cloud: str = "?"
    firmware: str | None = None
    reset: str | None = None
    provisioned: bool | None = None
    last_event: str | None = None
    events: int = 0
    resets: int = 0

    def apply(self, ln: Line) -> None:
        text = ln.text
        if text.startswith("READY"):
            self.ready = True
        elif text.startswith("cloud: connected"):
            self.cloud = "up"
        elif text.startswith(("cloud: link down", "cloud: connect failed")):
            self.cloud = "down"
        elif "soft reboot" in text or text.startswith("SIM RESET"):
            self.ready = False
            self.resets += 1
        if ln.event is None:
            return
        data = ln.data or {}
        self.events += 1
        self.last_event = ln.event
        if ln.event == "boot":
            self.ready = False
            self.alarms = []
            self.firmware = str(data.get("fw")) if data.get("fw") else self.firmware
            self.reset = str(data.get("reset")) if data.get("reset") else None
            self.provisioned = bool(data.get("provisioned"))
        if ln.event in _LOCK_AFTER:
            self.lock = _LOCK_AFTER[ln.event]
        if ln.event in _ALARM_ON and _ALARM_ON[ln.event] not in self.alarms:
            self.alarms.append(_ALARM_ON[ln.event])
        # A latched tamper alarm outlives the switch closing: the case still refuses shoppers.
        ends = () if ln.event == "tamper_cleared" and (ln.data or {}).get("latched") else _ALARM_OFF.get(ln.event, ())
        for a in ends:
            if a in self.alarms:
                self.alarms.remove(a)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse(text: str, t: float) -> Line:
    ln = Line(t, text)
    if text.startswith("event: "):
        kind, _, rest = text[7:].partition(" ")
        try:
            data = ast.literal_eval(rest) if rest else {}
        except (ValueError, SyntaxError):
            data = {"raw": rest}
        ln.event, ln.data = kind, data if isinstance(data, dict) else {"raw": data}
    return ln


def _open(port: str) -> serial.Serial:
    try:
        return serial.serial_for_url(port, baudrate=115200, timeout=0.2, exclusive=True)
    except serial.SerialException as e:
        if "lock" in str(e) or "busy" in str(e).lower():
            raise DeviceBusy(f"{port} is in use by another program", "close the other serial console and retry") from None
        raise NoDevice(f"no device on {port}", "check the cable and the port name") from None


def follow(port: str, *, duration: float | None = None, stop: Callable[[Line], bool] | None = None,
           reconnect_s: float = 15.0) -> Iterator[Line]:
    """Console lines until `duration` has passed or `stop(line)` is true. The port is opened here,
    so a missing or busy port raises before the caller shows anything."""
    if "://" not in port and not os.path.exists(port):
        raise NoDevice(f"no device on {port}", "check the cable and the port name")
    return _lines(port, _open(port), duration=duration, stop=stop, reconnect_s=reconnect_s)


def _lines(port: str, s: serial.Serial | None, *, duration: float | None, stop: Callable[[Line], bool] | None,
           reconnect_s: float) -> Iterator[Line]:
    t0 = time.monotonic()
    buf = b""
    gone = t0
    try:
        while duration is None or time.monotonic() - t0 < duration:
            if s is None:  # the board reset and its port went away: wait for it to return
                if "://" not in port and not os.path.exists(port):
                    if time.monotonic() - gone > reconnect_s:
                        raise NoDevice(f"{port} did not come back after the device reset")
                    time.sleep(0.05)
                    continue
                try:
                    s = _open(port)
                except NoDevice:
                    time.sleep(0.05)
                    continue
            try:
                chunk = s.read(s.in_waiting or 1)
            except (serial.SerialException, OSError):
                s.close()
                s = None
                gone = time.monotonic()
                yield Line(time.monotonic() - t0, "[port closed: the device is resetting]")
                continue
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                text = raw.decode(errors="replace").strip("\r").rstrip()
                if not text:
                    continue
                ln = parse(text, time.monotonic() - t0)
                yield ln
                if stop and stop(ln):
                    return
    finally:
        if s is not None:
            s.close()
