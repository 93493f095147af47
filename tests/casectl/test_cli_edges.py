"""casectl as a new technician meets it: every option's help, the errors that must come before any
output and say what to do, `status` on a narrow terminal, and `monitor` drawn on a real terminal
(a pseudo-terminal, its output replayed through a small terminal model)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
from collections.abc import Callable
from pathlib import Path

import typer

from casecloud import registry
from casectl.cli import app
from casectl.device import Device
from sim.device import SimDevice
from tests.casectl.conftest import CASECTL, TOKEN, CloudServer, cli
from tests.casectl.holders import wait_holding

# -- help -------------------------------------------------------------------------------------------


def _words(text: str) -> str:
    """Text without the help panel's borders and line breaks: what a reader reads."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_option_of_every_command_says_what_it_does() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert "deploy" in commands and "status" in commands
    for name, cmd in commands.items():
        r = cli(name, "--help", env={"COLUMNS": "400"})
        assert r.code == 0, r.all
        shown = _words(r.out)
        for p in cmd.params:
            text = getattr(p, "help", None)
            assert text, f"{name} {p.name}: no help text"
            # all of it: rich markup in a help text ("[default: x]") vanished from the screen
            assert _words(text) in shown, f"`casectl {name} --help` does not show {p.name}'s help {text!r}:\n{r.out}"


# -- errors before anything else --------------------------------------------------------------------


def test_selftest_on_a_board_without_the_firmware_says_deploy_first(device: SimDevice) -> None:
    r = cli("selftest", device.port, "--key-wait", "0")
    assert r.code == 14, r.all
    assert "has no LockCase firmware" in r.err and f"casectl deploy {device.port}" in r.err, r.err
    assert "Traceback" not in r.all and "ImportError" not in r.all
    r = cli("selftest", device.port, "--key-wait", "0", "--json")
    assert r.code == 14 and r.json()["error"]["code"] == "not_deployed", r.all
    # a manifest but not the firmware's modules (a deploy from before the self-test, or cut short)
    with Device(device.port) as dev:
        dev.write_file("manifest.json", json.dumps({"board": "sim", "version": "0.0.1", "files": {}}).encode())
    r = cli("selftest", device.port, "--key-wait", "0")
    assert r.code == 14, r.all
    assert "cannot run the self-test" in r.err and "deploy the current firmware" in r.err, r.err
    assert "Traceback" not in r.all


def test_monitor_on_a_missing_port_errors_before_drawing_anything(tmp_path: Path) -> None:
    for extra in ((), ("--json",)):
        r = cli("monitor", tmp_path / "ttyNOPE", "--duration", "1", *extra)
        assert r.code == 3, r.all
        assert r.out == "" if not extra else r.json()["error"]["code"] == "no_device"
        if not extra:
            assert r.err.startswith("error: no device on"), r.err  # no empty panel first


def test_status_of_an_unknown_store_is_an_error_and_an_empty_store_is_not(cloud: CloudServer) -> None:
    r = cli("status", "--store", "nope", "--cloud", cloud.url)
    assert r.code == 2, r.all
    assert "the cloud has no store nope" in r.err and "s1" in r.err, r.err
    r = cli("status", "--store", "nope", "--cloud", cloud.url, "--json")
    assert r.code == 2 and r.json()["error"]["code"] == "usage", r.all
    with cloud.rt.sessions.begin() as s:
        registry.create_store(s, "s2", cloud.rt.now())
    r = cli("status", "--store", "s2", "--cloud", cloud.url)
    assert r.code == 0 and "no cases in store s2" in r.out, r.all
    r = cli("status", "--store", "s2", "--cloud", cloud.url, "--json")
    assert r.code == 0 and r.json()["cases"] == [], r.all


# -- status on a narrow terminal --------------------------------------------------------------------


def test_status_never_cuts_a_case_or_store_id(cloud: CloudServer) -> None:
    store, case = "store-downtown-0042-east-wing-a", "aisle-07-razors-left-bay-0123456"  # 31 and 32
    with cloud.rt.sessions.begin() as s:
        registry.create_store(s, store, cloud.rt.now(), name="Downtown")
        registry.register_case(s, store, case, cloud.rt.now(), name="Razors, aisle 7")
        registry.register_case(s, "s1", "c1", cloud.rt.now())
    for cols in (60, 80, 100, 200):
        r = cli("status", "--cloud", cloud.url, env={"COLUMNS": str(cols)})
        assert r.code == 0, r.all
        lines = r.out.splitlines()
        assert all(len(x) <= cols for x in lines), r.out
        assert "…" not in r.out, f"cut at {cols} columns:\n{r.out}"
        for ident in (case, store, "c1"):
            assert any(re.search(rf"(^|\W){ident}(\W|$)", x) for x in lines), f"{ident} not whole at {cols}:\n{r.out}"
        assert "Razors, aisle 7" in _words(r.out) and "v0/v0" in r.out
    # wide enough, one row per case
    r = cli("status", "--cloud", cloud.url, env={"COLUMNS": "200"})
    row = next(x for x in r.out.splitlines() if case in x)
    assert store in row and "no" in row and "v0/v0" in row, r.out


# -- monitor on a terminal --------------------------------------------------------------------------


class Screen:
    """The part of a terminal rich's Live display uses: printable text, CR, LF, cursor up/down,
    column moves, erase in line and display, and colours and modes (ignored)."""

    CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.r = self.c = 0

    def _row(self) -> list[str]:
        while len(self.rows) <= self.r:
            self.rows.append([])
        return self.rows[self.r]

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            m = self.CSI.match(text, i) if ch == "\x1b" else None
            if m:
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\x1b":
                raise AssertionError(f"escape sequence the model does not know: {text[i:i + 12]!r}")
            if ch == "\r":
                self.c = 0
            elif ch == "\n":
                self.r += 1
                self._row()
            elif ch in "\x07\x08":
                pass
            else:
                row = self._row()
                while len(row) < self.c:
                    row.append(" ")
                if self.c < len(row):
                    row[self.c] = ch
                else:
                    row.append(ch)
                self.c += 1
            i += 1

    def _csi(self, params: str, op: str) -> None:
        n = int(params) if params.isdigit() else None
        if op == "A":
            self.r = max(0, self.r - (n or 1))
        elif op == "B":
            self.r += n or 1
            self._row()
        elif op == "G":
            self.c = (n or 1) - 1
        elif op == "K":
            row = self._row()
            if n == 2:
                row.clear()
            elif not n:
                del row[self.c:]
        elif op == "J" and not n:
            del self.rows[self.r + 1:]
            del self._row()[self.c:]
        elif op not in "mhl":
            raise AssertionError(f"CSI {params}{op} is not modelled")

    def lines(self) -> list[str]:
        return ["".join(x).rstrip() for x in self.rows]


def _on_a_terminal(args: list[str], *, cols: int,
                   during: Callable[[subprocess.Popen[bytes]], None] | None = None) -> tuple[int, str]:
    """Run casectl with stdout and stderr on one pseudo-terminal, as in a technician's shell;
    `during(process)` runs beside it once it started. Returns the exit status and all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = dict(os.environ, CASECTL_TOKEN=TOKEN, COLUMNS=str(cols), LINES="50", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    p = subprocess.Popen([CASECTL, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    worker = threading.Thread(target=during, args=(p,)) if during else None
    if worker:
        worker.start()
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        code = p.wait(30)
    finally:
        if worker:
            worker.join(30)
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return code, out.decode(errors="replace")


def test_monitor_on_a_terminal_prints_whole_lines_above_one_panel(deployed: SimDevice) -> None:
    def work_the_case(monitor: subprocess.Popen[bytes]) -> None:
        # Once the monitor has the port open (it was a second after its start: a race with a
        # process start on a loaded machine), each door held until the case has seen it (0.3 s
        # on a wall clock was lost whole when the case's loop stalled past the debounce).
        wait_holding(monitor, deployed.port)
        ctl = deployed.ctl()
        try:
            for _ in range(3):  # no grant: forced entry, then closed; each an event line
                ctl.door(True)
                ctl.door(False)
        finally:
            ctl.close()

    # --duration counts from the port's opening: 10 s for three cycles of a fraction of a second
    code, raw = _on_a_terminal(["monitor", deployed.port, "--duration", "10"], cols=100, during=work_the_case)
    assert code == 0, raw
    screen = Screen()
    screen.feed(raw)
    lines = [x for x in screen.lines() if x.strip()]
    text = "\n".join(lines)
    events = [x for x in lines if re.match(r"^\s*\d+\.\d\d  ", x)]
    assert sum("event: forced" in x for x in events) == 3, text
    assert sum("event: closed" in x for x in events) == 3, text
    times = [float(x.split()[0]) for x in events]
    assert times == sorted(times), text  # in order, none overwritten by the panel
    # the panel once, under every line, whole
    tops = [i for i, x in enumerate(lines) if x.startswith("╭")]
    assert len(tops) == 1 and lines[tops[0]:][-1].startswith("╰"), text
    assert lines.index(events[-1]) < tops[0], text
    panel = "\n".join(lines[tops[0]:])
    assert deployed.port in lines[tops[0]] and "lock" in panel
    assert re.search(r"last event\s+closed \(\d+ seen\)", panel), panel
    assert all(not re.search(r"[│╭╰]", x) for x in events), text
