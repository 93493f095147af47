# The journal's size, from the flash filesystem it lives on (docs/memory.md, "Journal"). Run once
# at boot by Journal() and then dropped by lockcase.startup: a chip's heap holds bytecode too.
import os

from lockcase.compat import const
from lockcase.journal import _SEG  # loaded already: Journal() is what imports this

# Sizing (docs/memory.md, "Journal"): flash bytes budgeted per record, littlefs's own overhead
# included (100-119 B measured by make bench with the typical events on 4 KiB blocks, 119 on a
# Pico W; 120 leaves 1 %: 128, with an update's room kept free (below), cut a Pico W's journal
# under the 8-hour shift, and 120 leaves it 2,901 records, 21 above it: the firmware growing by a
# block takes the shift below 8 hours); the journal takes at most half of the filesystem, the
# rest being the firmware's .mpy files, config, the seq/lockout/safety files and an update's
# second firmware, and it always leaves _RESERVE free for littlefs's copy-on-write and those
# files' rewrites. Records longer than budgeted eat into the update's room first: an update then
# fails with "no space", reported, and nothing is lost.
_REC_COST = const(120)
_SHARE = const(2)
_RESERVE = const(32768)
_MIN_RECORDS = const(100)
_MAX_RECORDS = const(8640)  # a day at one event per 10 s; open reads every record, so no more
_SEGMENTS = const(16)  # a full journal is about this many segments (RAM: one small list each)
# Kept free for an over-the-air update's second firmware (docs/ota.md, "Flash space"): a release
# of the picow or esp32s3 build takes 54 blocks of 4 KiB. On a Pico W (212 blocks) the journal
# then gets 2,901 records (8.06 hours offline at one event per 10 s); a journal that already
# holds more (the trial boot, with two firmwares on flash) keeps it, within the reserve (spare).
_FW_ROOM = const(221184)


def size_for(dirpath):
    """(max_records, segment_records, spare) for a journal in the directory dirpath (which must
    exist), from its filesystem's statvfs at boot. spare: the records the free space beyond
    littlefs's reserve could still take, for a journal that already holds more than max_records
    (Journal keeps it: what the case has not sent is not dropped to fit a number)."""
    try:
        st = os.statvfs(dirpath)
    except OSError:
        return 1000, 100, 0  # no statvfs (or no directory): the size this journal always had
    bsize = st[0] or 4096
    total = bsize * st[2]
    held = 0  # what the journal already has there is available to it, in whole blocks
    try:
        for ent in os.ilistdir(dirpath):
            if ent[0].endswith(_SEG):
                held += (os.stat(dirpath + "/" + ent[0])[6] + bsize - 1) // bsize * bsize
    except OSError:
        pass
    free = st[3]
    if free > st[2]:
        free = 0  # a full littlefs can count more blocks in use than it has: f_bfree wraps around
    avail = bsize * free + held - _RESERVE - _FW_ROOM
    budget = total // _SHARE
    if avail < budget:
        budget = avail  # other files took more than their half: yield rather than fill the flash
    n = budget // _REC_COST
    if n > _MAX_RECORDS:
        n = _MAX_RECORDS
    if n < _MIN_RECORDS:
        n = _MIN_RECORDS  # the ENOSPC path still drops the oldest if even this does not fit
    spare = bsize * free - _RESERVE
    return n, (n + _SEGMENTS - 1) // _SEGMENTS, spare // _REC_COST if spare > 0 else 0
