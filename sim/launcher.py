"""`make sim`: a simulated case in the terminal.

Keys typed go to the case's keypad; a few letters work the door, the tamper switch, the NFC
reader and resets. The display, lock, LED and buzzer are drawn live from the case's state, its
events from its output stream, and the texts the cloud sends from its development SMS outbox.
The screen is laid out to fit the terminal (80x24 and up); the case's console and everything the
cloud logs go to files under build/sim, never onto the screen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import select
import shutil
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from sim.stack import DemoCloud

from sim.demo import DEMO_PIN, MEMBERS, demo_config
from sim.process import REPO, SimCase

# Each key that does something, with what it does; the cloud's keys only when there is a cloud.
CASE_KEYS = [("0-9 * #", "keypad"), ("o", "door"), ("t", "tamper"), ("w", "hang loop"), ("r", "reset"),
             ("q", "quit")]
CLOUD_KEYS = [("c/m/f", "trusted/member/flagged card"), ("a", "app unlock")]
SMS_LINES = 3  # the newest texts shown: the shopper's code is in the newest


def keys_help(cloud: bool, width: int = 1000) -> str:
    """The keys that work, in lines of at most `width` that break between keys only."""
    keys = CASE_KEYS[:3] + (CLOUD_KEYS if cloud else []) + CASE_KEYS[3:]
    lines = [""]
    for entry in (f"{k} {what}" for k, what in keys):
        if lines[-1] and len(lines[-1]) + 2 + len(entry) > width:
            lines.append("")
        lines[-1] += ("  " if lines[-1] else "") + entry
    return "\n".join(lines)


@dataclass
class CloudInfo:
    """What the screen says about the cloud: where its API is and how to call it."""

    api_url: str
    token_file: str
    log_file: str


def _rel(p: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(p.relative_to(REPO))
    return str(p)


class View:
    """The screen: the case's display and parts, the cloud's texts, the case's events, the keys."""

    def __init__(self, cloud: CloudInfo | None, console_log: str) -> None:
        self.cloud = cloud
        self.console_log = console_log
        self.state: dict[str, Any] = {}
        self.events: deque[str] = deque(maxlen=100)

    def apply(self, msg: dict[str, Any]) -> None:
        if msg.get("ev") == "event":
            data = " ".join(f"{k}={v}" for k, v in msg["data"].items())
            self.events.appendleft(f"{msg['t'] / 1000:7.1f}s {msg['type']:<12} {data}")

    def default_note(self) -> str:
        if self.cloud is None:
            return f"no cloud: staff PIN **{DEMO_PIN}# opens it; shoppers are told 'Service offline'"
        return f"staff PIN **{DEMO_PIN}#  ·  logs: {self.console_log}, {self.cloud.log_file}"

    def _top(self) -> Table:
        st = self.state
        outs = st.get("outputs") or {}
        inputs = st.get("inputs") or {}
        lines = outs.get("display") or st.get("display") or ["", ""]
        width = max([16, *(len(str(line)) for line in lines)])
        lcd = Text("\n".join(f"{str(line):<{width}}" for line in lines), style="bold black on green")
        lock = outs.get("lock", 0)
        parts = Table.grid(padding=(0, 1))
        parts.add_row("coil", Text(f"ENERGIZED {lock:.0%}" if lock else "off", style="bold red" if lock else "green"),
                      "lock", str(st.get("lock", "?")))
        parts.add_row("door", Text("OPEN", style="bold") if inputs.get("door") else "closed",
                      "tamper", Text("TRIPPED", style="bold red") if inputs.get("tamper") else "ok")
        parts.add_row("led", "on" if outs.get("led") else "off",
                      "buzzer", f"{outs.get('buzzer')} Hz" if outs.get("buzzer") else "quiet")
        parts.add_row("alarms", ", ".join(st.get("alarms", [])) or "none", "", "")
        top = Table.grid(expand=True)
        top.add_column(width=width + 4)
        top.add_column(ratio=1)
        top.add_row(Panel(lcd, title="display", height=parts.row_count + 2), Panel(parts, title="case"))
        return top

    def render(self, console: Console, note: str = "", sms: list[str] | None = None) -> RenderableType:
        """Everything, in the console's height: the events get the lines the rest leaves."""
        fixed: list[RenderableType] = [self._top()]
        if self.cloud is not None:
            texts = [Text(t, no_wrap=True, overflow="ellipsis") for t in (sms or [])[:SMS_LINES]]
            if not texts:
                texts = [Text("(no texts yet: type a phone number and #)", style="dim")]
            fixed.append(Panel(Group(*texts), title="SMS outbox (texts land here, not on a phone)", height=SMS_LINES + 2))
        tail: list[RenderableType] = []
        if self.cloud is not None:
            tail.append(Text(f"console {self.cloud.api_url}/console · API Bearer token: {self.cloud.token_file}",
                             style="cyan"))
        tail.append(Text(keys_help(self.cloud is not None, console.width), style="dim"))
        tail.append(Text(note or self.default_note(), style="yellow", no_wrap=True, overflow="ellipsis"))
        opts = console.options
        used = sum(len(console.render_lines(r, opts, pad=False)) for r in fixed + tail)
        rows = max(1, console.height - used - 2)  # the events panel's borders
        events = [Text(e, no_wrap=True, overflow="ellipsis") for e in list(self.events)[:rows]]
        if not events:
            events = [Text("(no events yet)", style="dim")]
        return Group(*fixed, Panel(Group(*events), title="events, newest first", height=rows + 2), *tail)


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Everything logged in this process meanwhile (the cloud, its web server, the broker,
    warnings, a thread's crash) goes to `path`, this run's alone: the terminal is the case's
    screen. Python's own last-resort handler would print a warning there."""
    # the cloud's own JSON lines (docs/operations.md), redacted alike
    from casecloud.logs import formatter

    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(formatter())
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook)

    def thread_crashed(a: threading.ExceptHookArgs) -> None:
        exc: tuple[type[BaseException], BaseException, TracebackType | None] | None = None
        if a.exc_value is not None:
            exc = (a.exc_type, a.exc_value, a.exc_traceback)
        logging.getLogger("sim").error("thread %s crashed", a.thread.name if a.thread else "?", exc_info=exc)

    for h in saved[0]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    threading.excepthook = thread_crashed
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.captureWarnings(False)
        threading.excepthook = saved[2]


def quietly(fn: Callable[[], Any]) -> Callable[[], None]:
    """`fn` for a timer or thread: a case that resets meanwhile is no error."""

    def run() -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            fn()

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make sim", description=__doc__)
    ap.add_argument("--no-cloud", action="store_true", help="a case with no cloud: staff access only")
    args = ap.parse_args(argv)
    work = REPO / "build" / "sim"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        return _run(args.no_cloud, work, stack)


def _run(no_cloud: bool, work: Path, stack: contextlib.ExitStack) -> int:
    cfg = demo_config()
    cloud = None
    info = None
    if not no_cloud:
        try:  # the cloud is an extra: a technician's casectl does without it
            from sim.stack import DemoCloud
        except ModuleNotFoundError as e:
            print(f"make sim: {e.name} is missing: install lockcase[sim] for the simulator "
                  "(`make setup` in a checkout), or run it with --no-cloud", file=sys.stderr)
            return 2

        cloud_log = work / "cloud.log"
        print(f"Starting the cloud (embedded broker, worker, API; its log: {_rel(cloud_log)}) ...")
        stack.enter_context(logging_to(cloud_log))
        cloud = DemoCloud(work)
        stack.callback(cloud.stop)
        cloud.start()
        cfg["cloud"] = cloud.case_cloud_config()
        info = CloudInfo(cloud.api_url, _rel(cloud.token_file), _rel(cloud_log))
        # Printed before the screen takes over (they stay in the terminal's scrollback), and kept in
        # the logins file: one account a role, to watch a forced door raise an alarm on the console.
        print(f"Store console: {cloud.api_url}/console  (logins also in {_rel(cloud.login_file)})")
        for role, email, password in cloud.logins:
            print(f"  {role:<9} {email:<32} password {password}")
    # Provisioned anew every run (the cloud rotated the case's key), so start from a blank flash.
    shutil.rmtree(work / "case1", ignore_errors=True)
    case = SimCase(work / "case1", cfg, heap="512k")
    print(f"Starting a simulated case (flash image {_rel(case.flash)}) ...")
    case.start()
    view = View(info, _rel(case.log_path))
    note = ""
    boots = case.boots
    client = case.client()
    client.call("watch")
    # Keys go out one at a time at a human pace, so fast typing or a paste is not lost to the
    # keypad's debounce (a key pressed again while still held is one press).
    keyq: queue.Queue[str] = queue.Queue()

    def send_keys() -> None:
        while True:
            k = keyq.get()
            quietly(lambda k=k: client.call("key", key=k, hold_ms=60))()
            time.sleep(0.13)

    threading.Thread(target=send_keys, daemon=True).start()
    console = Console()
    try:
        # Nothing but the Live writes to the terminal meanwhile: stray output would break its frame.
        with raw_terminal(), Live(view.render(console), console=console, refresh_per_second=20, screen=False,
                                  redirect_stdout=False, redirect_stderr=False) as live, \
                open(work / "stray-output.log", "a") as stray, contextlib.redirect_stderr(stray):
            while True:
                if case.boots != boots:  # the case reset: reconnect
                    case.wait_ready()
                    boots = case.boots
                    client = case.client()
                    client.call("watch")
                    view.events.appendleft(f"{'':>8} (the case reset and booted again: its boot event says why)")
                    note = ""
                with contextlib.suppress(queue.Empty):
                    while True:
                        view.apply(client.stream.get_nowait())
                with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                    view.state = client.state()
                live.update(view.render(console, note, cloud.outbox(SMS_LINES) if cloud else None))
                ready, _, _ = select.select([sys.stdin], [], [], 0.05)
                if not ready:
                    continue
                ch = os.read(sys.stdin.fileno(), 1).decode(errors="ignore")
                if not ch:
                    break
                ch = ch.upper() if ch in "abcd" and view.state.get("keypad") == "4x4" else ch
                try:
                    if ch in "0123456789*#":
                        keyq.put(ch)
                    elif ch == "o":
                        client.call("door", open=not view.state.get("inputs", {}).get("door"))
                    elif ch == "t":
                        client.call("tamper", on=not view.state.get("inputs", {}).get("tamper"))
                    elif ch == "w":
                        note = "main loop stalled: the watchdog will reset the case"
                        client.sock.sendall(json.dumps({"cmd": "hang"}).encode() + b"\n")
                    elif ch in "cmf" and cloud is not None:
                        label, card, _, _ = MEMBERS["cmf".index(ch)]
                        # Put the card on the emulated PN532's antenna, then take it away again.
                        r = client.call("card", uid=card)
                        threading.Timer(1.0, quietly(lambda c=client: c.call("remove"))).start()
                        note = f"tapped the {label} on the reader" if r.get("ok") else f"card: {r.get('error')}"
                    elif ch == "a" and cloud is not None:

                        def press(demo: DemoCloud = cloud, card: str = MEMBERS[0][1]) -> None:
                            nonlocal note
                            note = demo.app_unlock(card)

                        threading.Thread(target=press, daemon=True).start()
                        note = "the trusted member pressed unlock in the app ..."
                    elif ch == "r":
                        client.call("reset", cause="hard")
                    elif ch == "q":
                        break
                except (ConnectionError, TimeoutError, OSError):
                    note = "lost the control socket; waiting for the case"
    finally:
        case.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
