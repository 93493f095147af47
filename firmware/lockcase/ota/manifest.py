# A release's manifest (docs/ota.md): compact JSON, signed as bytes by the release key. Checked
# only after its signature: check() returns the reason a case refuses it, or None.
import sys

from lockcase.compat import json_whole

MAX_BYTES = 16384  # far above a board's ~60 files; bounds what is read into RAM to verify
_REL_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_REL_REST = _REL_FIRST + "._-"
_HEX = "0123456789abcdef"


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
    if type(p) is not str or not p or len(p) > 96 or p[0] == "/" or "\\" in p:
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
    return p != "boot.py"  # the boot kit stays the deployed one (docs/ota.md)


def parse(data):
    """Manifest bytes (or a file of them, read as a stream) -> dict; ValueError with the reason for
    a malformed one. Only a manifest whose signature checked out is parsed: its size is the signed
    one, so a file cannot be a truncated manifest."""
    if isinstance(data, (bytes, str)):
        m = json_whole(data)
    else:
        import json

        m = json.load(data)
    if type(m) is not dict or m.get("v") != 1:
        raise ValueError("manifest version")
    if not rel_ok(m.get("rel")):
        raise ValueError("bad rel")
    for k in ("version", "min", "floor"):
        if version(m.get(k)) is None:
            raise ValueError("bad " + k)
    if type(m.get("board")) is not str or type(m.get("mpy")) is not int:
        raise ValueError("bad board or mpy")
    files = m.get("files")
    if type(files) is not list or not files:
        raise ValueError("no files")
    seen = set()
    for f in files:
        if (type(f) is not list or len(f) != 3 or not _path_ok(f[0]) or type(f[1]) is not int
                or not 0 <= f[1] <= 1 << 20 or type(f[2]) is not str or len(f[2]) != 64
                or any(c not in _HEX for c in f[2])):
            raise ValueError("bad file entry")
        if f[0] in seen:
            raise ValueError("file listed twice")
        seen.add(f[0])
    if "main.py" not in seen:
        raise ValueError("no main.py")
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
