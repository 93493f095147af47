"""`make sim` as a newcomer sees it: the screen fits a terminal of 80x24, it shows how to call the
API, nothing the cloud logs reaches it, and without a cloud it offers only the keys that work."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from sim.launcher import CloudInfo, View, keys_help, logging_to

CODE_SMS = "to ********43: Your LockCase code: 683364. It expires in 2 minutes."
INFO = CloudInfo("http://127.0.0.1:40123", "build/sim/api-token", "build/sim/cloud.log")


def busy_view(cloud: CloudInfo | None) -> View:
    """A view after a long session: every alarm, the coil pulling, far more events than fit."""
    v = View(cloud, "build/sim/case1/console.log")
    v.state = {"lock": "released", "alarms": ["forced", "held_open", "tamper"], "inputs": {"door": 1, "tamper": 1},
               "outputs": {"display": ["Close the door", "Door left open"], "lock": 0.4, "led": 1, "buzzer": 2700}}
    for i in range(60):
        v.apply({"ev": "event", "t": 1000 * i, "type": "granted",
                 "data": {"source": "nfc", "who": f"g_{i:012x}", "g": i, "ms": 5000}})
    return v


def screen(v: View, sms: list[str] | None, width: int = 80, height: int = 24) -> list[str]:
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None)
    console.print(v.render(console, "", sms))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (132, 43)])
def test_everything_fits_and_the_texted_code_shows_in_full(size: tuple[int, int]) -> None:
    width, height = size
    lines = screen(busy_view(INFO), [CODE_SMS, "to ********02: Your LockCase code: 111111.", "older"], width, height)
    assert len(lines) <= height, "\n".join(lines)
    assert all(len(line) <= width for line in lines)
    shown = "\n".join(lines)
    assert CODE_SMS in shown  # the whole text, the code included, on one line
    assert "SMS outbox" in shown and "Close the door" in shown and "ENERGIZED" in shown
    assert "granted" in shown  # the newest events get the room the rest leaves
    assert "q quit" in shown


def test_the_screen_says_how_to_call_the_api() -> None:
    shown = "\n".join(screen(busy_view(INFO), []))
    assert "http://127.0.0.1:40123" in shown and "build/sim/api-token" in shown and "Bearer" in shown
    assert "http://127.0.0.1:40123/console" in shown  # the store console, where make sim's logins go
    assert "build/sim/cloud.log" in shown  # where the cloud's log lines go instead


def test_without_a_cloud_only_the_keys_that_work() -> None:
    assert "c/m/f" in keys_help(cloud=True) and "app unlock" in keys_help(cloud=True)
    help_text = keys_help(cloud=False)
    assert "card" not in help_text and "app" not in help_text and "c/m/f" not in help_text
    shown = "\n".join(screen(busy_view(None), None))
    assert "SMS" not in shown and "API" not in shown and "card" not in shown
    assert "no cloud" in shown and "**1234#" in shown


def test_cloud_logging_goes_to_the_file_not_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "cloud.log"
    root = logging.getLogger()
    before = (list(root.handlers), root.level, threading.excepthook)
    with logging_to(log):
        logging.getLogger("casecloud.worker").warning("rejected replay on lockcase/v1/s/c/status")
        # (uvicorn's own loggers too, in make sim's process: DemoCloud gives it no log config of its
        # own. Not checked here: another test's uvicorn may have configured them in this one.)
        logging.getLogger("amqtt.broker").error("a broker error")
        warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)
        t = threading.Thread(target=lambda: 1 / 0, name="crashing")
        t.start()
        t.join()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    text = log.read_text()
    assert "rejected replay" in text and "a broker error" in text and "something deprecated" in text
    assert "thread crashing crashed" in text and "ZeroDivisionError" in text
    assert (list(root.handlers), root.level, threading.excepthook) == before  # put back as it was
