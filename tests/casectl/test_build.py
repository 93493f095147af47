"""casectl build: mpy-cross for real, manifest hashes checked against the files, incremental builds."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from casectl.build import firmware_version
from tests.casectl.conftest import REPO, cli


def test_build_writes_manifest_with_every_hash_and_the_version(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    r = cli("build", "--board", "sim", "--out", out, "--json")
    assert r.code == 0, r.all
    doc = r.json()
    man = json.loads((out / "manifest.json").read_text())
    assert doc["ok"] and man["board"] == "sim" and man["version"] == firmware_version()
    assert man["mpy"]["version"] == 6 and man["min_micropython"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(man["files"]) == on_disk
    for path, sha in man["files"].items():
        data = (out / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha, path
        assert man["sizes"][path] == len(data)
    assert man["total_bytes"] == sum(man["sizes"].values())
    # boot.py and main.py stay source (MicroPython runs them by name); everything else is .mpy
    assert {"boot.py", "main.py", "board.mpy", "lockcase/app.mpy", "umqtt/simple.mpy"} <= on_disk
    assert not [p for p in on_disk if p.endswith(".py") and p not in ("boot.py", "main.py")]
    assert (out / "lockcase/app.mpy").read_bytes()[:2] == b"M\x06"
    # the human report names the sizes
    r = cli("build", "--board", "sim", "--out", out)
    assert r.code == 0 and re.search(r"total\s+│?\s*[\d,]+", r.out), r.out


def test_incremental_build_recompiles_only_what_changed(tmp_path: Path) -> None:
    src = tmp_path / "fw"
    shutil.copytree(REPO / "firmware", src, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    assert cli("build", "--board", "sim", "--out", out, "--src", src).code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mpy")}
    man0 = (out / "manifest.json").read_text()
    with (src / "lockcase" / "entry.py").open("a") as f:
        f.write("\n_CHANGED_FOR_THE_TEST = 1\n")
    r = cli("build", "--board", "sim", "--out", out, "--src", src, "--json")
    assert r.code == 0, r.all
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.mpy")}
    changed = sorted(p.relative_to(out).as_posix() for p in after if after[p] != before.get(p))
    assert changed == ["lockcase/entry.mpy"]
    assert (out / "manifest.json").read_text() != man0


def test_version_stamp_and_unknown_board(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    r = cli("build", "--board", "sim", "--out", out, "--fw-version", "9.9.9-test", "--json")
    assert r.code == 0 and r.json()["version"] == "9.9.9-test"
    assert b"9.9.9-test" in (out / "lockcase" / "__init__.mpy").read_bytes()
    r = cli("build", "--board", "toaster")
    assert r.code == 13 and "unknown board" in r.err and "esp32s3" in r.err


def test_boards_are_built_without_line_numbers_unless_asked(tmp_path: Path) -> None:
    # Line numbers cost a chip flash and heap (docs/memory.md): off for a board, on when asked,
    # and an incremental build notices the switch instead of mixing the two.
    from casectl.build import compile_board

    out = tmp_path / "esp"
    bare = {b.path: b.size for b in compile_board("esp32s3", out, arch="xtensawin")}
    man = json.loads((out / "manifest.json").read_text())
    assert man["mpy"]["lines"] is False
    lined = {b.path: b.size for b in compile_board("esp32s3", out, arch="xtensawin", incremental=True, lines=True)}
    assert json.loads((out / "manifest.json").read_text())["mpy"]["lines"] is True
    assert lined["lockcase/lock.mpy"] > bare["lockcase/lock.mpy"]
    assert sum(lined.values()) - sum(bare.values()) > 3000
