# heap: 3m
# The journal sized from the filesystem (journal.size_for) on a RAM littlefs the size of the Pico W's
# (848 KiB in 4 KiB blocks, the smaller of the two boards'), with the firmware's files on it: a case
# offline for 8 hours at one event every 10 s (2,880 events) must lose none of them. The heap holds
# the 848 KiB image; the journal's own RAM is checked separately.
import gc
import os

import vfs
from ramblock import Clock, RAMBlock
from typical_events import EVENTS

from lockcase import journal_size
from lockcase.journal import OVERFLOW, Journal

MNT = "/js"
PICO_W_BLOCKS = 212  # MICROPY_HW_FLASH_STORAGE_BYTES (848 * 1024) / 4096
SHIFT = 2880  # 8 h at one event per 10 s
FW_ROOM = 54 * 4096  # an update's second firmware (journal_size._FW_ROOM, docs/ota.md)




def _fs(blocks):
    try:
        vfs.umount(MNT)
    except OSError:
        pass
    dev = RAMBlock(4096, blocks)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MNT)
    return dev


def _firmware_files(under=""):
    # What the filesystem holds beside the journal: the compiled firmware as a release carries it
    # (the picow/esp32s3 build: 49 files, 93 KB, 54 blocks of 4 KiB as most take whole blocks),
    # config.json and the small state files. under: another firmware's directory (an update's).
    d = MNT + (under or "/lib")
    os.mkdir(d)
    for i in range(49):  # 44 files in one block each, 5 in two
        with open(d + "/m%d.mpy" % i, "wb") as f:
            f.write(b"\x4d" * (600 + (i * 97) % 1800 if i < 44 else 4200 + (i * 131) % 1200))
    if under:
        return
    for name, n in (("config.json", 1500), ("seq.json", 20), ("safety.bin", 68)):
        with open(MNT + "/" + name, "wb") as f:
            f.write(b"{" * n)


def _free():
    st = os.statvfs(MNT)
    return st[0] * st[3] if st[3] <= st[2] else 0  # full, littlefs's count can wrap around


def test_size_from_the_filesystem():
    _fs(PICO_W_BLOCKS)
    _firmware_files()
    os.mkdir(MNT + "/j")
    free = _free()
    n, seg, _ = journal_size.size_for(MNT + "/j")
    print("journal records on a Pico W beside its firmware and an update's room:", n)
    assert n >= SHIFT, n
    # What is free at 120 B a record, less littlefs's reserve and a second firmware's room (an
    # update's), within half the filesystem; in about 16 segments.
    assert n == (free - 32768 - FW_ROOM) // 120 < PICO_W_BLOCKS * 4096 // 2 // 120, (n, free)
    assert seg * 16 >= n and seg * 15 < n, (n, seg)
    # What the journal already holds counts as its own: sizing at the next boot does not shrink.
    j = Journal(MNT + "/j", clock=Clock())
    assert (j.max_records, j.segment_records) == (n, seg)
    for i in range(500):
        j.append(*EVENTS[i % len(EVENTS)])
    assert journal_size.size_for(MNT + "/j")[:2] == (n, seg)
    # Other files that take more than their half make it yield: never fill the flash.
    with open(MNT + "/ota.bin", "wb") as f:
        block = b"\0" * 4096
        while _free() > 300 * 1024:
            f.write(block)
    n2 = journal_size.size_for(MNT + "/j")[0]
    assert n2 < n, (n2, n)
    # A filesystem with no room left still gets a working journal (the ENOSPC path drops oldest).
    try:
        while True:
            with open(MNT + "/ota.bin", "ab") as f:  # one block a commit: a failed one is dropped
                f.write(block)
    except OSError:
        pass
    assert _free() < 16 * 1024, _free()
    held = sum((os.stat(MNT + "/j/" + x)[6] + 4095) // 4096 * 4096 for x in os.listdir(MNT + "/j")
               if x.endswith(".seg"))
    n3 = journal_size.size_for(MNT + "/j")[0]
    assert 100 <= n3 < n2 and n3 * 120 <= held, (n3, n2, held)
    vfs.umount(MNT)


def _pico_w_case():
    """A Pico W's filesystem with the firmware on it, and the case's journal: (dev, clock, journal)."""
    dev = _fs(PICO_W_BLOCKS)
    _firmware_files()
    clock = Clock()
    return dev, clock, Journal(MNT + "/j", clock=clock)


def _reboot(dev, clock):
    """The case resets: its filesystem mounted again, its journal opened (and sized) again."""
    vfs.umount(MNT)
    vfs.mount(vfs.VfsLfs2(dev), MNT)
    return Journal(MNT + "/j", clock=clock)


def test_an_offline_shift_loses_nothing():
    dev, clock, j = _pico_w_case()
    assert j.max_records >= SHIFT
    # The link is down for the whole shift: nothing is read or acked.
    for i in range(SHIFT):
        kind, data = EVENTS[i % len(EVENTS)]
        r = j.append(kind, data)
        assert r is not None, (i, j.last_error)
    assert j.faults == 0 and j.lost == 0 and j.stored() == SHIFT
    # Room is left for the rest: an update's second firmware among it.
    assert _free() >= FW_ROOM, _free()
    segs = [x for x in os.listdir(MNT + "/j") if x.endswith(".seg")]
    assert len(segs) <= 17, len(segs)  # its RAM holds one small list per segment
    # A reboot during the outage, then the link comes back: the sender's batches of 12, each acked.
    j = _reboot(dev, clock)
    assert j.pending() == SHIFT
    got = 0
    while True:
        batch = list(j.records(0, 12))
        if not batch:
            break
        for r in batch:
            assert r["type"] != OVERFLOW, r
            got += 1
            assert r["id"] == got, (r, got)
            kind, data = EVENTS[(got - 1) % len(EVENTS)]
            assert r["type"] == kind and r["source" if "source" in data else "reason" if "reason" in data
                                          else "after"] == data.get("source", data.get("reason", data.get("after")))
        assert j.ack(batch[-1]["id"])
    assert got == SHIFT and j.pending() == 0 and j.faults == 0
    vfs.umount(MNT)


def test_an_update_fits_beside_a_full_journal_and_its_trial_boot_drops_nothing():
    # issue 13 on a Pico W: the journal filled to its size, unsent (the case was offline), then an
    # update's second firmware written beside it, then its trial boot, whose own events must not
    # push out what the case has not sent yet.
    dev, clock, j = _pico_w_case()
    full = j.max_records
    for i in range(full - 1):  # to the brim: the next append would drop the oldest segment
        assert j.append(*EVENTS[i % len(EVENTS)]) is not None, (i, j.last_error)
    assert j.lost == 0
    _firmware_files("/fw_a")  # raises OSError (no space) if the journal took the update's room
    j = _reboot(dev, clock)  # the trial boot: sized with two firmwares on flash
    assert j.pending() == full - 1
    for i in range(20):  # its boot, fw and the first shopper's events
        assert j.append("fw", {"i": i}) is not None, (i, j.last_error)
    assert j.lost == 0 and j.pending() == full + 19 and j.faults == 0
    vfs.umount(MNT)


def test_offline_reboots_never_grow_the_journal_past_its_size():
    # A case offline, its journal full and unsent, rebooting again and again: the size holds (the
    # oldest segment goes), and the update's room and littlefs's reserve stay free.
    dev, clock, j = _pico_w_case()
    size = j.max_records
    for i in range(size + j.segment_records):
        j.append(*EVENTS[i % len(EVENTS)])
    for boot in range(6):
        j = _reboot(dev, clock)
        assert j.max_records == size, (boot, j.max_records, size)
        for i in range(j.segment_records):
            j.append(*EVENTS[i % len(EVENTS)])
        assert j.stored() <= size and _free() >= FW_ROOM, (boot, j.stored(), _free())
    vfs.umount(MNT)


def test_records_resume_where_the_sender_stopped():
    # A sender that stops short of a batch (the message is full), acks less than it read, or reads
    # the same batch again (its publish failed) gets every record once acked, in order.
    _fs(64)
    j = Journal(MNT + "/j", max_records=400, segment_records=200, clock=Clock())
    for i in range(300):
        j.append("granted", {"i": i})
    sent = 0
    rounds = 0
    while sent < 300:
        rounds += 1
        want = 1 + rounds % 7
        took = []
        for r in j.records(0, 12):
            took.append(r["i"])
            if len(took) == want:
                break  # the message is full: the rest waits for the next batch
        assert took == list(range(sent, min(sent + want, 300))), (took, sent)
        if rounds % 3 == 0:
            again = [r["i"] for r in j.records(0, len(took))]  # a resend before the ack
            assert again == took, (again, took)
        assert j.ack(sent + len(took))
        sent += len(took)
    assert list(j.records()) == []
    vfs.umount(MNT)


def test_ram_does_not_grow_with_the_journal():
    # The object of a full Pico-W-sized journal against one of 1000 records in 100-record segments
    # (what the journal was before it was sized from the filesystem).
    _fs(PICO_W_BLOCKS)
    clock = Clock()
    j = Journal(MNT + "/big", clock=clock)
    for i in range(j.max_records):
        j.append(*EVENTS[i % len(EVENTS)])
    small = Journal(MNT + "/small", max_records=1000, segment_records=100, clock=clock)
    for i in range(1000):
        small.append(*EVENTS[i % len(EVENTS)])
    big = j.max_records
    held = []
    for kw in ({}, {"max_records": 1000, "segment_records": 100}):
        j = small = None
        gc.collect()
        m = gc.mem_alloc()
        j = Journal(MNT + ("/big" if not kw else "/small"), clock=clock, **kw)
        gc.collect()
        held.append(gc.mem_alloc() - m)
    print("journal RAM: %d B with %d records on flash, %d B with 1000" % (held[0], big, held[1]))
    assert held[0] <= held[1] + 512, held
    vfs.umount(MNT)
