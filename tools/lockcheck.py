"""Refuse a requirements.lock that is behind pyproject.toml.

The Makefile installs .venv from the lock with hashes and then the project without its
dependencies, so a pin changed or added in pyproject.toml and not locked (`make lock`) would
leave the old version installed, or none, without a word. This checks that every exact pin of
pyproject.toml (the base and every extra) is in the lock at that version, before installing.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for req in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(==\s*([^;\s]+))?\s*(;.*)?", req)
        if not m:
            raise SystemExit(f"pyproject.toml: cannot read the requirement {req!r}")
        name = _norm(m.group(1))
        if name == _norm(project["name"]):
            continue  # an extra that names others ("lockcase[cloud]")
        if not m.group(4):
            raise SystemExit(f"pyproject.toml: {req!r} is not pinned exactly (name==version)")
        out[name] = m.group(4)
    return out


def locked(lock: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", line)
        if m:
            out.setdefault(_norm(m.group(1)), set()).add(m.group(2))
    return out


def main() -> int:
    want = pins(ROOT / "pyproject.toml")
    have = locked(ROOT / "requirements.lock")
    behind = [f"{n}=={v} (lock: {', '.join(sorted(have[n])) if n in have else 'missing'})"
              for n, v in sorted(want.items()) if v not in have.get(n, set())]
    if behind:
        print("requirements.lock is behind pyproject.toml: " + "; ".join(behind), file=sys.stderr)
        print("run `make lock` and commit requirements.lock", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
