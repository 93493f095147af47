"""`casectl release ...`: over-the-air releases (docs/ota.md, "Releases and rollouts").

    casectl release keygen --out keys/                      # keys/release.key (0600) + release.pub
    casectl release build --board esp32s3 --key keys/release.key --out rel/   # or --archive rel.tar
    casectl release publish rel/                            # to the cloud (hq token)
    casectl release rollout esp32s3-0.2.0 --store s1 --waves 10,50,100 --wave-after 3600
    casectl release status [ROLLOUT]                        # a rollout's cases, or every rollout
    casectl release halt ROLLOUT / resume ROLLOUT

Registered on casectl's command table by cli.py; the commands are thin, the work is in release.py
(keys, manifest, signature, the release on disk) and release_cloud.py (the cloud's API).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from casectl.cli import DEFAULT_CLOUD, CloudUrl, Json, TokenFile, _cloud, command
from casectl.errors import Usage
from casectl.output import Out

app = typer.Typer(help="Signed firmware releases and their rollouts over the air (docs/ota.md).",
                  no_args_is_help=True)

_STATE_STYLE = {"confirmed": "green", "failed": "red", "rolled_back": "red", "refused": "yellow",
                "cancelled": "dim", "waiting": "dim", "active": "cyan", "halted": "red", "done": "green"}


def _styled(state: str) -> str:
    style = _STATE_STYLE.get(state)
    return f"[{style}]{escape(state)}[/]" if style else escape(state)


@app.command()
@command
def keygen(
    out: Out,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for <name>.key and <name>.pub.")] = Path("."),
    name: Annotated[str, typer.Option("--name", help="File name of the pair, without extension.")] = "release",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair (cases keep trusting the old one).")] = False,
    json_out: Json = False,
) -> None:
    """Make the fleet's release key: an Ed25519 pair. The private key (mode 0600) signs releases and
    must stay off the cloud; the public key goes into the cloud's settings (release_keys) and, with
    provisioning, into every case's config (ota_key)."""
    from casectl import release

    priv, pub_path, pub = release.keygen(out_dir, name, force=force)
    fp = release.fingerprint(pub)[:16]
    if out.json_mode:
        out.document({"ok": True, "private_key": str(priv), "public_key_file": str(pub_path), "public_key": pub,
                      "fingerprint": fp})
        return
    # soft_wrap: the key, the fingerprint and the setting are copied from here, and rich would
    # otherwise break them across lines at the terminal's width
    out.out.print(f"private key [bold]{priv}[/] (mode 0600: keep it off the cloud, back it up offline)", soft_wrap=True)
    out.out.print(f"public key  [bold]{pub_path}[/]: {pub}", soft_wrap=True)
    out.out.print(f"fingerprint [bold]{fp}[/] (provision with --ota-key {pub_path} or --ota-key-fingerprint {fp})",
                  soft_wrap=True)
    out.out.print("next: put the public key in the cloud's settings, e.g. "
                  f"CASECLOUD_RELEASE_KEYS='[\"{pub}\"]', and restart it", soft_wrap=True)


@app.command()
@command
def build(
    out: Out,
    board: Annotated[str, typer.Option("--board", "-b", help="Board to build for (sim, esp32s3, picow).")],
    key: Annotated[Path, typer.Option("--key", help="The release private key (`casectl release keygen`).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write the release into this (new or empty) folder.")] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="Write the release as one tar file instead.")] = None,
    rel: Annotated[str | None, typer.Option("--rel", help="Release id (default: <board>-<version>).")] = None,
    fw_version: Annotated[str | None, typer.Option("--fw-version", help="Version to stamp (default: the firmware's own).")] = None,
    min_version: Annotated[str, typer.Option("--min", help="Lowest running version this release may replace.")] = "0.0.0",
    floor: Annotated[str | None, typer.Option(
        "--floor", help="Once confirmed, the case refuses releases below this version (default: the highest the cloud has for the board).")] = None,
    src: Annotated[Path | None, typer.Option("--src", help="Firmware source tree (default: the firmware casectl comes with).")] = None,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Build the firmware exactly as `casectl deploy` does (boot.py aside), describe every file in a
    manifest (version, board, .mpy ABI, size and sha256 each, --min, --floor) and sign it."""
    from casectl import release, release_cloud

    if (out_dir is None) == (archive is None):
        raise Usage("pass one of --out DIR or --archive FILE")
    if floor is None:  # never below what the fleet was given: the cloud knows the highest floor
        try:
            with _cloud(cloud, token_file) as cl:
                floor = release_cloud.highest_floor(cl, board) or "0.0.0"
        except Usage:
            raise Usage("no --floor and no cloud token to ask the cloud for the board's highest floor",
                        "pass --floor x.y.z (at least the highest floor published for the board), or set CASECTL_TOKEN") from None
    private = release.load_private(key)
    with out.progress() as p:
        task = p.add_task(f"building {board}", total=None)
        r = release.build(board, private, rel=rel, version=fw_version, min_version=min_version, floor=floor,
                          firmware=src, progress=lambda _d: p.advance(task))
    pub = release.public_hex(private)
    del private
    r.check(pub)  # what is written verifies with the key's public half
    where = release.write_dir(r, out_dir) if out_dir is not None else release.write_archive(r, archive)  # type: ignore[arg-type]
    doc = r.doc
    if out.json_mode:
        out.document({"ok": True, "rel": doc["rel"], "version": doc["version"], "board": doc["board"],
                      "mpy": doc["mpy"], "files": len(doc["files"]), "bytes": sum(f[1] for f in doc["files"]),
                      "out": str(where), "sig": r.sig})
        return
    out.out.print(f"release [bold]{escape(doc['rel'])}[/]: {doc['board']} {doc['version']}, "
                  f"{len(doc['files'])} files, {sum(f[1] for f in doc['files']):,} bytes, min {doc['min']}, "
                  f"floor {doc['floor']}, signed; written to {where}")
    out.out.print(f"next: casectl release publish {where}")


@app.command()
@command
def publish(
    out: Out,
    path: Annotated[Path, typer.Argument(help="The release folder or archive `casectl release build` wrote.")],
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Upload a release to the cloud, which checks its signature against the fleet's release keys
    and every file against the manifest. Only the signed release goes up, never a key."""
    from casectl import release, release_cloud

    r = release.read(path)
    r.check()  # sizes and hashes, before anything is sent
    with _cloud(cloud, token_file) as cl, out.progress() as p:
        task = p.add_task(f"publishing {r.doc['rel']}", total=len(r.files))
        got = release_cloud.publish(cl, r, lambda n, total: p.update(task, completed=n, total=total))
    if out.json_mode:
        out.document({"ok": True, "release": got})
        return
    out.out.print(f"release [bold]{escape(got['id'])}[/] published ({got['files']} files, {got['size']:,} bytes, "
                  f"ready: {got['ready']})")
    out.out.print(f"next: casectl release rollout {got['id']} --case ID | --store ID | --pct N")


def _waves(text: str | None) -> list[int]:
    if not text:
        return [100]
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise Usage("--waves: cumulative percentages separated by commas, e.g. 10,50,100") from None


@app.command()
@command
def rollout(
    out: Out,
    release_id: Annotated[str, typer.Argument(help="The release to roll out (published).", metavar="RELEASE")],
    case: Annotated[str | None, typer.Option("--case", help="One case.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Every case of a store.")] = None,
    pct: Annotated[int | None, typer.Option("--pct", help="This percentage of the cohort (--in-store, --running).")] = None,
    in_stores: Annotated[list[str] | None, typer.Option("--in-store", help="Cohort: this store's cases (repeat; default every store).")] = None,
    running: Annotated[str | None, typer.Option("--running", help="Cohort: only cases running this version.")] = None,
    waves: Annotated[str | None, typer.Option("--waves", help="Cumulative % of the cases per wave, e.g. 10,50,100.")] = None,
    wave_after: Annotated[int | None, typer.Option("--wave-after", help="Open the next wave after this many seconds even if not all confirmed.")] = None,
    max_fail: Annotated[int, typer.Option("--max-fail", help="Halt when more than this % of the updated cases fail to confirm.")] = 20,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Send a published release to one case, a store, or a percentage of a cohort, in waves."""
    from casectl import release_cloud

    if sum(x is not None for x in (case, store, pct)) != 1:
        raise Usage("name one of --case, --store or --pct")
    body: dict[str, Any] = {"release": release_id, "case": case, "store": store, "pct": pct,
                            "stores": in_stores or [], "fw": running, "waves": _waves(waves),
                            "wave_after_s": wave_after, "max_fail_pct": max_fail}
    with _cloud(cloud, token_file) as cl:
        got = release_cloud.rollout(cl, body)
    if out.json_mode:
        out.document({"ok": True, "rollout": got})
        return
    out.out.print(f"rollout [bold]{got['id']}[/] of {escape(got['release'])}: {got['total']} cases in "
                  f"{len(got['waves'])} wave(s), {got.get('sent', 0)} told at once (the others at their next "
                  f"hello or beat); halts itself over {got['max_fail_pct']} % failed")
    out.out.print(f"follow it: casectl release status {got['id']}")


@app.command()
@command
def status(
    out: Out,
    rollout_id: Annotated[str | None, typer.Argument(help="A rollout (default: list every rollout).", metavar="ROLLOUT")] = None,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """A rollout's progress per case (pending, downloading %, staged, switching, confirmed, rolled
    back or failed with the reason), or every rollout with its counts."""
    from casectl import release_cloud

    with _cloud(cloud, token_file) as cl:
        got: Any = release_cloud.status(cl, rollout_id) if rollout_id else release_cloud.rollouts(cl)
    if out.json_mode:
        out.document({"ok": True, "rollout" if rollout_id else "rollouts": got})
        return
    if rollout_id is None:
        if not got:
            out.out.print("no rollouts")
            return
        t = Table("rollout", "release", "state", "wave", "cases", "counts", title="rollouts")
        for r in got:
            t.add_row(r["id"], escape(r["release"]), _styled(r["state"]), f"{r['wave'] + 1}/{len(r['waves'])}",
                      str(r["total"]), ", ".join(f"{k} {v}" for k, v in r["counts"].items()))
        out.out.print(t)
        return
    head = (f"rollout {got['id']} of {escape(got['release'])}: {_styled(got['state'])}, wave "
            f"{got['wave'] + 1} of {len(got['waves'])} ({','.join(map(str, got['waves']))} %)")
    if got["halt_reason"]:
        head += f" - {escape(got['halt_reason'])}"
    t = Table("case", "wave", "state", "%", "why", "running", title=head)
    for c in got["cases"]:
        t.add_row(c["case"], str(c["wave"] + 1), _styled(c["state"]),
                  str(c["pct"]) if c["state"] == "downloading" else "", escape(c["why"] or ""),
                  escape(c["running"] or "-"))
    out.out.print(t)


@app.command()
@command
def halt(
    out: Out,
    rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log and the console.")] = "halted by hand",
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Stop a rollout: no further case is told, and those downloading or staged are told to cancel."""
    from casectl import release_cloud

    with _cloud(cloud, token_file) as cl:
        got = release_cloud.halt(cl, rollout_id, reason)
    if out.json_mode:
        out.document({"ok": True, "rollout": got})
        return
    out.out.print(f"rollout {got['id']} halted; {got.get('sent', 0)} case(s) told to cancel at once")


@app.command()
@command
def resume(
    out: Out,
    rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT")],
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """Resume a halted rollout: its cancelled cases are told again."""
    from casectl import release_cloud

    with _cloud(cloud, token_file) as cl:
        got = release_cloud.resume(cl, rollout_id)
    if out.json_mode:
        out.document({"ok": True, "rollout": got})
        return
    out.out.print(f"rollout {got['id']} resumed; {got.get('sent', 0)} case(s) told at once")


@app.command(name="list")
@command
def list_releases(
    out: Out,
    cloud: CloudUrl = DEFAULT_CLOUD,
    token_file: TokenFile = None,
    json_out: Json = False,
) -> None:
    """The releases the cloud holds."""
    from casectl import release_cloud

    with _cloud(cloud, token_file) as cl:
        got = release_cloud.releases(cl)
    if out.json_mode:
        out.document({"ok": True, "releases": got})
        return
    t = Table("release", "board", "version", "files", "bytes", "ready", title="releases")
    for r in got:
        t.add_row(escape(r["id"]), r["board"], r["version"], str(r["files"]), f"{r['size']:,}",
                  "yes" if r["ready"] else "[yellow]no[/]")
    out.out.print(t if got else "no releases")
