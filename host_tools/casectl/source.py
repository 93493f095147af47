"""Where casectl finds the firmware it builds, and where the builds go.

Run from a checkout (the repo's .venv installs casectl in editable mode), that is the checkout
itself: firmware/, boards/ and device-packages.lock, with builds in its build/. An installed
casectl (`pip install lockcase`) has no checkout next to it: it builds the copy of those files its
distribution carries (pyproject.toml, [tool.setuptools.data-files]: the firmware of the same
release as casectl itself), into build/ of the current folder.
"""

from __future__ import annotations

from pathlib import Path

DIST = "lockcase"
# The file that marks a tree, checked last in the data files (its folder is the tree's root).
MARK = "device-packages.lock"


def is_tree(path: Path) -> bool:
    """Whether `path` holds what a build needs: the firmware, the boards and the device-package pins."""
    return ((path / "firmware" / "lockcase" / "__init__.py").is_file() and (path / "boards").is_dir()
            and (path / MARK).is_file())


def _checkout() -> Path | None:
    root = Path(__file__).resolve().parents[2]  # host_tools/casectl/source.py in a checkout
    return root if is_tree(root) else None


def installed_tree() -> Path | None:
    """The firmware tree installed with the lockcase distribution, wherever its scheme put the data
    files (a venv, --user, a system prefix): the distribution's own file list says where."""
    from importlib import metadata

    try:
        files = metadata.distribution(DIST).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix().endswith(f"share/{DIST}/{MARK}"):
            root = Path(str(f.locate())).resolve().parent
            return root if is_tree(root) else None
    return None


CHECKOUT = _checkout()
# The sources a build compiles. Neither a checkout nor installed data: a path that is not a tree,
# which build.check_tree() turns into an error with a hint.
TREE = CHECKOUT or installed_tree() or Path(__file__).resolve().parent / "missing-firmware-tree"
# Builds, fetched device packages and their download cache.
BUILD = CHECKOUT / "build" if CHECKOUT else Path("build")
