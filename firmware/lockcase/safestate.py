# Safety and brute-force state that must outlive a reset, a watchdog reset or a power cut: the
# coil's duty budget, the failed-entry counters and lockouts, the tamper latch, and the record of
# the grant being made. RAM does not survive any of those, so without this file an attacker who
# resets the case between tries gets a fresh duty budget and a fresh failure count every time,
# and a cut between energizing the coil and journaling the grant leaves an opening unrecorded
# (docs/safety.md has the argument).
#
# Why it is shaped like this:
# - One 68-byte file: twelve 32-bit values, the grant's `who` (16 bytes) and a CRC, rewritten in
#   place and synced. Under 128 bytes, LittleFS keeps it inline in its directory's metadata, so a
#   write is one metadata commit (no block erase, unlike appending to the journal's segments):
#   cheap enough to sit between a grant decision and the coil. LittleFS commits a file's new
#   contents only at sync, so a cut leaves the old or the new contents; on a filesystem without
#   that guarantee a torn write fails the CRC and reads as the worst case below, which is safe.
# - Written only when a value changes, and always *before* the action it guards (the coil is
#   energized after its duty record and the grant's own record are on flash; "Wrong PIN" shows
#   after the failure is counted), so a cut at any instant leaves the flash at least as
#   pessimistic as the truth. The journal gets the grant after the coil moves; a boot that finds
#   a grant recorded here but not confirmed journaled journals it then (lockcase.recover).
# - The file stays open from boot on and a write reuses one buffer: opening a file allocates a
#   few hundred contiguous bytes, which a chip's fragmented heap may not have at the moment a
#   grant must be recorded (measured: 8 KiB free in pieces, no 252 bytes in one, docs/memory.md).
# - A file that is there but does not check out is corrupt: every value then takes its worst
#   case (full duty budget used, one failure short of a lockout, tamper latched), and the app
#   reports a fault, because bit rot must never hand out a fresh budget.
import struct
from binascii import crc32

FILE = "safety.bin"
FMT = "<12I16s"
SIZE = 68  # struct.calcsize(FMT) + the CRC
N = 12

# Slots. U: energized ms that may still lie within the duty window (worst case, see Lock).
# SF/SL/SS: consecutive wrong staff PINs, staff lockout level, its length in s.
# PF/PL/PS: the same for shoppers' wrong texted codes. TP: tamper latched (1) until cleared.
# G: grants made (the coil was, or was about to be, energized); J: of those, the last one known
# to be in the journal; MS, SRC: grant G's planned length and source (an index of SOURCES).
U, SF, SL, SS, PF, PL, PS, TP, G, J, MS, SRC = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
SOURCES = ("other", "staff", "phone", "card", "nfc", "app")


class SafeState:
    # Made at boot by lockcase.recover.load, which reads (or creates, or repairs) the file: that
    # code runs once and is then dropped, so only what the running case needs stays in RAM.
    def __init__(self, f, v, who=b""):
        self.v = v
        self.who = who
        self.corrupt = False
        self.error = None  # why the record is not trustworthy or cannot be kept (a fault event)
        self.ok = f is not None  # the last write landed; False: Lock refuses grants
        self._buf = bytearray(SIZE)
        self._f = f

    def get(self, slot):
        return self.v[slot]

    def set(self, slot, value, slot2=-1, value2=0, slot3=-1, value3=0):
        """Set up to three slots and write them in one go if any changed. Returns False when the
        flash refused (full or failing): the caller acts as if the worst had been recorded."""
        v = self.v
        if v[slot] == value and (slot2 < 0 or v[slot2] == value2) and (slot3 < 0 or v[slot3] == value3):
            return True
        v[slot] = value
        if slot2 >= 0:
            v[slot2] = value2
        if slot3 >= 0:
            v[slot3] = value3
        return self._write()

    def grant(self, used_ms, ms, source, who):
        """The record of a grant about to energize the coil, in one write: the duty it may add
        (U), its number, length, source and who. Returns False when the flash refused."""
        v = self.v
        v[U] = used_ms
        v[G] += 1
        v[MS] = ms
        v[SRC] = SOURCES.index(source) if source in SOURCES else 0
        w = who.encode() if isinstance(who, str) else b""
        self.who = w[:16]
        if self._write():
            return True
        v[G] -= 1  # not recorded, so not made: a later write must not claim it (U stays high: safe)
        return False

    def journaled(self, kind, data):
        """The journal took this event (Journal.attach's confirm): a grant is on record there."""
        if kind == "granted":
            g = data.get("g")
            if g is not None:
                self.set(J, g)

    def _write(self):
        buf = self._buf
        struct.pack_into(FMT, buf, 0, *self.v, self.who)
        struct.pack_into("<I", buf, SIZE - 4, crc32(memoryview(buf)[:-4]) & 0xFFFFFFFF)
        try:
            f = self._f
            if f is None:
                raise OSError(5)  # EIO: the file could not be opened at boot
            f.seek(0)
            f.write(buf)
            f.flush()  # LittleFS commits here: the old contents or these, whatever the cut
        except OSError as exc:
            self.ok = False
            self.error = "write failed: %s" % exc
            print("safestate:", self.error)
            return False
        self.ok = True
        return True
