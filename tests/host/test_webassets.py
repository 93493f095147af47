"""tools/webassets.py: the console's browser assets come from the npm registry by exact version
and are refused unless their tarball matches the integrity pinned in web-assets.lock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import webassets  # noqa: E402


def test_the_locked_assets_are_fetched_checked_and_unpacked(tmp_path: Path) -> None:
    out = tmp_path / "web"
    files = webassets.fetch(out)
    assert {p.relative_to(out).as_posix() for p in files} == {
        f"{a.package}/{f}" for a in webassets.read_lock() for f in a.files}
    htmx = (out / "htmx.org" / "dist" / "htmx.min.js").read_text()
    assert "htmx" in htmx and len(htmx) > 10_000
    assert webassets.fetch(out) == []  # the stamp: nothing to do until the lock changes


def test_a_tarball_that_does_not_match_the_pinned_integrity_is_refused(tmp_path: Path) -> None:
    a = webassets.read_lock()[0]
    wrong = "sha512-" + "A" * 86 + "=="
    lock = tmp_path / "web-assets.lock"
    lock.write_text(f"{a.package} {a.version} {wrong} {' '.join(a.files)}\n")
    with pytest.raises(webassets.FetchError, match="refusing"):
        webassets.fetch(tmp_path / "web", lock)
    assert not (tmp_path / "web").exists()


def test_a_file_the_package_does_not_have_is_an_error(tmp_path: Path) -> None:
    a = webassets.read_lock()[0]
    lock = tmp_path / "web-assets.lock"
    lock.write_text(f"{a.package} {a.version} {a.integrity} dist/no-such-file.js\n")
    with pytest.raises(webassets.FetchError, match="no dist/no-such-file.js"):
        webassets.fetch(tmp_path / "web", lock)


def test_the_lock_is_read_strictly(tmp_path: Path) -> None:
    lock = tmp_path / "web-assets.lock"
    lock.write_text("htmx.org 2.0.11 md5-abc dist/htmx.min.js\n")
    with pytest.raises(webassets.FetchError, match="sha512"):
        webassets.read_lock(lock)
