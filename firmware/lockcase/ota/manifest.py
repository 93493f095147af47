# A release's manifest (docs/ota.md): compact JSON, signed as bytes by the release key. Checked
# only after its signature: check() returns the reason a case refuses it, or None.
import sys

from lockcase.compat import const, json_whole

MAX_BYTES = 16384  # far above a board's ~60 files; bounds what is read into RAM to verify
_CHUNK = const(128)  # read at a time while parsing
_HEAD_MAX = const(1024)  # the keys before "files"
_ENTRY_MAX = const(512)  # one ["path",size,"sha256"] is at most 178 bytes: a path is 96 ASCII characters
_REL_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_REL_REST = _REL_FIRST + "._-"
_HEX = "0123456789abcdef"
# A path's characters: plain ASCII names. The case's index holds "path size sha256" lines split on
# spaces (a space or newline broke the download); a NUL ends a name on its filesystem; and
# MicroPython's json reads a surrogate pair's escape as two characters where CPython's (the cloud's
# and casectl's check) reads one, so other characters could name another file on the case.
_PATH_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/"
# The header's keys, as casectl writes them: anything else might hold what only CPython's json
# reads (NaN, Infinity), so the cloud would take a manifest every case refuses.
_KEYS = ("v", "rel", "version", "board", "mpy", "min", "floor")


def version(v):
    """'x.y.z' -> (x, y, z), or None."""
    if type(v) is not str:
        return None
    parts = v.split(".")
    if len(parts) != 3:
        return None
    out = []
    for p in parts:
        if not p or len(p) > 6 or any(c not in "0123456789" for c in p):
            return None
        out.append(int(p))
    return tuple(out)


def rel_ok(rel):
    return (type(rel) is str and 1 <= len(rel) <= 32 and rel[0] in _REL_FIRST
            and all(c in _REL_REST for c in rel))


def _path_ok(p):
    if type(p) is not str or not p or len(p) > 96 or p[0] == "/" or any(c not in _PATH_CHARS for c in p):
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
    # the boot kit stays the deployed one (docs/ota.md); "confirmed" is the slot's own mark, which
    # otaboot.py trusts when the pointer is unreadable: only update.py writes it, once confirmed
    return p not in ("boot.py", "confirmed")


def _head(m):
    if type(m) is not dict or m.get("v") != 1:
        raise ValueError("manifest version")
    for k in m:
        if k not in _KEYS:
            raise ValueError("unknown key")
    if not rel_ok(m.get("rel")):
        raise ValueError("bad rel")
    for k in ("version", "min", "floor"):
        if version(m.get(k)) is None:
            raise ValueError("bad " + k)
    if type(m.get("board")) is not str or type(m.get("mpy")) is not int:
        raise ValueError("bad board or mpy")


def _entry(e):
    if (type(e) is not list or len(e) != 3 or not _path_ok(e[0]) or type(e[1]) is not int
            or not 0 <= e[1] <= 1 << 20 or type(e[2]) is not str or len(e[2]) != 64
            or any(c not in _HEX for c in e[2])):
        raise ValueError("bad file entry")


def _more(read, buf, need):
    # Reads on until `buf` holds `need` bytes or the input ends.
    while len(buf) < need:
        got = read(_CHUNK)
        if not got:
            break
        buf += got
    return buf


def _until(read, buf, mark, most):
    # Reads on until `mark` is in `buf`, `buf` is over `most` bytes or the input ends: (buf, where
    # the mark is, or -1).
    i = buf.find(mark)
    while i < 0 and len(buf) <= most:
        got = read(_CHUNK)
        if not got:
            break
        buf += got
        i = buf.find(mark)
    return buf, i


def _none(_n):
    return b""


def parse(data, each=None):
    """A manifest's bytes (or str), or a file of them -> dict; ValueError with the reason for a
    malformed one. Only a manifest whose signature checked out is parsed, so a file cannot be a
    truncated manifest.

    Read as a stream, one file entry at a time: the parsed list of a 60-file release was about
    11 KiB of a case's heap at the download's peak (docs/ota.md). So the manifest is read in the
    form casectl writes (docs/ota.md, "Release manifest"): compact JSON, "files" its last key, the
    entries in strictly increasing path order (no path twice), no path holding ']'. With `each`,
    each entry goes to each(path, size, sha256) as it is read and "files" is their number;
    without, "files" is the list. The cloud and casectl parse with this function too: nothing a
    case cannot read is signed or published."""
    if hasattr(data, "read"):
        read = data.read
        buf = b""
    else:  # all of it at once, and nothing more to read: the same rules as a stream
        read = _none
        buf = data.encode() if isinstance(data, str) else bytes(data)
    buf = _more(read, buf, 2)
    if buf[:2] != b'{"':  # no BOM (CPython's json skips one, MicroPython's refuses it), no space
        raise ValueError("not a manifest")
    buf, i = _until(read, buf, b',"files":[', _HEAD_MAX + 10)  # the header: every key before "files"
    if not 0 <= i <= _HEAD_MAX:
        raise ValueError("no files")
    m = json_whole(buf[:i] + b"}")
    _head(m)
    buf = buf[i + 10 :]
    files = []
    n = 0
    last = None
    main = False
    while True:
        buf = _more(read, buf, 1)
        if buf[:1] == b"]" and n == 0:
            raise ValueError("no files")
        buf, j = _until(read, buf, b"]", _ENTRY_MAX)
        if not 0 <= j < _ENTRY_MAX or buf[:2] != b'["':
            raise ValueError("bad file entry")
        try:
            e = json_whole(buf[: j + 1])
        except ValueError:
            raise ValueError("bad file entry") from None
        _entry(e)
        path = e[0]
        if last is not None and path <= last:
            raise ValueError("file listed twice" if path == last else "files out of order")
        last = path
        main = main or path == "main.py"
        n += 1
        if each is None:
            files.append(e)
        else:
            each(path, e[1], e[2])
        buf = _more(read, buf[j + 1 :], 3)
        if buf[:1] == b",":
            buf = buf[1:]
            continue
        if len(buf) < 2 or buf == b"]":
            raise ValueError("manifest cut short")
        if buf != b"]}" or read(1):
            raise ValueError("manifest goes on after its files")
        break
    if not main:
        raise ValueError("no main.py")
    m["files"] = files if each is None else n
    return m


def check(m, rel, board_name, running, floor):
    """Why this case refuses the manifest `m` for the release `rel` it was told about, or None.
    running: the running firmware's version; floor: the lowest version it may take ("" none)."""
    if m["rel"] != rel:
        return "manifest is for " + m["rel"]
    if m["board"] != board_name:
        return "board " + m["board"]
    mpy = getattr(sys.implementation, "_mpy", None)
    if mpy is not None and (m["mpy"] & 0xFF) != (mpy & 0xFF):
        return "mpy %d" % (m["mpy"] & 0xFF)
    have = version(running)
    if have is not None and have < (version(m["min"]) or ()):
        return "below min " + m["min"]
    f = version(floor) if floor else None
    if f is not None and (version(m["version"]) or ()) < f:
        return "below floor " + floor
    return None


def highest(a, b):
    """The higher of two 'x.y.z' versions ("" or malformed counts as none)."""
    va, vb = version(a), version(b)
    if va is None:
        return b if vb is not None else ""
    if vb is None or va >= vb:
        return a
    return b
