# Bounded, power-cut-safe event journal on the flash filesystem (LittleFS v2 on the boards).
#
# Why it is shaped like this:
# - LittleFS commits a file only on flush/close and removes/renames atomically (a rename replaces
#   its target), so each append opens the segment, writes whole frames and closes it: an append
#   that returned survives a power cut, and one cut in flight is either wholly there or absent.
# - Frames still carry a length, the id and a CRC so the same code survives filesystems without
#   those guarantees (VfsPosix on the Unix port, FAT) and bit rot: a bad frame is never returned;
#   the reader hunts for the next valid frame, so a corrupt record costs only itself.
# - Segments are named by the first id given to them, so acks, reads and drops can reason about a
#   whole segment without opening it, and dropping the oldest is one atomic remove.
# - The delivered mark lives in its own file, replaced by write-then-rename. A segment is deleted
#   only once every id of its name range is acked, so any id below the oldest segment and above the
#   mark was dropped unacked. A "journal_overflow" record reports that whole range whenever it grows
#   past what the newest report said: a report dropped in turn, or hidden by a cut between the drop
#   and its write, is made again, and the store only has to merge ranges.
# - The newest segment is never deleted: it keeps the id high-water mark recoverable even if the
#   mark file is lost, so an id the cloud may have seen is never handed out again.
# - Sized from the filesystem (lockcase.journal_size): a case offline for a shift must lose nothing, and how
#   much that is depends on the board's flash. Segments grow with the journal instead of
#   multiplying, so its RAM (one small list per segment) does not grow with its size, and
#   records() resumes where the last call stopped instead of re-reading a segment from its start.
# - One module of ~500 lines on purpose: its frame format and its segment bookkeeping are one
#   invariant (what a cut leaves readable), and on a chip every module costs heap of its own (its
#   globals dict, its name and path; docs/memory.md).

import json
import os
import struct
from binascii import crc32

from lockcase.compat import const, epoch
from lockcase.events import JOURNALED

_MAGIC = const(0xA55A)
_HDR = const("<HHHII")  # magic, kind, payload length, id, crc32 of header[:10] + payload
_HDR_LEN = const(14)
_EVENT = const(1)
_OVERFLOW = const(2)
_MAX_PAYLOAD = const(1024)  # an event is a few dozen bytes; this bounds RAM on a bad length too
_ENOSPC = const(28)
_ENOENT = const(2)
_BATCH = const(8)  # records() reads this many per open: bounded RAM, and no file held across yields
_MAX_BAD = const(16)
_SEG = ".seg"
OVERFLOW = "journal_overflow"


def _plain(v, depth=0):
    # MicroPython's json.dumps writes repr() for what it cannot encode (and bare nan), which would
    # make a record unreadable; keep only what round-trips, so append returns what records() yields.
    t = type(v)
    if v is None or t is bool or t is int or t is str:
        return v
    if t is float:
        return v if v == v and v - v == 0 else repr(v)  # nan and inf are not JSON
    if depth < 4:
        if t is list or t is tuple:
            return [_plain(x, depth + 1) for x in v]
        if t is dict:
            return {str(k): _plain(x, depth + 1) for k, x in v.items()}
    return repr(v)


def _frame(kind, rid, payload):
    h = struct.pack(_HDR, _MAGIC, kind, len(payload), rid, 0)
    crc = crc32(payload, crc32(memoryview(h)[:10])) & 0xFFFFFFFF
    return struct.pack(_HDR, _MAGIC, kind, len(payload), rid, crc) + payload


def encode(rec, kind=_EVENT):
    """One record as its on-flash frame: header (magic, kind, len, id, crc32) then JSON."""
    return _frame(kind, rec["id"], json.dumps(rec).encode())


def decode(buf, off=0):
    """Parse the frame at buf[off:]: (record, next offset), or (None, off) if there is none valid."""
    if len(buf) - off < _HDR_LEN:
        return None, off
    magic, kind, n, rid, crc = struct.unpack_from(_HDR, buf, off)
    end = off + _HDR_LEN + n
    if magic != _MAGIC or n > _MAX_PAYLOAD or end > len(buf):
        return None, off
    mv = memoryview(buf)
    if crc32(mv[off + _HDR_LEN : end], crc32(mv[off : off + 10])) & 0xFFFFFFFF != crc:
        return None, off
    rec = _load(bytes(mv[off + _HDR_LEN : end]), rid)
    return (rec, end) if rec is not None else (None, off)


def _load(payload, rid):
    try:
        rec = json.loads(payload)
    except ValueError:
        return None
    if type(rec) is not dict or rec.get("id") != rid:
        return None  # a valid CRC over the wrong thing is a bug, not data: never hand it out
    return rec


class Journal:
    def __init__(self, dirpath="journal", max_records=None, segment_records=100, clock=epoch):
        # max_records None: sized from the filesystem (size_for), segments included.
        self.dir = dirpath.rstrip("/")
        sized = max_records is None
        spare = 0
        if sized:
            # Sized at boot only: the sizing code is not kept in RAM (lockcase.startup drops it).
            from lockcase.journal_size import size_for

            self._mkdirs()
            max_records, segment_records, spare = size_for(self.dir)
        # Dropping the oldest segment must leave room for a full one, so at least two must fit;
        # shrink segments rather than refuse, as a journal that will not open loses every event.
        if segment_records * 2 > max_records:
            segment_records = max_records // 2
        if segment_records < 2:
            raise ValueError("max_records must be at least 4")
        self.max_records = max_records
        self.segment_records = segment_records
        self.clock = clock
        self.last_id = 0
        self.acked = 0
        self.faults = 0  # appends or acks that failed (flash error): the lock logic goes on
        self.last_error = None  # the latest of those, for diagnostics (not printed: an outage
        # would print once per event)
        self.corrupt = 0  # bad regions skipped in the middle of a segment
        self.lost = 0  # unacked records dropped to stay bounded, this boot
        self._segs = []  # [name (first id), valid records, last valid id], oldest first
        self._told = 0  # highest id an overflow record has reported lost
        self._pending = None
        self._rotate = False
        self._bad = []
        # Where records() stopped: (segment, offset of the last record handed out, the id before
        # it, offset after it, its id). A sender that reads a batch, acks it and reads the next
        # then costs a batch, not a walk from the start of a segment of hundreds of records.
        self._hint = None
        self._open()
        if sized and self.stored() > self.max_records:
            # Sized below what is on flash (an update's second firmware took the room the size
            # counts on, at its trial boot): what the case has not sent is kept, with up to a
            # segment's room for this boot's events, as far as the free space beyond littlefs's
            # reserve goes (so the flash never fills: past that, the oldest segment goes).
            self.max_records = self.stored() + min(segment_records, spare)

    # -- public -----------------------------------------------------------------------------------

    def append(self, kind, data=None):
        """Journal one event; returns the record, or None if flash failed (counted in faults)."""
        try:
            return self._append(kind, data)
        except Exception as exc:  # never into the lock logic: the event is lost, the door is not
            self._fault(exc)
            return None

    def records(self, after_id=0, limit=None):
        """Unacked records with id > after_id, oldest first, read a few at a time from flash."""
        cur = after_id if after_id > self.acked else self.acked
        n = 0
        name = off = None
        while limit is None or n < limit:
            seg = None
            for s in self._segs:
                if s[2] > cur:
                    seg = s
                    break
            if seg is None:
                return
            if seg[0] != name:
                name = seg[0]
                off = 0
                h = self._hint
                if h is not None and h[0] == name:
                    # Every frame before a handed-out record has an id at most the one before it.
                    if h[4] == cur:
                        off = h[3]
                    elif h[2] == cur:
                        off = h[1]  # the sender stopped short of the last record it was given
            out = []
            want = _BATCH if limit is None else min(_BATCH, limit - n)
            r = self._read(name, off, cur, want, out)
            if r is None or not out:
                if seg[2] > cur:
                    cur = seg[2]  # the rest went bad or missing since open: skip it
                continue
            off = r[0]
            for rid, _, p, at in out:
                rec = _load(p, rid)
                if rec is None:
                    self._note_bad(name, -rid)
                    continue
                self._hint = (name, at, cur, at + _HDR_LEN + len(p), rid)
                cur = rid
                n += 1
                yield rec

    def ack(self, upto_id):
        """The store has every record up to upto_id: persist that, delete what it frees. -> bool"""
        upto = min(int(upto_id), self.last_id)
        if upto <= self.acked:
            return True
        try:
            try:
                self._write_ack(upto)
            except OSError as exc:
                # Full: free what the store already has first. A cut before the mark lands then
                # makes open report those ids lost: a false alarm, never a silent loss.
                if exc.args[0] != _ENOSPC or not self._gc(upto):
                    raise
                self._write_ack(upto)
        except Exception as exc:
            self._fault(exc)
            return False
        self.acked = upto
        self._pending = None
        try:
            self._gc(upto)
        except Exception as exc:  # the ack is durable; the next ack or open deletes the rest
            self._fault(exc)
        return True

    def pending(self):
        """How many records on flash are not acked yet."""
        if self._pending is None:
            n = 0
            for name, count, last in self._segs:
                if last <= self.acked:
                    continue
                if name > self.acked:
                    n += count
                else:
                    r = self._read(name, 0, self.acked, None, None)
                    n += r[6] if r else 0
            self._pending = n
        return self._pending

    def attach(self, bus, confirm=None):
        # confirm(kind, data): called once a record is on flash (the safety file's grant mark).
        self._confirm = confirm
        bus.subscribe(self._on_event, JOURNALED)

    def stored(self):
        """Records on flash, acked or not (what the bound applies to)."""
        return sum(s[1] for s in self._segs)

    # -- internals --------------------------------------------------------------------------------

    def _on_event(self, kind, data):
        if self.append(kind, data) is not None and self._confirm is not None:
            self._confirm(kind, data)

    def _fault(self, exc):
        self.faults += 1
        self.last_error = exc
        print("journal: fault", repr(exc))  # on the console log: an event was not journaled

    def _path(self, name):
        return "%s/%d%s" % (self.dir, name, _SEG)

    def _open(self):
        self._mkdirs()
        names = []
        try:
            for ent in os.ilistdir(self.dir):
                fn = ent[0]
                if fn.endswith(_SEG) and fn[: -len(_SEG)].isdigit():
                    names.append(int(fn[: -len(_SEG)]))
        except OSError as exc:  # no directory (cut while making it): appends will make it
            self._fault(exc)
        names.sort()
        acked = self._read_ack()
        last = acked
        told = 0  # highest id an overflow record on flash already reported as lost
        tail_bad = False
        for name in names:
            r = self._read(name, 0, acked, None, None)
            if r is None:
                continue
            self._segs.append([name, r[1], r[2] if r[1] else name - 1])
            last = max(last, r[2], name - 1)
            told = max(told, r[5])
            tail_bad = r[3] < r[4]
        self.acked = acked
        self.last_id = last
        self._told = told
        # Appending after junk would strand the new records behind it for every reader to hunt past.
        self._rotate = tail_bad
        try:
            self._gc(acked)  # a cut between an ack and its deletes left these behind
        except OSError as exc:
            self._fault(exc)

    def _mkdirs(self):
        p = "/" if self.dir.startswith("/") else ""
        for part in self.dir.split("/"):
            if part:
                p = p + part if not p or p == "/" else p + "/" + part
                try:
                    os.mkdir(p)
                except OSError:
                    pass  # exists; a real failure shows on the first append

    def _read_ack(self):
        try:
            with open(self.dir + "/ack", "r") as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0  # unknown: redeliver everything (at-least-once) rather than skip any

    def _write_ack(self, upto):
        tmp = self.dir + "/ack.tmp"
        with open(tmp, "w") as f:
            f.write(str(upto))
        os.rename(tmp, self.dir + "/ack")

    def _gc(self, upto):
        # Whole segments whose name range is acked; never the newest (it holds the high-water mark).
        done = False
        while len(self._segs) > 1 and self._segs[1][0] - 1 <= upto:
            self._remove(self._segs[0][0])
            self._segs.pop(0)
            done = True
        return done

    def _remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError as exc:
            if exc.args[0] != _ENOENT:
                raise

    def _append(self, kind, data):
        rec = {}
        if data:
            for k, v in data.items():
                rec[str(k)] = _plain(v, 1)
        for attempt in (0, 1):
            self._make_room()
            nid = self.last_id
            frames = []
            now = self.clock()
            gone_to = self._gone_to()
            if gone_to:
                nid += 1
                a = self.acked + 1
                ov = {"id": nid, "ts": now, "type": OVERFLOW, "first": a, "last": gone_to}
                # Exact unless appends failed: their ids never held a record.
                ov["lost"] = gone_to - a + 1
                frames.append(encode(ov, _OVERFLOW))
            nid += 1
            rec["id"] = nid
            rec["ts"] = now
            rec["type"] = kind
            p = json.dumps(rec).encode()
            if len(p) > _MAX_PAYLOAD:
                rec = {"id": nid, "ts": now, "type": kind, "truncated": len(p)}
                p = json.dumps(rec).encode()
            frames.append(_frame(_EVENT, nid, p))
            seg = self._segs[-1] if self._segs else None
            if seg is None or self._rotate or seg[1] + len(frames) > self.segment_records:
                seg = [nid - len(frames) + 1, 0, nid - len(frames)]
                self._segs.append(seg)
                self._rotate = False
            try:
                self._write(seg[0], b"".join(frames) if len(frames) > 1 else frames[0])
            except OSError as exc:
                if attempt == 0:
                    if exc.args[0] == _ENOSPC and self._drop_oldest():
                        continue  # nothing landed: littlefs aborts the whole commit
                    if exc.args[0] == _ENOENT:
                        self._mkdirs()  # the directory was never made (a cut at first boot)
                        continue
                # A failed write may still have landed (other filesystems): never reuse these ids,
                # and count the segment again from flash rather than guess.
                self.last_id = nid
                self._pending = None
                r = self._read(seg[0], 0, self.acked, None, None)
                if r:
                    seg[1] = r[1]
                    seg[2] = r[2] if r[1] else seg[0] - 1
                raise
            seg[1] += len(frames)
            seg[2] = nid
            self.last_id = nid
            if self._pending is not None:
                self._pending += len(frames)
            if gone_to:
                self._told = gone_to
            return rec

    def _write(self, name, buf):
        f = open(self._path(name), "ab")
        try:
            if f.write(buf) != len(buf):
                raise OSError(_ENOSPC)
        finally:
            f.close()  # the commit: only now is the append durable

    def _gone_to(self):
        # The last id of an unreported loss, or 0.
        if self._segs:
            gone_to = self._segs[0][0] - 1
            if gone_to > self.acked and gone_to > self._told:
                return gone_to
        return 0

    def _make_room(self):
        # Room for this record and, when something is or becomes lost, the overflow record.
        while self.stored() + (2 if self._gone_to() else 1) > self.max_records:
            if not self._drop_oldest():
                return

    def _drop_oldest(self):
        if len(self._segs) < 2:
            return False
        name, count, last = self._segs[0]
        n = 0
        if last > self.acked:
            if name > self.acked:
                n = count
            else:
                r = self._read(name, 0, self.acked, None, None)
                n = r[6] if r else 0
        self._remove(name)
        self._segs.pop(0)
        if n:
            self.lost += n
            self._pending = None
        return True

    def _note_bad(self, name, off):
        key = (name, off)
        if key not in self._bad:
            if len(self._bad) >= _MAX_BAD:
                self._bad.pop(0)
            self._bad.append(key)
            self.corrupt += 1

    def _read(self, name, off, after, limit, out):
        # Walk the frames of one segment from byte offset off. Frames with id > after go to out
        # (id, kind, payload, offset), at most limit of them. Returns (offset to resume at, valid
        # frames seen, last valid id, end of the last valid frame, file size, highest id reported
        # lost by an overflow record, valid frames with id > after), or None if the file is missing.
        try:
            f = open(self._path(name), "rb")
        except OSError:
            return None
        try:
            size = f.seek(0, 2)
            n = last = told = nafter = 0
            good = off
            bad_at = -1
            while off + _HDR_LEN <= size:
                if out is not None and limit is not None and len(out) >= limit:
                    break
                f.seek(off)
                h = f.read(_HDR_LEN)
                magic, kind, ln, rid, crc = struct.unpack(_HDR, h)
                ok = magic == _MAGIC and ln <= _MAX_PAYLOAD and off + _HDR_LEN + ln <= size
                if ok:
                    p = f.read(ln)
                    ok = crc32(p, crc32(memoryview(h)[:10])) & 0xFFFFFFFF == crc
                if not ok:
                    if bad_at < 0:
                        bad_at = off
                    off = _hunt(f, off + 1, size)
                    if off < 0:
                        off = size  # the rest is a torn or garbled tail
                        break
                    continue
                if bad_at >= 0:
                    self._note_bad(name, bad_at)  # valid data after it: a corrupt middle
                    bad_at = -1
                at = off
                off += _HDR_LEN + ln
                good = off
                n += 1
                last = rid
                if kind == _OVERFLOW:
                    ov = _load(p, rid)
                    if ov and type(ov.get("last")) is int and ov["last"] > told:
                        told = ov["last"]
                if rid > after:
                    nafter += 1
                    if out is not None:
                        out.append((rid, kind, p, at))
            return off, n, last, good, size, told, nafter
        finally:
            f.close()


def _hunt(f, pos, size):
    # Next place the magic occurs at or after pos, or -1: a resync point, still to be validated.
    m = struct.pack("<H", _MAGIC)
    while pos + _HDR_LEN <= size:
        f.seek(pos)
        b = f.read(64)
        if len(b) < 2:
            return -1
        i = b.find(m)
        if i >= 0:
            return pos + i
        pos += len(b) - 1  # the magic may straddle two chunks
    return -1
