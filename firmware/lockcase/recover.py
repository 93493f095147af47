# Boot-time reading and repair of what a reset or a power cut left on flash, run once by the app
# at boot and then dropped by lockcase.startup (a chip's heap holds bytecode too):
# - load(): the safety record (lockcase.safestate): read it, or create it, or, when it is
#   unreadable or corrupt, start from the worst case (and rewrite it so);
# - journal_lost_grant(): a grant recorded before its coil was energized, but never journaled
#   because the power went in between, is journaled now.
import struct
from binascii import crc32

from lockcase.compat import const
from lockcase.safestate import FILE, FMT, MS, SIZE, SOURCES, SRC, G, J, N, SafeState

_ENOENT = const(2)


def load(path=FILE, worst=None):
    """The SafeState for this boot. worst: ((slot, value), ...) to assume when the file is there
    but unreadable or corrupt: bit rot must never hand out a fresh budget."""
    f = raw = None
    error = None
    try:
        f = open(path, "r+b")
        raw = f.read(SIZE + 4)
    except OSError as exc:
        if exc.args[0] != _ENOENT:  # there, but unreadable: not a fresh case
            error = "unreadable: %s" % exc
            raw = b"?"
    if not raw:
        # No file yet, or an empty one (a cut between creating it and its first record, before
        # which nothing can have been granted or failed): a fresh case, written whole at once.
        if f is None:
            try:
                f = open(path, "w+b")
            except OSError as exc:
                st = SafeState(None, [0] * N)
                st.error = "cannot create: %s" % exc
                return st
        st = SafeState(f, [0] * N)
        st._write()
        return st
    if len(raw) == SIZE and crc32(raw[:-4]) & 0xFFFFFFFF == struct.unpack_from("<I", raw, SIZE - 4)[0]:
        got = struct.unpack_from(FMT, raw)
        return SafeState(f, list(got[:N]), got[N].rstrip(b"\0"))
    v = [0] * N
    for slot, value in worst or ():
        v[slot] = value
    if f is not None:
        # Started afresh with the worst case on it: a corrupt file longer than a record would
        # otherwise stay corrupt under every in-place rewrite, and every boot assume the worst.
        try:
            f.close()
            f = open(path, "w+b")
        except OSError:
            f = None
    st = SafeState(f, v)
    st.corrupt = True
    if f is not None:
        st._write()  # unreadable (f None): nothing can be recorded either, so Lock refuses grants
    st.error = error or "corrupt: worst case assumed"
    return st


def journal_lost_grant(store, bus):
    """Emit the "granted" event the journal never got (marked recovered, with its grant number
    so the cloud can tell a duplicate). Returns it, or None."""
    v = store.v
    if v[G] == v[J]:
        return None
    try:
        who = store.who.decode() if store.who else None
    except UnicodeError:  # cut inside a character: the bytes are no use to anyone
        who = None
    lost = {"source": SOURCES[v[SRC]] if v[SRC] < len(SOURCES) else "other", "who": who, "ms": v[MS],
            "g": v[G], "recovered": True}
    bus.emit("granted", **lost)  # the journal marks it journaled once it is on flash
    return lost
