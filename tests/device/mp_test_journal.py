# heap: 512k
# The journal on a real littlefs (vfs.VfsLfs2) over a RAM block device that can lose power.
# The heap is raised for the RAM images and the test's own bookkeeping; the journal's own use is
# measured in test_measure and must stay a small part of a 96k board heap.
import gc
import os

import vfs
from ramblock import Clock as _Clock
from ramblock import RAMBlock, Rng

import lockcase.journal as journal
from lockcase.compat import ticks_diff, ticks_ms
from lockcase.events import JOURNALED, Bus
from lockcase.journal import OVERFLOW, Journal


def Clock():
    return _Clock(1700000000, 1)


MNT = "/jt"



def fresh(blocks=64, block_size=512):
    try:
        vfs.umount(MNT)
    except OSError:
        pass
    dev = RAMBlock(block_size, blocks)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MNT)
    return dev


def remount(dev):
    gc.collect()  # finalisers of any file left open run now, while the old mount still exists
    vfs.umount(MNT)
    dev.revive()
    vfs.mount(vfs.VfsLfs2(dev), MNT)


def seg_files(d):
    return sorted(int(n[:-4]) for n in os.listdir(d) if n.endswith(".seg"))


def ids(recs):
    return [r["id"] for r in recs]


def test_round_trip():
    fresh()
    c = Clock()
    j = Journal(MNT + "/j", max_records=50, segment_records=10, clock=c)
    assert j.last_id == 0 and j.pending() == 0 and list(j.records()) == []
    sent = []
    for i in range(25):
        r = j.append("granted", {"user": "u%d" % i, "slot": i, "tags": [1, "a", None, True]})
        assert r["id"] == i + 1 and r["type"] == "granted" and r["ts"] == c.t
        sent.append(r)
    assert j.last_id == 25 and j.pending() == 25
    assert list(j.records()) == sent
    assert list(j.records(after_id=20)) == sent[20:]
    assert list(j.records(after_id=3, limit=4)) == sent[3:7]
    assert list(j.records(limit=0)) == []
    # Data cannot overwrite the journal's own fields, and what cannot be stored is made plain.
    r = j.append("denied", {"id": 99, "type": "x", "t": (1, 2), "o": object(), "f": float("inf")})
    assert r["id"] == 26 and r["type"] == "denied" and r["t"] == [1, 2]
    assert r["o"].startswith("<") and type(r["f"]) is str
    assert list(j.records(after_id=25)) == [r]
    sent.append(r)

    assert j.ack(12) is True
    assert j.acked == 12 and j.pending() == 14
    assert list(j.records()) == sent[12:]
    assert list(j.records(after_id=5)) == sent[12:]  # acked records are never handed out again
    assert seg_files(MNT + "/j") == [11, 21]  # [1..10] fully acked and deleted; 11.. still needed
    assert j.ack(5) is True and j.acked == 12  # an old ack does not move the mark back
    assert j.ack(1000) is True and j.acked == 26  # clamped to what exists
    assert j.pending() == 0 and list(j.records()) == []
    assert seg_files(MNT + "/j") == [21]  # the newest stays: it holds the id high-water mark
    assert j.faults == 0 and j.corrupt == 0


def test_ids_continue_after_reopen():
    fresh()
    d = MNT + "/j"
    j = Journal(d, max_records=40, segment_records=5)
    for i in range(12):
        j.append("opened", {"i": i})
    j = Journal(d, max_records=40, segment_records=5)
    assert j.last_id == 12 and j.pending() == 12
    assert j.append("closed")["id"] == 13
    j.ack(13)
    j = Journal(d, max_records=40, segment_records=5)
    assert j.last_id == 13 and j.acked == 13 and j.pending() == 0
    assert j.append("closed")["id"] == 14
    # Even with the delivered mark gone, ids are recovered from the newest segment; the records
    # come back (at-least-once), never a reused id.
    os.remove(d + "/ack")
    j = Journal(d, max_records=40, segment_records=5)
    assert j.last_id == 14 and j.acked == 0
    assert ids(j.records()) == [11, 12, 13, 14]
    # Nothing says 1..10 were delivered any more, so they are reported as possibly lost.
    b = j.append("boot")
    o = list(j.records(after_id=14))
    assert b["id"] == 16 and o[0]["type"] == OVERFLOW and (o[0]["first"], o[0]["last"]) == (1, 10)


def test_bounded_with_overflow_report():
    fresh(blocks=128)
    d = MNT + "/j"
    j = Journal(d, max_records=20, segment_records=5)
    appended = {}
    for i in range(103):
        r = j.append("tamper", {"i": i})
        appended[r["id"]] = r
        assert j.stored() <= 20
        if i == 14:
            j.ack(10)  # delivered before the journal filled: dropping these is no loss
    recs = list(j.records())
    assert j.stored() <= 20 and len(recs) == j.pending() == j.stored()
    present = ids(recs)
    first = present[0]
    over = [r for r in recs if r["type"] == OVERFLOW]
    assert over, "no overflow record"
    lost = set()
    for o in over:
        assert o["first"] <= o["last"] < o["id"]
        lost.update(range(o["first"], o["last"] + 1))
    # Ids are dense: everything unacked below the oldest on flash was dropped, and said so; the
    # overflow records themselves count when they are dropped in turn.
    assert lost == set(range(11, first)), (sorted(lost), first)
    assert j.lost == first - 11
    assert over[-1]["last"] == first - 1
    for r in recs:
        assert r["type"] == OVERFLOW or r == appended[r["id"]]
    assert recs[-1] == appended[max(appended)]
    # Reopening keeps the bound and does not report again what was already reported.
    j = Journal(d, max_records=20, segment_records=5)
    assert j._gone_to() == 0 and j.stored() <= 20
    r = j.append("boot")
    assert [x["type"] for x in j.records(after_id=r["id"] - 1)] == ["boot"]


def test_loss_hidden_by_a_cut_is_reported_at_open():
    # A cut between dropping the oldest segment and writing the overflow record: at open, the ids
    # between the delivered mark and the oldest segment are known lost and reported once.
    fresh()
    d = MNT + "/j"
    j = Journal(d, max_records=20, segment_records=5)
    for i in range(17):
        j.append("held_open", {"i": i})
    j.ack(3)
    os.remove(d + "/1.seg")  # what _drop_oldest does just before the cut
    j = Journal(d, max_records=20, segment_records=5)
    assert ids(j.records()) == list(range(6, 18))
    r = j.append("boot")
    got = list(j.records(after_id=17))
    assert got[0]["type"] == OVERFLOW and (got[0]["first"], got[0]["last"]) == (4, 5)
    assert got[0]["lost"] == 2 and got[1] == r
    j = Journal(d, max_records=20, segment_records=5)
    assert j._gone_to() == 0


def _write_into(path, off, data):
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    if off is None:
        buf += data
    else:
        buf[off : off + len(data)] = data
    with open(path, "wb") as f:
        f.write(buf)


def test_torn_tail_is_ignored_and_not_appended_after():
    fresh()
    d = MNT + "/j"
    j = Journal(d, max_records=100, segment_records=20)
    sent = [j.append("granted", {"i": i}) for i in range(8)]
    for cut in (3, 14, 30):  # inside the header, just after it, part of the payload
        newest = seg_files(d)[-1]
        whole = journal.encode({"id": j.last_id + 1, "ts": 1, "type": "granted", "pad": "y" * 40})
        _write_into("%s/%d.seg" % (d, newest), None, whole[:cut])
        j = Journal(d, max_records=100, segment_records=20)
        assert list(j.records()) == sent and j.corrupt == 0 and j.last_id == len(sent)
        r = j.append("closed", {"k": cut})
        sent.append(r)
        assert list(j.records()) == sent  # the new record went to a fresh segment, not after junk
        assert seg_files(d)[-1] == r["id"]
        j.append("opened")  # and the fresh segment is appended to normally
        sent.append(list(j.records())[-1])
    assert seg_files(d) == [1, 9, 11, 13]
    j = Journal(d, max_records=100, segment_records=20)
    assert list(j.records()) == sent and j.corrupt == 0 and j.pending() == len(sent)


def test_corrupt_middle_record_is_skipped_and_counted():
    fresh()
    d = MNT + "/j"
    j = Journal(d, max_records=100, segment_records=20)
    sent = [j.append("granted", {"i": i, "pad": "x" * 10}) for i in range(12)]
    with open(d + "/1.seg", "rb") as f:
        raw = f.read()
    offs = [0]  # frame starts
    while offs[-1] < len(raw):
        offs.append(journal.decode(raw, offs[-1])[1])
    _write_into(d + "/1.seg", offs[4] + 20, b"XXXX")  # payload of id 5
    _write_into(d + "/1.seg", offs[7] + 4, b"\xff\x7f")  # length field of id 8: resync needed
    j = Journal(d, max_records=100, segment_records=20)
    got = list(j.records())
    assert got == [r for r in sent if r["id"] not in (5, 8)]
    assert j.corrupt == 2 and j.last_id == 12
    list(j.records())
    assert j.corrupt == 2  # the same damage read again is not counted again
    assert j.pending() == 10
    r = j.append("closed")
    assert r["id"] == 13 and list(j.records(after_id=12)) == [r]
    # Garbage that is a whole valid-looking header with a wrong CRC is skipped too.
    bad = bytearray(journal.encode({"id": 14, "ts": 1, "type": "forged"}))
    bad[-2] ^= 1
    _write_into(d + "/1.seg", offs[2], bad[: offs[3] - offs[2]])
    j = Journal(d, max_records=100, segment_records=20)
    assert "forged" not in [x["type"] for x in j.records()]
    assert 3 not in ids(j.records()) and j.corrupt == 3


def test_format_round_trip_and_rejects():
    rec = {"id": 7, "ts": 123, "type": "help", "who": "desk"}
    buf = journal.encode(rec) + journal.encode({"id": 8, "ts": 124, "type": "fault"})
    r, off = journal.decode(buf)
    assert r == rec
    r2, end = journal.decode(buf, off)
    assert r2["id"] == 8 and end == len(buf)
    assert journal.decode(buf[: off - 1]) == (None, 0)
    b = bytearray(buf)
    b[20] ^= 0x40
    assert journal.decode(b) == (None, 0)


def test_enospc_drops_oldest_and_retries():
    fresh(blocks=24)  # 12 KiB: fills long before max_records
    d = MNT + "/j"
    j = Journal(d, max_records=10000, segment_records=8)
    pad = "p" * 200
    okc = 0
    for i in range(300):
        r = j.append("fault", {"i": i, "pad": pad})
        if r is not None:
            okc += 1
            assert r["i"] == i
    assert j.lost > 0, "the filesystem never filled"
    assert okc >= 295 and j.faults <= 5, (okc, j.faults)
    recs = list(j.records())
    assert any(x["type"] == OVERFLOW for x in recs)
    assert recs[-1]["i"] == 299
    j = Journal(d, max_records=10000, segment_records=8)
    assert list(j.records()) == recs


def test_flash_failure_never_raises():
    dev = fresh()
    j = Journal(MNT + "/j", max_records=40, segment_records=5)
    j.append("boot")
    dev.cut_after(1)
    for _ in range(3):
        assert j.append("granted", {"u": 1}) is None
    assert j.faults == 3 and j.last_error.args[0] == 5  # EIO from the device
    assert j.last_id == 4  # failed ids are not handed out again this boot
    assert list(j.records()) == [] or ids(j.records()) == [1]
    assert j.ack(1) is False and j.faults == 4
    remount(dev)
    j = Journal(MNT + "/j", max_records=40, segment_records=5)
    assert ids(j.records()) == [1] and j.faults == 0
    # Ids 2..4 never reached flash, so nothing (the cloud included) can have seen them.
    assert j.append("boot")["id"] == 2


def test_attach_journals_only_journaled_events():
    fresh()
    bus = Bus()
    j = Journal(MNT + "/j", max_records=40, segment_records=5)
    j.attach(bus)
    bus.emit("granted", user="a")
    bus.emit("door_debounce", level=1)  # not journaled
    bus.emit("forced")
    got = list(j.records())
    assert [(r["type"], r.get("user")) for r in got] == [("granted", "a"), ("forced", None)]
    assert "granted" in JOURNALED and "door_debounce" not in JOURNALED


# -- power cuts -----------------------------------------------------------------------------------

PHASE = ["idle"]
CUTS = {}
SEEN = {"reported at open": 0, "torn": 0, "raised": 0, "overflowed": 0, "in-flight landed": 0}


class _OsSpy:
    # Stands in for os inside lockcase.journal to learn which step a cut interrupted.
    def __getattr__(self, name):
        return getattr(os, name)

    def rename(self, a, b):
        PHASE[0] = "rename"
        return os.rename(a, b)

    def remove(self, p):
        PHASE[0] = "remove"
        return os.remove(p)

    def mkdir(self, p):
        PHASE[0] = "mkdir"
        return os.mkdir(p)


def _open_spy(path, mode="r"):
    if "a" in mode:
        try:
            os.stat(path)
            PHASE[0] = "append"
        except OSError:
            PHASE[0] = "rotate"
    elif "w" in mode:
        PHASE[0] = "ack_write"
    return open(path, mode)


def _on_cut():
    CUTS[PHASE[0]] = CUTS.get(PHASE[0], 0) + 1


MAXR = 24
SEGR = 6


def _check_overflow(o):
    assert o["type"] == OVERFLOW and o["lost"] >= 1, o
    assert o["first"] <= o["last"] < o["id"], o
    assert o["lost"] <= o["last"] - o["first"] + 1, o


def _power_cut_seed(seed, window):
    rng = Rng(seed)
    dev = fresh(blocks=64)
    dev.on_cut = _on_cut
    dev.raise_on_cut = seed % 7 == 3
    clock = Clock()
    d = MNT + "/j"
    appended = {}  # id -> record, for every append that returned before the cut
    store = {}  # what the "cloud" received before the cut
    acked_ok = 0  # highest ack() that returned True
    ack_cut = 0  # the ack() the cut interrupted: it may or may not have landed
    inflight = None
    PHASE[0] = "open"
    dev.cut_random(seed, window, torn=seed % 2 == 1)
    j = Journal(d, max_records=MAXR, segment_records=SEGR, clock=clock)
    cursor = 0
    for _ in range(2000):
        if dev.dead:
            break
        op = rng.below(100)
        if op < 66:
            kind = JOURNALED[rng.below(len(JOURNALED))]
            data = {"n": rng.below(1000), "pad": "x" * rng.below(70)}
            inflight = (kind, data)
            PHASE[0] = "append"
            r = j.append(kind, data)
            if r is not None:
                appended[r["id"]] = r
                inflight = None
                assert r["type"] == kind and r["n"] == data["n"]
            else:
                assert dev.dead, "append failed with power on (faults %d)" % j.faults
        elif op < 92:
            PHASE[0] = "read"
            inflight = None
            last = cursor
            for r in j.records(after_id=cursor, limit=1 + rng.below(10)):
                assert r["id"] > last and r["id"] > acked_ok
                last = r["id"]
                if r["type"] == OVERFLOW:
                    _check_overflow(r)
                else:
                    assert appended[r["id"]] == r, (r, appended.get(r["id"]))
                store[r["id"]] = r
            cursor = last
            if last > acked_ok and rng.below(3):
                upto = acked_ok + 1 + rng.below(last - acked_ok)
                PHASE[0] = "ack"
                if j.ack(upto):
                    acked_ok = upto
                else:
                    assert dev.dead, "ack failed with power on"
                    ack_cut = upto
        else:
            PHASE[0] = "reopen"
            inflight = None
            j = Journal(d, max_records=MAXR, segment_records=SEGR, clock=clock)
            cursor = 0
        assert j.stored() <= MAXR
    if not dev.dead:
        return False
    assert dev.ops >= dev.cut_at

    # Reboot: mount what reached the flash and check the journal against the model.
    PHASE[0] = "after"
    remount(dev)
    j = Journal(d, max_records=MAXR, segment_records=SEGR, clock=clock)
    got = list(j.records())
    assert j.corrupt == 0 and j.faults == 0, (j.corrupt, j.faults)
    assert j.acked in (acked_ok, ack_cut), (j.acked, acked_ok, ack_cut)
    assert j.pending() == len(got) and j.stored() <= MAXR
    gids = ids(got)
    assert gids == sorted(set(gids)), gids  # (c) strictly increasing
    assert not gids or gids[0] > acked_ok, (gids, acked_ok)  # (d) acked is never re-delivered
    seen = max([0] + list(appended) + list(store) + gids)
    assert j.last_id >= seen
    extra = 0
    for r in got:  # (b) nothing invented, nothing altered
        if r["type"] == OVERFLOW:
            _check_overflow(r)
        elif r["id"] in appended:
            assert r == appended[r["id"]], (r, appended[r["id"]])
        else:
            # Only the append the cut interrupted may or may not have landed.
            assert inflight is not None and r["id"] > max([0] + list(appended)), r
            assert r["type"] == inflight[0] and r["n"] == inflight[1]["n"], (r, inflight)
            assert r["pad"] == inflight[1]["pad"]
            extra += 1
    assert extra <= 1
    # (c) the journal takes new appends, with fresh ids, and reports a loss a cut hid.
    PHASE[0] = "after"
    b = j.append("boot", {"seed": seed})
    assert b is not None and b["id"] > seen, (b, seen)
    tail = list(j.records(after_id=gids[-1] if gids else 0))
    assert tail[-1] == b and len(tail) <= 2
    if len(tail) == 2:
        assert tail[0]["type"] == OVERFLOW
        SEEN["reported at open"] += 1
    SEEN["torn"] += dev.torn
    SEEN["raised"] += dev.raise_on_cut
    SEEN["in-flight landed"] += extra
    got += tail[:-1]
    lost = set()
    if [o for o in list(store.values()) + got if o["type"] == OVERFLOW]:
        SEEN["overflowed"] += 1
    for o in list(store.values()) + got:
        if o["type"] == OVERFLOW:
            _check_overflow(o)
            lost.update(range(o["first"], o["last"] + 1))
    present = set(ids(got))
    for rid in appended:  # (a) every acknowledged append is there, unless acked or reported lost
        if rid <= j.acked or rid in present:
            continue
        assert rid in lost, (seed, rid, sorted(present), acked_ok, sorted(lost))
        newer = sum(1 for x in appended if x > rid) + sum(1 for x in got if x["id"] > rid)
        assert newer >= MAXR - SEGR - 2, (rid, newer)  # dropped only when the journal was full
    for r in got:
        assert r["id"] in present
    # And it keeps going: a clean run after the reboot.
    for i in range(3):
        assert j.append("granted", {"i": i}) is not None
    assert j.ack(j.last_id) and j.pending() == 0
    return True


POWER_CUT_SEEDS = 1000


def test_power_cut_at_random_block_writes():
    journal.os = _OsSpy()
    journal.open = _open_spy
    CUTS.clear()
    for k in SEEN:
        SEEN[k] = 0
    try:
        seeds = cuts = 0
        # Bounded by count, not time, so a loaded machine runs the same cuts as an idle one: every
        # seed replays exactly (xorshift seeds, virtual clock), and the first 160 seeds already cut
        # during every step checked below (the last to be reached, mkdir, at seed 159; the others
        # by seed 33), so 1000 leave a wide margin and still take seconds.
        for seed in range(1, POWER_CUT_SEEDS + 1):
            seeds += 1
            if _power_cut_seed(seed, 700):
                cuts += 1
    finally:
        del journal.os
        del journal.open
        import os as _os

        journal.os = _os
    print("power-cut: %d seeds, %d cuts, by step: %s" % (seeds, cuts, sorted(CUTS.items())))
    print("power-cut: of which %s" % sorted(SEEN.items()))
    assert seeds == POWER_CUT_SEEDS and cuts >= seeds * 9 // 10
    assert SEEN["reported at open"] and SEEN["overflowed"] and SEEN["in-flight landed"]
    assert SEEN["torn"] and SEEN["raised"]
    for step in ("append", "rotate", "ack_write", "rename", "remove", "mkdir"):
        assert CUTS.get(step, 0) > 0, "no cut during " + step


def _rmtree(d):
    for n in os.listdir(d):
        os.remove(d + "/" + n)
    os.rmdir(d)


def test_measure():
    # Time on littlefs over the RAM device; heap on the Unix port's own filesystem, because the
    # Python block device allocates on every block read and would be counted as the journal's.
    data = {"user": "u1234", "slot": 3, "reason": "ok"}
    dev = fresh(blocks=256, block_size=512)  # 128 KiB: room for a full 1000-record journal
    clock = Clock()
    j = Journal(MNT + "/j", max_records=1000, segment_records=100, clock=clock)
    ops0 = dev.ops
    t0 = ticks_ms()
    for _ in range(1000):
        j.append("granted", data)
    t_app = ticks_diff(ticks_ms(), t0)
    assert j.stored() == 1000 and j.faults == 0
    ops = dev.ops - ops0
    t0 = ticks_ms()
    j = Journal(MNT + "/j", max_records=1000, segment_records=100, clock=clock)
    t_open = ticks_diff(ticks_ms(), t0)
    t0 = ticks_ms()
    assert sum(1 for _ in j.records()) == 1000
    t_read = ticks_diff(ticks_ms(), t0)
    t0 = ticks_ms()
    j.ack(500)
    t_ack = ticks_diff(ticks_ms(), t0)
    vfs.umount(MNT)
    del j, dev
    gc.collect()

    # Peak heap: run the journal with only `room` bytes of heap left free (the rest held by
    # ballast) and find the least room in which open, appends, a full read and an ack all work.
    d = "/tmp/lockcase-journal-%d" % (ticks_ms() & 0xFFFFFF)
    try:
        j = Journal(d, max_records=1000, segment_records=100, clock=clock)
        for _ in range(1000):
            j.append("granted", data)
        gc.collect()
        m = gc.mem_alloc()
        del j
        gc.collect()
        held = m - gc.mem_alloc()  # the object with 1000 records on flash
        need = None
        for room in (3072, 4096, 6144, 8192, 12288, 16384, 24576):
            if _fits(d, room, clock, data):
                need = room
                break
    finally:
        _rmtree(d)
    print(
        "measure: littlefs/RAM device: append %.3f ms/record (%d block ops/record), open of 1000"
        " records %d ms, read %.3f ms/record, ack %d ms; heap: Journal holds %d B, works in %s B"
        " of free heap (open 1000 records, 20 appends, read all, ack)"
        % (t_app / 1000, ops // 1000, t_open, t_read / 1000, t_ack, held, need)
    )
    assert held < 4096 and need is not None and need <= 16384


def _fits(d, room, clock, data):
    ballast = []
    gc.collect()
    try:
        while gc.mem_free() > room + 1024:
            ballast.append(bytearray(512))
        j = Journal(d, max_records=1000, segment_records=100, clock=clock)
        ok = j.last_id >= 1000
        for _ in range(20):
            ok = ok and j.append("granted", data) is not None
        n = 0
        for _ in j.records():
            n += 1
        ok = ok and n == j.pending() and j.ack(j.last_id) and j.faults == 0
    except MemoryError:
        ok = False
    ballast = None
    gc.collect()
    return ok
