"""`make mutants`: single-line mutations of the firmware that the device tests must kill.

Each mutant once survived every test; a test was then written to kill it. This keeps it killed:
the firmware is copied to a temporary directory, one line is mutated there (the working tree is
never touched, so it is safe while others edit the same files), and the device test modules named
for it run under MicroPython against the copy. A mutant is killed when a test fails.

A mutation whose line is no longer in the file is reported "stale" (the code moved on: update the
list), and so is a run where the unmutated copy already fails. Exit status is 0 only when every
mutant is killed.

    .venv/bin/python tools/mutants.py [-v] [name ...]   # all, or only the named mutants;
                                                        # -v prints the killing tests' errors
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = REPO / "tests" / "device"

# name, file under firmware/, the original line (stripped), its mutation, device test modules
MUTANTS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    (
        "held_open_twice",
        "lockcase/lock.py",
        'self.held_open_ms = cfg["held_open_s"] * 1000',
        'self.held_open_ms = cfg["held_open_s"] * 2000',
        ("mp_test_lock",),
    ),
    (
        "no_grant_cap",
        "lockcase/lock.py",
        "return 0  # more grants in one window than we track: that is abuse, refuse",
        "pass",
        ("mp_test_lock",),
    ),
    (
        "no_min_grant",
        "lockcase/lock.py",
        "_MIN_GRANT_MS = const(200)  # shorter than this and the bolt may not retract: refuse instead",
        "_MIN_GRANT_MS = const(1)",
        ("mp_test_lock",),
    ),
    (
        "replay_mask_not_restored",
        "lockcase/uplink/codec.py",
        "self.mask = _MASK if rx else 0  # after a reboot every seq up to rx counts as seen",
        "self.mask = 0",
        ("mp_test_codec",),
    ),
    (
        "coil_not_off_at_construction",
        "lockcase/drivers/coil.py",
        "self.off()",
        "pass",
        ("mp_test_coil",),
    ),
    (
        "journal_not_sized_from_fs",
        "lockcase/journal.py",
        "max_records, segment_records, spare = size_for(self.dir)",
        "max_records, segment_records, spare = 1000, 100, 0",
        ("mp_test_journal_size",),
    ),
    (
        "records_resume_past_unsent",
        "lockcase/journal.py",
        "off = h[1]  # the sender stopped short of the last record it was given",
        "off = h[3]",
        ("mp_test_journal_size",),
    ),
]


def micropython() -> str:
    exe = REPO / ".venv" / "bin" / "micropython"
    found = str(exe) if exe.exists() else shutil.which("micropython")
    if not found:
        raise SystemExit("micropython not found: run `make setup`")
    return found


def run_module(fw: Path, module: str) -> dict[str, str | None]:
    """Run one device test module against the firmware in fw: {test name: None or its error}."""
    src = (DEVICE / f"{module}.py").read_text()
    m = re.search(r"^# heap: (\w+)", src, re.M)
    heap = m.group(1) if m else "96k"
    # The same search order as tests/conftest.py, with the mutated copy in the firmware's place.
    path = ":".join([".frozen", str(fw), str(REPO), str(REPO / "build" / "device-lib"), str(DEVICE)])
    proc = subprocess.run(
        [micropython(), "-X", f"heapsize={heap}", str(DEVICE / "mprunner.py"), module],
        capture_output=True,
        timeout=600,
        env=dict(os.environ, MICROPYPATH=path),
        cwd=REPO,
    )
    out: dict[str, str | None] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.startswith("@@RESULT "):
            r = json.loads(line[9:])
            out[r["name"]] = None if r["ok"] else r["error"]
    if proc.returncode != 0 or not out:
        out["<module crashed>"] = proc.stderr.decode(errors="replace")[-2000:]
    return out


def mutate(fw: Path, rel: str, orig: str, new: str) -> bool:
    f = fw / rel
    lines = f.read_text().splitlines(keepends=True)
    hits = [i for i, ln in enumerate(lines) if ln.strip() == orig]
    if len(hits) != 1:
        return False  # gone, or ambiguous: either way the list needs a look
    i = hits[0]
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    lines[i] = indent + new + "\n"
    f.write_text("".join(lines))
    return True


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    chosen = [m for m in MUTANTS if not argv or m[0] in argv]
    if argv and len(chosen) != len(set(argv)):
        raise SystemExit("unknown mutant; known: " + ", ".join(m[0] for m in MUTANTS))
    t0 = time.monotonic()
    survived = 0
    with tempfile.TemporaryDirectory(prefix="lockcase-mutants-") as tmp:
        base = Path(tmp) / "base"
        shutil.copytree(REPO / "firmware", base, ignore=shutil.ignore_patterns("__pycache__"))
        baseline: dict[str, dict[str, str | None]] = {}
        for module in sorted({mod for m in chosen for mod in m[4]}):
            baseline[module] = run_module(base, module)
        for name, rel, orig, new, modules in chosen:
            broken = [f"{mod}.{t}" for mod in modules for t, err in baseline[mod].items() if err]
            if broken:
                print(f"{name:32} stale: fails unmutated ({', '.join(broken)})")
                survived += 1
                continue
            fw = Path(tmp) / name
            shutil.copytree(base, fw)
            if not mutate(fw, rel, orig, new):
                print(f"{name:32} stale: line not found once in {rel}: {orig!r}")
                survived += 1
                continue
            errors = {f"{mod}.{t}": err for mod in modules for t, err in run_module(fw, mod).items() if err}
            if errors:
                print(f"{name:32} killed by {', '.join(errors)}")
                if verbose:
                    for test, err in errors.items():
                        print(f"  {test}:\n    " + err.strip().replace("\n", "\n    "))
            else:
                print(f"{name:32} SURVIVED ({', '.join(modules)} all pass with {new!r})")
                survived += 1
    print(f"{len(chosen) - survived}/{len(chosen)} killed in {time.monotonic() - t0:.1f} s")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
