"""The case's manifest parser (firmware/lockcase/ota/manifest.py), which reads a release's manifest
one file entry at a time, against CPython's json: every manifest casectl can write parses to what
json.loads gives, streamed in any chunk size or whole; any other bytes give a ValueError with a
reason and nothing else (the cloud's release store parses uploads with it: anything else would be
a 500, docs/ota.md "Release manifest")."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from casectl import release as crel
from lockcase.ota import manifest

_SEG = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
_PATH = st.lists(_SEG, min_size=1, max_size=4).map("/".join).filter(lambda p: p != "boot.py" and len(p) <= 96)
_ENTRY = st.tuples(_PATH, st.integers(0, 1 << 20), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))


def _files() -> st.SearchStrategy[list[tuple[str, int, str]]]:
    def with_main(entries: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        d = {p: (p, n, h) for p, n, h in entries}
        d["main.py"] = ("main.py", 10, "0" * 64)
        return list(d.values())

    return st.lists(_ENTRY, max_size=40).map(with_main)


class _Chunks(io.RawIOBase):
    """A file that hands out at most `n` bytes a read, as a flash file may."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n, self.at = data, n, 0

    def read(self, size: int = -1) -> bytes:
        k = self.n if size < 0 else min(size, self.n)
        out = self.data[self.at:self.at + k]
        self.at += len(out)
        return out


@settings(max_examples=150, deadline=None)
@given(files=_files(), chunk=st.integers(1, 300))
def test_what_casectl_writes_parses_as_json_does_in_any_chunks(files: list[tuple[str, int, str]], chunk: int) -> None:
    m = crel.manifest_bytes("r1", "1.2.3", "sim", 6, "0.0.1", "0.0.1", files)
    want = json.loads(m)
    assert manifest.parse(m) == want
    seen: list[list[Any]] = []
    got = manifest.parse(_Chunks(m, chunk), lambda p, n, h: seen.append([p, n, h]))
    assert seen == want["files"] and got["files"] == len(seen)
    assert {k: v for k, v in got.items() if k != "files"} == {k: v for k, v in want.items() if k != "files"}


@settings(max_examples=300, deadline=None)
@given(files=_files(), data=st.data())
@example(files=[("main.py", 10, "0" * 64)], data=None)
def test_damaged_manifests_give_a_reason_and_nothing_else(files: list[tuple[str, int, str]], data: Any) -> None:
    m = bytearray(crel.manifest_bytes("r1", "1.2.3", "sim", 6, "0.0.1", "0.0.1", files))
    if data is not None:
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(m) - 1))
            op = data.draw(st.sampled_from(("flip", "cut", "dup")))
            if op == "flip":
                m[at] = data.draw(st.sampled_from(b'[]{},:"\\ 0a\xc3\xff'))
            elif op == "cut":
                del m[at:]
                if not m:
                    m = bytearray(b"{")
            else:
                m[at:at] = m[at:at + data.draw(st.integers(1, 80))]
    for source in (bytes(m), _Chunks(bytes(m), 7)):
        try:
            out = manifest.parse(source)
        except ValueError as e:
            assert str(e), "a refusal says why"
            continue
        # what it takes is what json takes
        assert out == json.loads(bytes(m))
