"""The case's manifest parser (firmware/lockcase/ota/manifest.py), which reads a release's manifest
one file entry at a time, against CPython's json: every manifest casectl can write parses to what
json.loads gives, streamed in any chunk size or whole; any other bytes give a ValueError with a
reason and nothing else (the cloud's release store parses uploads with it: anything else would be
a 500, docs/ota.md "Release manifest")."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from casectl import release as crel
from lockcase.ota import manifest
from tests.conftest import run_micropython

_SEG = st.text(alphabet="abcdefghijklmnopqrstuvwxyzAZ0123456789_.-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
_PATH = st.lists(_SEG, min_size=1, max_size=4).map("/".join).filter(lambda p: p not in ("boot.py", "confirmed") and len(p) <= 96)
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


# -- what MicroPython reads otherwise -----------------------------------------------------------
# The cloud's store and casectl run this parser under CPython, the case under MicroPython, whose
# json differs where the text is odd: a UTF-8 BOM, NaN and Infinity (CPython only), a surrogate
# pair's escape (CPython one character, MicroPython two), bare control characters in strings
# (MicroPython only). A manifest CPython takes must be read alike by the case, or the cloud would
# publish (and check the paths and floor of) a release its cases read differently or refuse.
_HEAD = '{"v":1,"rel":"r1","version":"1.2.3","board":"sim","mpy":6,"min":"0.0.1","floor":"0.0.1"'
_MAIN = '["main.py",10,"' + "0" * 64 + '"]'


def _doc(head: str = _HEAD, files: str = "[" + _MAIN + "]") -> bytes:
    return (head + ',"files":' + files + "}").encode()


def _with_path(path: str) -> bytes:
    # json.dumps's escapes: a NUL, a newline or a surrogate pair as \uXXXX, as a hand-made manifest may
    entry = json.dumps([path, 1, "0" * 64], separators=(",", ":"))
    entries = sorted([entry, _MAIN], key=lambda e: json.loads(e)[0])
    return _doc(files="[" + ",".join(entries) + "]")


ODD = {
    "a BOM": b"\xef\xbb\xbf" + _doc(),
    "a space first": b" " + _doc(),
    "NaN in the header": _doc(_HEAD + ',"x":NaN'),
    "-Infinity in the header": _doc(_HEAD + ',"x":[-Infinity]'),
    "a key casectl does not write": _doc(_HEAD + ',"x":1'),
    "files twice": _doc(_HEAD + ',"files":[]'),
    "a surrogate pair's escape in a path": _doc(files='[["a\\ud83d\\ude00.mpy",1,"' + "0" * 64 + '"],' + _MAIN + "]"),
}
BAD_PATHS = ("a b.mpy", "a\nmain.py 1 " + "0" * 64, "main.py\x00x", "a\x01.mpy", "a\x7f.mpy", "é.mpy", "a\U0001f600.mpy",
             'a"b.mpy', "a]b.mpy", "a\\b.mpy", "a:b.mpy")


def test_what_micropython_would_read_otherwise_is_refused() -> None:
    for what, m in ODD.items():
        try:
            manifest.parse(m)
        except ValueError as e:
            assert str(e), what
            continue
        raise AssertionError(f"took {what}: {m!r}")


def test_paths_are_plain_ascii_names() -> None:
    # The case writes each entry as a line "path size sha256" of its index and reads it back split
    # on spaces: a path with a space or a newline broke the download (a ValueError out of the app
    # loop at every boot); a NUL ends the name on the case's filesystem ("main.py\0x" is main.py).
    for path in BAD_PATHS:
        try:
            manifest.parse(_with_path(path))
        except ValueError as e:
            assert str(e) == "bad file entry", (path, str(e))
            continue
        raise AssertionError(f"took the path {path!r}")
    for path in ("lockcase/app.mpy", "umqtt/simple.mpy", "a-b_c.D/E9.mpy"):
        assert [f[0] for f in manifest.parse(_with_path(path))["files"]] == sorted([path, "main.py"])


_MP_READS = """
import binascii, json, sys
from lockcase.ota import manifest
with open(sys.argv[1]) as f:
    cases = json.loads(f.read())
for h in cases:
    try:
        out = json.dumps(manifest.parse(binascii.unhexlify(h)))
    except ValueError:
        out = "refused"
    except Exception as e:
        out = "RAISED %s" % type(e).__name__
    print(binascii.hexlify(out.encode()).decode())
"""


def _corpus() -> list[bytes]:
    # the odd ones, the refused paths, and casectl's manifests damaged at random (a fixed seed)
    rnd = random.Random(13)
    out = [*ODD.values(), *(_with_path(p) for p in BAD_PATHS)]
    toks = [b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b" ", b"\t", b"\x00", b"\xc3\xa9", b"\xff", b"NaN",
            b"\\u0000", b"\\ud83d", b",\"files\":[", b"1e400", b"-0", b"9" * 30, b"true", b"]}", b'\\"']
    while len(out) < 400:
        files = [("main.py", 10, "0" * 64)] + [(f"p{i}/{rnd.choice('ab')}.mpy", rnd.randint(0, 9), f"{i:064x}")
                                              for i in range(rnd.randint(0, 4))]
        m = bytearray(crel.manifest_bytes("r1", "1.2.3", "sim", 6, "0.0.1", "0.0.1", files))
        for _ in range(rnd.randint(0, 2)):
            at = rnd.randrange(len(m) + 1)
            if rnd.random() < 0.6:
                m[at:at] = rnd.choice(toks)
            else:
                del m[at:at + rnd.randint(1, 4)]
        out.append(bytes(m))
    return out


@pytest.mark.parametrize("bits", [32, 64])
def test_the_case_reads_every_manifest_the_cloud_takes_as_the_cloud_does(bits: int, tmp_path: Path) -> None:
    corpus = _corpus()
    (tmp_path / "cases.json").write_text(json.dumps([m.hex() for m in corpus]))
    (tmp_path / "reads.py").write_text(_MP_READS)
    proc = run_micropython([str(tmp_path / "reads.py"), str(tmp_path / "cases.json")], heap="1m", bits=bits)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = proc.stdout.decode().split()
    assert len(lines) == len(corpus)
    taken = 0
    for m, line in zip(corpus, lines, strict=True):
        # MicroPython writes a surrogate as its three UTF-8-like bytes
        case = bytes.fromhex(line).decode("utf-8", "surrogatepass")
        assert not case.startswith("RAISED"), (m, case)
        try:
            cloud = manifest.parse(m)
        except ValueError:
            continue  # not published: what the case makes of it does not matter
        taken += 1
        assert case != "refused", f"the cloud takes what the case refuses: {m!r}"
        assert json.loads(case) == cloud, f"the case reads otherwise: {m!r}"
    assert taken >= 50  # the corpus holds manifests that are taken, not only refusals


def test_casectl_names_a_file_a_case_cannot_take() -> None:
    with pytest.raises(crel.ReleaseError, match="'notes copy.py'"):
        crel.manifest_bytes("r1", "1.2.3", "sim", 6, "0.0.1", "0.0.1",
                            [("main.py", 1, "0" * 64), ("notes copy.py", 1, "0" * 64)])


def test_a_release_cannot_carry_its_slots_confirmed_mark() -> None:
    # otaboot.py boots the slot holding "confirmed" when the pointer is unreadable and the root's
    # firmware is gone: a release listing that file would mark its slot while it is still being
    # downloaded ("confirmed" sorts before "lockcase/" and "main.py").
    try:
        manifest.parse(_with_path("confirmed"))
    except ValueError as e:
        assert str(e) == "bad file entry"
    else:
        raise AssertionError("took a file named confirmed at the slot's root")
    assert [f[0] for f in manifest.parse(_with_path("lockcase/confirmed"))["files"]] == ["lockcase/confirmed", "main.py"]
