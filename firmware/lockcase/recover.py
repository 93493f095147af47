# Boot-time repair of what a power cut interrupted, run once by lockcase.startup and then dropped
# (a chip's heap holds bytecode too): a grant recorded in the safety file before its coil was
# energized, but never journaled because the power went in between, is journaled now.
from lockcase.safestate import MS, SOURCES, SRC, G, J


def journal_lost_grant(store, bus):
    """Emit the "granted" event the journal never got (marked recovered, with its grant number
    so the cloud can tell a duplicate), and mark it journaled. Returns it, or None."""
    v = store.v
    if v[G] == v[J]:
        return None
    try:
        who = store.who.decode() if store.who else None
    except UnicodeError:  # cut inside a character: the bytes are no use to anyone
        who = None
    lost = {"source": SOURCES[v[SRC]] if v[SRC] < len(SOURCES) else "other", "who": who, "ms": v[MS],
            "g": v[G], "recovered": True}
    bus.emit("granted", **lost)
    store.set(J, v[G])
    return lost
