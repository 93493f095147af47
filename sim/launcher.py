"""`make sim`: a simulated case in the terminal.

Keys typed go to the case's keypad; a few letters work the door, the tamper switch and resets.
The display, lock, LED and buzzer are drawn live from the sim's output stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from collections import deque
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sim.demo import DEMO_PIN, MEMBERS, demo_config
from sim.process import REPO, SimCase

HELP = ("0-9 * # keypad | o door open/close | t tamper | c trusted card | m member card | f flagged card"
        " | a app unlock | w hang loop | r reset | q quit")


class View:
    def __init__(self) -> None:
        self.outputs: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.events: deque[str] = deque(maxlen=12)

    def apply(self, msg: dict[str, Any]) -> None:
        if msg.get("ev") == "out":
            self.outputs[msg["name"]] = msg["value"]
        elif msg.get("ev") == "event":
            data = " ".join(f"{k}={v}" for k, v in msg["data"].items())
            self.events.appendleft(f"{msg['t'] / 1000:8.1f}s  {msg['type']:<14} {data}")

    def render(self, note: str, sms: list[str] | None = None) -> Group:
        lines = self.outputs.get("display") or self.state.get("display") or ["", ""]
        lcd = Text("\n".join(f"{str(line):<16}"[:16] for line in lines), style="bold black on green")
        lock = self.outputs.get("lock", 0)
        door = "OPEN" if self.state.get("inputs", {}).get("door") else "closed"
        t = Table.grid(padding=(0, 2))
        t.add_row("coil", Text(f"ENERGIZED {lock:.0%}" if lock else "off (locked)",
                               style="bold red" if lock else "green"))
        t.add_row("door", door)
        t.add_row("tamper", "TRIPPED" if self.state.get("inputs", {}).get("tamper") else "ok")
        t.add_row("led", "on" if self.outputs.get("led") else "off")
        t.add_row("buzzer", f"{self.outputs.get('buzzer')} Hz" if self.outputs.get("buzzer") else "quiet")
        t.add_row("lock state", str(self.state.get("lock", "?")))
        t.add_row("alarms", ", ".join(self.state.get("alarms", [])) or "none")
        return Group(
            Panel(lcd, title="display", width=22),
            Panel(t, title="case"),
            Panel("\n".join(self.events) or "(no events yet)", title="events"),
            Panel("\n".join(sms or []) or "(no texts yet: type a phone number and #)",
                  title="SMS outbox (development: texts land here, not on a phone)"),
            Text(HELP, style="dim"),
            Text(note, style="yellow"),
        )


@contextlib.contextmanager
def raw_terminal():
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


def main() -> int:
    import argparse
    import shutil

    ap = argparse.ArgumentParser(prog="make sim", description=__doc__)
    ap.add_argument("--no-cloud", action="store_true", help="a case with no cloud: staff access only")
    args = ap.parse_args()
    work = REPO / "build" / "sim"
    cfg = demo_config()
    cloud = None
    if not args.no_cloud:
        try:  # the cloud is an extra: a technician's casectl does without it
            from sim.stack import DemoCloud
        except ModuleNotFoundError as e:
            print(f"make sim: {e.name} is missing: install lockcase[sim] for the simulator "
                  "(`make setup` in a checkout), or run it with --no-cloud", file=sys.stderr)
            return 2

        print("Starting the cloud (embedded broker, worker, API) ...")
        cloud = DemoCloud(work).start()
        cfg["cloud"] = cloud.case_cloud_config()
    # Provisioned anew every run (the cloud rotated the case's key), so start from a blank flash.
    shutil.rmtree(work / "case1", ignore_errors=True)
    case = SimCase(work / "case1", cfg, heap="512k")
    print(f"Starting a simulated case (flash image {case.flash.relative_to(REPO)}) ...")
    case.start()
    view = View()
    note = f"Staff PIN for the demo: **{DEMO_PIN}#   console log: {case.log_path.relative_to(REPO)}"
    boots = case.boots
    client = case.client()
    client.call("watch")
    # Keys go out one at a time at a human pace, so fast typing or a paste is not lost to the
    # keypad's debounce (a key pressed again while still held is one press).
    keyq: queue.Queue[str] = queue.Queue()

    def send_keys() -> None:
        while True:
            k = keyq.get()
            with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                client.call("key", key=k, hold_ms=60)
            time.sleep(0.13)

    threading.Thread(target=send_keys, daemon=True).start()
    try:
        with raw_terminal(), Live(view.render(note), refresh_per_second=20, screen=False) as live:
            while True:
                if case.boots != boots:  # the case reset: reconnect
                    case.wait_ready()
                    boots = case.boots
                    client = case.client()
                    client.call("watch")
                    note = "the case reset and booted again (see the boot event for why)"
                with contextlib.suppress(queue.Empty):
                    while True:
                        view.apply(client.stream.get_nowait())
                with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                    view.state = client.state()
                live.update(view.render(note, cloud.outbox() if cloud else None))
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
                        threading.Timer(1.0, client.call, args=("remove",)).start()
                        note = f"tapped the {label} on the reader" if r.get("ok") else f"card: {r.get('error')}"
                    elif ch == "a" and cloud is not None:
                        def press(card: str = MEMBERS[0][1]) -> None:
                            nonlocal note
                            note = cloud.app_unlock(card)

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
        if cloud is not None:
            cloud.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
