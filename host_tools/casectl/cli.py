"""casectl: set up LockCase cases from a laptop with a USB cable.

Thin commands over one module per job: build, flash, device (mpremote transport), deploy,
provision, label, cloudapi, monitor. Every command takes --json for scripts: one JSON document on
stdout (monitor: one per line), nothing on stderr, and the exit status of the error's class
(docs/provisioning.md lists them).

One module of ~600 lines on purpose: typer's command table, where each command is a thin wrapper
(its options, each with its help, and its human or JSON output) over the module that does the
work; the option declarations are most of its length, and one table is what a reader of
`casectl --help` wants to find in one place.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from casectl import __version__
from casectl.errors import CasectlError, Usage
from casectl.output import Out, secret

app = typer.Typer(help="LockCase technician's tool: build, flash, deploy, provision and watch cases.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

F = TypeVar("F", bound=Callable[..., Any])

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (one JSON document on stdout).")]
Port = Annotated[str, typer.Argument(help="Serial port of the board, e.g. /dev/ttyACM0.", show_default=False)]
CloudUrl = Annotated[str, typer.Option("--cloud", envvar="CASECTL_CLOUD", help="Cloud service URL.")]
TokenFile = Annotated[Path | None, typer.Option(
    "--token-file", help="File holding an API token (else CASECTL_TOKEN or CASECTL_TOKEN_FILE).")]
DEFAULT_CLOUD = "http://127.0.0.1:8080"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"casectl {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    pass


def command(fn: F) -> F:
    """Turn CasectlErrors into a message with a hint (or a JSON error) and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Out(bool(kwargs.get("json_out")))
        try:
            return fn(out, *args, **kwargs)
        except CasectlError as e:
            if out.json_mode:
                out.document({"ok": False, "error": e.as_dict(), "data": e.data})
            else:
                # Plain text, not markup: "lockcase[sim]" or a path with brackets stays as it is.
                out.err.print(f"[bold red]error:[/] {escape(e.message)}")
                if e.hint:
                    out.err.print(f"[yellow]hint:[/] {escape(e.hint)}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            out.info("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    # typer reads the signature: hide the injected `out` parameter from it.
    import inspect

    sig = inspect.signature(fn, eval_str=True)
    wrapper.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _cloud(url: str, token_file: Path | None) -> Any:
    from casectl.cloudapi import Cloud, resolve_token

    token = resolve_token(token_file)
    secret(token)
    return Cloud(url, token)


# -- build ------------------------------------------------------------------------------------------
@app.command()
@command
def build(
    out: Out,
    board: Annotated[str, typer.Option("--board", "-b", help="Board to build for (sim, esp32s3, picow).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: build/<board>).")] = None,
    src: Annotated[Path | None, typer.Option("--src", help="Firmware source tree (default: the firmware casectl comes with).")] = None,
    fw_version: Annotated[str | None, typer.Option("--fw-version", help="Version to stamp on the build (default: the firmware's own).")] = None,
    clean: Annotated[bool, typer.Option("--clean", help="Recompile every file, not only the changed ones.")] = False,
    json_out: Json = False,
) -> None:
    """Compile the firmware and its device packages with mpy-cross into build/<board>/."""
    from casectl import build as b

    target = out_dir or b.BUILD / board
    srcs = b.sources(board, src or b.FIRMWARE)
    with out.progress() as p:
        p.add_task("device packages", total=None)
        if b.ensure_device_packages():
            srcs = b.sources(board, src or b.FIRMWARE)
    with out.progress() as p:
        task = p.add_task(f"compiling for {board}", total=len(srcs))
        built = b.compile_board(board, target, firmware=src or b.FIRMWARE, version=fw_version,
                                incremental=not clean, progress=lambda _d: p.advance(task))
    man = b.read_manifest(target)
    if out.json_mode:
        out.document({"ok": True, "board": board, "out": str(target), "version": man["version"],
                      "mpy": man["mpy"], "files": [{"path": x.path, "size": x.size, "sha256": x.sha256} for x in built],
                      "total_bytes": man["total_bytes"]})
        return
    mpy = man["mpy"]
    t = Table("file", "bytes", title=f"{board} firmware {man['version']}, mpy v{mpy['version']}.{mpy['sub']}")
    groups: dict[str, int] = {}
    for x in built:
        top = x.path.split("/")[0] if "/" in x.path else x.path
        groups[top] = groups.get(top, 0) + x.size
    for name, size in sorted(groups.items()):
        t.add_row(name, f"{size:,}")
    t.add_row("[bold]total[/]", f"[bold]{man['total_bytes']:,}[/]")
    out.out.print(t)
    out.out.print(f"{len(built)} files in {target}, manifest {target / 'manifest.json'}")


# -- flash ------------------------------------------------------------------------------------------
@app.command()
@command
def flash(
    out: Out,
    board: Annotated[str | None, typer.Option("--board", "-b", help="Board to flash: esp32s3 or picow.")] = None,
    port: Annotated[str | None, typer.Option("--port", "-p", help="Serial port (default: the one board found).")] = None,
    mp_version: Annotated[str | None, typer.Option("--mp-version", help="MicroPython version to flash (default: the one casectl is tested with).")] = None,
    erase: Annotated[bool, typer.Option("--erase", help="Erase the whole flash first (removes all files).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be flashed, change nothing.")] = False,
    list_only: Annotated[bool, typer.Option("--list", help="List connected boards and exit.")] = False,
    json_out: Json = False,
) -> None:
    """Put MicroPython itself on a board (mpflash: esptool for ESP32, UF2 for RP2)."""
    from casectl import flash as fl

    with out.progress() as p:
        p.add_task("looking for connected boards", total=None)
        boards = fl.list_boards(port)
    if list_only:
        if out.json_mode:
            out.document({"ok": True, "boards": [b.__dict__ for b in boards]})
            return
        t = Table("port", "family", "mp port", "board", "cpu", "version", title="connected boards")
        for b in boards:
            t.add_row(b.serialport, b.family, b.port, b.board_id, b.cpu, b.version)
        out.out.print(t if boards else "no boards found")
        return
    if not board:
        raise Usage("--board is required", "e.g. `casectl flash --board esp32s3`")
    plan = fl.plan(board, port, boards, version=mp_version or fl.MICROPYTHON_VERSION, erase=erase)
    if out.json_mode and dry_run:
        out.document({"ok": True, "dry_run": True, "plan": plan.as_dict()})
        return
    if not out.json_mode:
        t = Table.grid(padding=(0, 2))
        t.add_row("board", f"{board} ({plan.mp_board})")
        t.add_row("port", plan.serialport)
        t.add_row("MicroPython", plan.version)
        t.add_row("method", plan.method + (" after erasing the flash" if erase else ""))
        for n in plan.notes:
            t.add_row("note", n)
        t.add_row("command", " ".join(plan.command))
        out.out.print(t)
    if dry_run:
        out.info("[yellow]dry run: nothing was flashed[/]")
        return
    fl.run(plan, quiet=out.json_mode)
    if out.json_mode:
        out.document({"ok": True, "plan": plan.as_dict()})
    else:
        out.out.print(f"[green]MicroPython {plan.version} flashed on {plan.serialport}[/]; next: casectl deploy {plan.serialport}")


# -- deploy -----------------------------------------------------------------------------------------
class _DeployProgress:
    def __init__(self, p: Any) -> None:
        self.p = p
        self.task = p.add_task("connecting", total=None)

    def phase(self, text: str) -> None:
        self.p.update(self.task, description=text)

    def copy_start(self, files: int, total_bytes: int) -> None:
        self.p.update(self.task, description=f"copying {files} files", total=total_bytes or None, completed=0)

    def copy_file(self, path: str) -> None:
        self.p.update(self.task, description=f"copying {path}")

    def copied(self, nbytes: int) -> None:
        self.p.advance(self.task, nbytes)


@app.command()
@command
def deploy(
    out: Out,
    port: Port,
    board: Annotated[str | None, typer.Option(
        "--board", "-b", help="Board to build for (default: the board of the firmware on the device, else of its chip).")] = None,
    build_dir: Annotated[Path | None, typer.Option("--build-dir", help="Deploy this build folder as it is, without building.")] = None,
    src: Annotated[Path | None, typer.Option(
        "--src", help="Firmware source tree to build from (default: the firmware casectl comes with).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Deploy even if the build is for another board than the device.")] = False,
    no_reset: Annotated[bool, typer.Option(
        "--no-reset", help="Leave the device at the REPL afterwards (its watchdog fed), not running the firmware.")] = False,
    json_out: Json = False,
) -> None:
    """Copy the built firmware to the device: only what differs, staged, verified, then swapped."""
    from casectl import build as b
    from casectl import deploy as dp
    from casectl.device import Device

    with out.progress(transfer=True) as p, Device(port) as dev:
        prog = _DeployProgress(p)
        if build_dir is None:
            name = board or dp.board_of(dev)
            if not name:
                raise Usage(f"cannot tell which board {port} is", "pass --board")
            build_dir = b.BUILD / name
            prog.phase(f"building for {name}")
            b.ensure_device_packages()
            b.compile_board(name, build_dir, firmware=src or b.FIRMWARE, incremental=True)
        report = dp.deploy(dev, build_dir, force=force, reset=not no_reset, progress=prog)
    if out.json_mode:
        out.document({"ok": True, **report.as_dict()})
        return
    what = (f"sent {len(report.sent)} files ({report.bytes_sent:,} bytes)" if report.sent else "no files to send")
    if report.reused_from_stage:
        what += f", {len(report.reused_from_stage)} already staged by an earlier run"
    out.out.print(f"[green]deployed[/] {report.board} firmware {report.version} to {port}: {what}, "
                  f"{report.unchanged} unchanged, all {report.files} verified on the device"
                  + (f"; finished an interrupted update first ({report.finished_interrupted_swap} files)"
                     if report.finished_interrupted_swap is not None else "")
                  + (", device reset" if report.reset else "") + f" ({report.seconds:.1f} s)")


# -- provision --------------------------------------------------------------------------------------
def _step_line(s: dict[str, Any]) -> str:
    mark = {"pass": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}
    return f"  {mark.get(s['status'], '?')} {s['step']}: {s['detail']}"


@app.command()
@command
def provision(
    out: Out,
    port: Port,
    store: Annotated[str, typer.Option("--store", help="Store id (must exist in the cloud, or --create-store).")],
    case: Annotated[str, typer.Option("--case", help="Case id, unique across the cloud.")],
    name: Annotated[str, typer.Option("--name", help="What the case holds, e.g. 'Razors, aisle 7'.")] = "",
    country: Annotated[str, typer.Option("--country", help="Country for shoppers' phone numbers.")] = "US",
    display: Annotated[str | None, typer.Option(
        "--display", help="Display fitted: lcd1602, lcd2004, ssd1306 or none (default: the firmware's).")] = None,
    keypad: Annotated[str | None, typer.Option("--keypad", help="Keypad fitted: 4x3 or 4x4 (default: the firmware's).")] = None,
    nfc: Annotated[str | None, typer.Option(
        "--nfc", help="NFC reader and its bus: pn532-i2c, pn532-spi, pn532-uart or mfrc522-spi (default: none).")] = None,
    unlock_ms: Annotated[int | None, typer.Option(
        "--unlock-ms", help="Milliseconds a grant holds the lock open (default: the firmware's).")] = None,
    pull_in_ms: Annotated[int | None, typer.Option(
        "--pull-in-ms", help="Milliseconds the solenoid gets full power to pull in (default: the firmware's).")] = None,
    hold_duty: Annotated[float | None, typer.Option(
        "--hold-duty", help="Coil duty that holds the lock open after pull-in, 0.1-1 (default: the firmware's).")] = None,
    held_open_s: Annotated[int | None, typer.Option(
        "--held-open-s", help="Seconds the door may stay open before the held-open alarm (default: the firmware's).")] = None,
    staff_file: Annotated[Path | None, typer.Option(
        "--staff-file", help='JSON: {"salt"?, "pins": [{"id","pin"}], "badges": [{"id","uid"}]}.')] = None,
    staff_pin: Annotated[list[str] | None, typer.Option(
        "--staff-pin", help="Staff id to add a PIN for (asked for, hidden); repeatable.")] = None,
    staff_salt: Annotated[str | None, typer.Option(
        "--staff-salt", help="Store-wide salt (hex) so cloud-pushed staff hashes work on every case.")] = None,
    wifi_ssid: Annotated[str | None, typer.Option(
        "--wifi-ssid", help="Wi-Fi network (password from CASECTL_WIFI_PASSWORD, or asked for).")] = None,
    ca: Annotated[Path | None, typer.Option("--ca", help="Broker CA certificate (PEM or DER) for TLS.")] = None,
    ota_key: Annotated[Path | None, typer.Option(
        "--ota-key", help="The fleet's release public key file (.pub): the case takes releases signed with it.")] = None,
    ota_key_fingerprint: Annotated[str | None, typer.Option(
        "--ota-key-fingerprint", help="Or the cloud's release key, if its fingerprint starts with this (16+ hex).")] = None,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    create_store: Annotated[bool, typer.Option("--create-store", help="Create the store if missing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-provision: replace the device's identity, rotate the cloud keys.")] = False,
    no_selftest: Annotated[bool, typer.Option("--no-selftest", help="Skip the on-device self-test.")] = False,
    key_wait: Annotated[int, typer.Option("--key-wait", help="Seconds the self-test waits for a key press (0: none).")] = 15,
    online_timeout: Annotated[float, typer.Option(
        "--online-timeout", min=0,
        help="Seconds the case has to come back online before success is reported (0: no wait).")] = 90,
    labels: Annotated[Path, typer.Option("--labels", help="Folder for the QR label (PNG and SVG).")] = Path("labels"),
    link: Annotated[str | None, typer.Option(
        "--link", help="Unlock link template with {cloud} {store} {case} (default: {cloud}/app/unlock?case={case}).")] = None,
    json_out: Json = False,
) -> None:
    """Give a device its identity: register it with the cloud, write its config, self-test it,
    and write its QR label."""
    from casectl import provision as pv
    from casectl.device import Device
    from casectl.label import DEFAULT_LINK

    st = pv.Staff.from_file(staff_file) if staff_file else pv.Staff()
    if staff_salt:
        st.salt = staff_salt
    for sid in staff_pin or []:
        if out.json_mode:
            raise Usage("--staff-pin asks for the PIN: with --json use --staff-file")
        pin = typer.prompt(f"PIN for {sid}", hide_input=True, confirmation_prompt=True, err=True)
        if not (4 <= len(pin) <= 8 and pin.isdigit()):
            raise Usage(f"the PIN of {sid} must be 4-8 digits")
        st.pins.append((sid, pin))
    wifi_password = None
    if wifi_ssid:
        wifi_password = os.environ.get("CASECTL_WIFI_PASSWORD")
        if wifi_password is None:
            if out.json_mode:
                raise Usage("the Wi-Fi password comes from CASECTL_WIFI_PASSWORD with --json")
            wifi_password = typer.prompt(f"Wi-Fi password for {wifi_ssid}", hide_input=True, err=True)
        secret(wifi_password)
    timings = {k: v for k, v in (("unlock_ms", unlock_ms), ("pull_in_ms", pull_in_ms), ("hold_duty", hold_duty),
                                 ("held_open_s", held_open_s)) if v is not None}
    opts = pv.Options(store=store, case=case, name=name, country=country, display=display, keypad=keypad, nfc=nfc,
                      timings=timings, staff=st, wifi_ssid=wifi_ssid, wifi_password=wifi_password, ca=ca,
                      force=force, create_store=create_store, selftest=not no_selftest, key_wait_s=key_wait,
                      online_timeout_s=online_timeout, label_dir=labels, link_template=link or DEFAULT_LINK)
    if ota_key is not None:
        from casectl.release import read_public

        opts.ota_key = read_public(ota_key)
    opts.ota_key_fingerprint = ota_key_fingerprint
    steps: list[str] = []
    with out.progress() as p, _cloud(cloud, token_file) as cl:
        task = p.add_task("checking the cloud", total=None)
        pv.check_cloud(cl, opts)
        p.update(task, description="connecting to the device")
        with Device(port) as dev:
            def on_step(s: dict[str, Any]) -> None:
                steps.append(_step_line(s))
                if not out.json_mode:
                    p.console.print(steps[-1])

            def phase(text: str) -> None:
                p.update(task, description=text)
                if text.startswith("running the self-test") and key_wait > 0 and not out.json_mode:
                    p.console.print(f"[cyan]self-test:[/] press any key on the case's keypad when asked "
                                    f"(within {key_wait} s)")

            report = pv.provision(dev, cl, opts, phase=phase, on_step=on_step)
    if out.json_mode:
        out.document({"ok": True, **report.as_dict()})
        return
    t = Table.grid(padding=(0, 2))
    t.add_row("case", f"[bold]{report.case}[/] in store {report.store}"
              + (f" (keys rotated, version {report.key_version})" if report.rotated else ""))
    t.add_row("board", f"{report.board}, firmware {report.firmware}")
    t.add_row("cloud", f"{report.cloud}, broker {report.broker}")
    t.add_row("config", f"{report.config_bytes} bytes written (secrets not shown)")
    if report.selftest is not None:
        t.add_row("self-test", "[green]passed[/]" if report.selftest.get("ok") else "[red]failed[/]")
    t.add_row("label", f"{report.label_png}, {report.label_svg}")
    t.add_row("app link", report.link)
    t.add_row("updates", f"signed releases over the air (release key {report.ota_key[:16]}...)" if report.ota_key
              else "[yellow]none over the air[/] (no --ota-key or --ota-key-fingerprint)")
    out.out.print(t)
    out.out.print(f"[green]provisioned[/] in {report.seconds:.1f} s; "
                  + ("the case is online with its new config" if report.online
                     else "the case restarts with its new config"))


@app.command()
@command
def selftest(
    out: Out,
    port: Port,
    key_wait: Annotated[int, typer.Option("--key-wait", help="Seconds to wait for a key press (0: none).")] = 15,
    json_out: Json = False,
) -> None:
    """Run the on-device self-test again (display, NFC, lock coil and door sensor, keypad)."""
    from casectl.device import Device
    from casectl.errors import SelfTestFailed
    from casectl.provision import firmware_manifest, run_selftest

    with Device(port) as dev:
        firmware_manifest(dev)  # "deploy first", not an ImportError from the device
        res = run_selftest(dev, key_wait_s=key_wait,
                           on_step=None if out.json_mode else (lambda s: out.err.print(_step_line(s))))
        dev.soft_reset()
    if not res.get("ok"):
        raise SelfTestFailed("self-test failed: " + "; ".join(f"{s['step']}: {s['detail']}"
                                                             for s in res["steps"] if s["status"] == "fail"),
                             "fix the part named and run the self-test again", data=res)
    if out.json_mode:
        out.document(res)
    else:
        out.out.print(f"[green]self-test passed[/] on {port} ({res.get('board')}, firmware {res.get('fw')})")


# -- watching ---------------------------------------------------------------------------------------
@app.command()
@command
def monitor(
    out: Out,
    port: Port,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many seconds (default: at Ctrl-C).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Stop at the first event of this type, e.g. forced, or 'ready' when the firmware is up.")] = None,
    json_out: Json = False,
) -> None:
    """Follow the device's live log and the state it implies."""
    from rich.live import Live
    from rich.panel import Panel

    from casectl.monitor import Line, State, follow

    st = State()

    def stop(ln: Line) -> bool:
        return bool(until) and (ln.event == until or (until == "ready" and ln.text.startswith("READY")))

    lines = follow(port, duration=duration, stop=stop)  # opens the port: its errors come before any output
    if out.json_mode:
        for ln in lines:
            st.apply(ln)
            out.line({**ln.as_dict(), "state": st.as_dict()})
        return

    def view() -> Panel:
        # The state is what the console has said since the monitor started: unknown ("-") until
        # the case prints it (at its next boot, event or cloud connection).
        g = Table.grid(padding=(0, 2))
        g.add_row("firmware", (st.firmware or "-") + (" (ready)" if st.ready else ""))
        g.add_row("lock", st.lock.replace("?", "-") + (f"  alarms: {', '.join(st.alarms)}" if st.alarms else ""))
        g.add_row("cloud", st.cloud.replace("?", "-"))
        g.add_row("last event", f"{st.last_event or '-'} ({st.events} seen)")
        return Panel(g, title=port)

    # The console's lines are the results (stdout); the state panel stays below them. On a terminal
    # the panel is a Live display on stdout's console too, which prints each line above the panel
    # and redraws the panel under it (a Live on stderr moved the cursor over the lines stdout had
    # printed on the same screen, leaving fragments). Piped, the panel goes to stderr.
    with Live(view(), console=out.out if out.out.is_terminal else out.err, refresh_per_second=8,
              transient=False) as live:
        for ln in lines:
            st.apply(ln)
            out.out.print(f"{ln.t:8.2f}  {ln.text}", markup=False)
            live.update(view())


def _age(ts: int | None) -> str:
    if not ts:
        return "-"
    d = int(time.time()) - int(ts)
    return f"{d} s ago" if d < 120 else f"{d // 60} min ago" if d < 7200 else f"{d // 3600} h ago"


def _state(c: dict[str, Any]) -> str:
    # applied/desired version of the staff set and config overrides; "pending" until the case
    # reports the desired one applied (a cloud from before desired state does not say: "?").
    if "desired_v" not in c:
        return "?"
    v = f"v{c['applied_v']}/v{c['desired_v']}"
    return f"[yellow]{v} pending[/]" if c.get("pending") else f"[green]{v}[/]"


@app.command()
@command
def status(
    out: Out,
    store: Annotated[str | None, typer.Option("--store", help="Only this store's cases (an unknown store is an error).")] = None,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Cases as the cloud sees them: online, synced (takes requests), staff and config applied,
    firmware version, last event."""
    with _cloud(cloud, token_file) as cl:
        cases = cl.cases(store)
        if store and not cases:  # the cloud lists no cases for a store it does not have either
            known = [s["id"] for s in cl.stores()]
            if store not in known:
                raise Usage(f"the cloud has no store {store}",
                            f"its stores: {', '.join(known)}" if known else "it has no stores yet")
        for c in cases:
            ev = cl.events(case=c["id"], limit=1)
            c["last_event"] = ev[0] if ev else None
    if out.json_mode:
        out.document({"ok": True, "cases": cases})
        return
    if not cases:
        out.out.print(f"no cases in store {store}" if store else "no cases")
        return
    rows = []
    for c in cases:
        ev = c["last_event"]
        # online = connected to the broker; synced = its greeting answered, so it takes requests
        # (an online case that is not synced shows "Service offline" to shoppers). A cloud from
        # before the field does not say: "?".
        synced = c.get("synced")
        rows.append([c["id"], c["store"], escape(c.get("name") or ""), "[green]yes[/]" if c["online"] else "[red]no[/]",
                     "?" if synced is None else "[green]yes[/]" if synced else "[red]no[/]", _state(c),
                     escape(c.get("fw") or "-"), _age(c.get("last_seen")),
                     f"{escape(ev['type'])} ({_age(ev['ts'])})" if ev else "-"])
    out.out.print(_cases_view(out.out, rows))


_CASE_COLUMNS = ("case", "store", "name", "online", "synced", "staff/config", "firmware", "last seen", "last event")


def _cases_view(console: Console, rows: list[list[str]]) -> RenderableType:
    """The cases as a table where it fits the terminal without cutting a word, else as one block
    per case: an id is what a technician types next, so it is never cut short."""
    t = Table(title="cases")
    for i, name in enumerate(_CASE_COLUMNS):
        t.add_column(name, no_wrap=i < 2, overflow="fold")
    for r in rows:
        t.add_row(*r)
    if Measurement.get(console, console.options.update_width(10_000), t).minimum <= console.width:
        return t
    blocks: list[RenderableType] = []
    for r in rows:
        blocks.append(Text.from_markup(f"[bold]{r[0]}[/] in store {r[1]}" + (f": {r[2]}" if r[2] else ""),
                                       overflow="fold"))
        # each "online yes" whole: the items wrap, not the words in them
        info = Columns([Text.from_markup(f"{k} {v}") for k, v in zip(_CASE_COLUMNS[3:], r[3:], strict=True)],
                       padding=(0, 3))
        blocks.append(Padding(info, (0, 0, 0, 2), expand=False))
    return Group(*blocks)


@app.command()
@command
def logs(
    out: Out,
    case: Annotated[str, typer.Option("--case", help="Case whose events to show (`casectl status` lists them).")],
    limit: Annotated[int, typer.Option("--limit", help="How many events, newest first.")] = 50,
    kind: Annotated[list[str] | None, typer.Option("--type", help="Only events of this type; repeatable.")] = None,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """A case's event log, from the cloud."""
    with _cloud(cloud, token_file) as cl:
        if cl.case(case) is None:
            raise Usage(f"the cloud has no case {case}", "`casectl status` lists the cases")
        events = cl.events(case=case, types=kind, limit=limit)
    if out.json_mode:
        out.document({"ok": True, "case": case, "events": events})
        return
    t = Table("time", "type", "source", "details", title=f"events of {case}")
    for e in events:
        data = " ".join(f"{k}={v}" for k, v in (e.get("data") or {}).items())
        t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"])), e["type"], e["source"], data)
    out.out.print(t if events else f"no events for {case}")


# -- a board without hardware -----------------------------------------------------------------------
@app.command("sim-device")
@command
def sim_device(
    out: Out,
    workdir: Annotated[Path, typer.Option("--dir", help="Folder for the flash image and the port.")] = Path("build/sim-device"),
    json_out: Json = False,
) -> None:
    """Run the sim board as a serial device (MicroPython on a pseudo-terminal) until Ctrl-C."""
    import signal

    from casectl.tools import venv_tool

    # The simulator is its own package (sim/, the `sim` extra), imported only here: the rest of
    # casectl never loads it.
    try:
        from sim.device import SimDevice
        from sim.process import START
    except ModuleNotFoundError as e:
        raise CasectlError(f"the simulator is not installed ({e.name} is missing)",
                           "install lockcase[sim] for the simulator (`make setup` in a checkout)") from None
    if venv_tool("micropython") is None:
        raise CasectlError("the simulator is not installed (no micropython binary)",
                           "install lockcase[sim] for the simulator (`make setup` in a checkout)")
    if not START.is_file():
        raise CasectlError("the simulator runs a checkout's firmware, and there is none here",
                           "`pip install -e '.[sim]'` in a LockCase checkout")

    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill` stops the board too, not only Ctrl-C
    signal.signal(signal.SIGINT, stop)  # even when started in the background with SIGINT ignored
    dev = SimDevice(workdir.resolve()).start()
    try:
        if out.json_mode:
            out.line({"port": dev.port, "control": f"127.0.0.1:{dev.ctl_port}", "flash": dev.flash})
        else:
            out.out.print(f"sim board on [bold]{dev.port}[/] (flash {dev.flash}, control socket "
                          f"127.0.0.1:{dev.ctl_port}); try `casectl deploy {dev.port}`. Ctrl-C stops it.")
        while True:
            time.sleep(1)
    finally:
        dev.stop()



# -- release: over-the-air releases and rollouts (release_cli.py), registered last: it uses the
# helpers above
from casectl.release_cli import app as _release_app  # noqa: E402

app.add_typer(_release_app, name="release")


if __name__ == "__main__":
    app()
