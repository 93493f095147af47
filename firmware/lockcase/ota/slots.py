# Where firmwares live on the flash and which one runs (docs/ota.md, "Slots"): the root's, deployed
# by casectl, and a release's directory, fw_a or fw_b. ota.json, the pointer boot.py reads, is only
# ever replaced whole (written beside, then renamed: LittleFS's rename is atomic).
import json
import os

from lockcase.compat import json_whole

POINTER = "ota.json"
DOWNLOAD = "ota_dl.json"  # the release being downloaded or staged (update.py)
SLOTS = ("fw_a", "fw_b")


def read(path=POINTER):
    """The pointer (or another of these small JSON files) as a dict; {} when missing or unreadable."""
    try:
        with open(path) as f:
            p = json_whole(f.read())
        return p if type(p) is dict else {}
    except (OSError, ValueError):
        return {}


def save(p, path=POINTER):
    tmp = path[:-5] + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(p))
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def staging(p):
    """The directory a new release goes into: neither the running firmware's nor the one kept to
    roll back to."""
    keep = (p.get("run"), p.get("prev"))
    for s in SLOTS:
        if s not in keep:
            return s
    return None


def rmtree(path):
    """Remove a directory and everything under it (a release's slot); missing is fine."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        sub = path + "/" + e[0]
        if e[1] == 0x4000:
            rmtree(sub)
        else:
            remove(sub)
    try:
        os.rmdir(path)
    except OSError:
        pass


def makedirs(path):
    # os.makedirs is not in MicroPython: one level at a time
    at = ""
    for part in path.split("/"):
        at = at + "/" + part if at else part
        try:
            os.mkdir(at)
        except OSError:
            pass


def space():
    """(block size, free bytes) of the filesystem the firmware lives on; free None if unknown."""
    try:
        st = os.statvfs(".")
        free = st[3] if st[3] <= st[2] else 0  # a full littlefs can report more free than it has
        return st[0] or 4096, st[0] * free
    except (OSError, AttributeError):
        return 4096, None


_PRUNED = "lockcase.old"  # the root's lockcase/ on its way out


def prune_root():
    """The firmware casectl deployed at the root, once a release replaced it for good: its
    lockcase/ (most of its blocks) goes, so that the next release fits beside the running one on
    a small filesystem (a Pico W's: docs/ota.md, "Flash space"). boot.py, main.py and the board
    module stay: they are the boot kit. Only where the root holds a deployed firmware. Renamed out
    of the way first (atomic on LittleFS), then removed: a power cut leaves the root's firmware
    whole or gone for boot.py (which falls back to it while lockcase/ is there), never half of it,
    and a later call finishes the removal."""
    try:
        os.stat("boot.py")
    except OSError:
        return False
    try:
        os.stat("lockcase/__init__.mpy")
        os.rename("lockcase", _PRUNED)
    except OSError:
        pass
    rmtree(_PRUNED)
    return True
