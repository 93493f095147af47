# Safety and brute-force state that must outlive a reset, a watchdog reset or a power cut: the
# coil's duty budget, the failed-entry counters and lockouts, and the tamper latch. RAM does not
# survive any of those, so without this file an attacker who resets the case between tries gets
# a fresh duty budget and a fresh failure count every time (docs/safety.md has the argument).
#
# Why it is shaped like this:
# - One 36-byte file: eight 32-bit values and their CRC, rewritten in place and synced. LittleFS
#   (every board's filesystem) commits a file's new contents only at sync, so a cut leaves the old
#   or the new contents; on a filesystem without that guarantee a torn write fails the CRC and
#   reads as the worst case below, which is safe.
# - The file stays open from boot on and a write reuses one buffer: opening a file allocates a
#   few hundred contiguous bytes, which a chip's fragmented heap may not have at the moment a
#   grant must be recorded (measured: 8 KiB free in pieces, no 252 bytes in one, docs/memory.md).
# - Binary, not JSON: no parser.
# - Written only when a value changes, and always *before* the action it guards (the coil is
#   energized after its duty record is on flash; "Wrong PIN" shows after the failure is counted),
#   so a cut at any instant leaves the flash at least as pessimistic as the truth.
# - A file that is there but does not check out is corrupt: every value then takes its worst
#   case (full duty budget used, one failure short of a lockout, tamper latched), and the app
#   reports a fault, because bit rot must never hand out a fresh budget.
import struct
from binascii import crc32

FILE = "safety.bin"
_FMT = "<8I"

# Slots. U: energized ms that may still lie within the duty window (worst case, see Lock).
# SF/SL/SS: consecutive wrong staff PINs, staff lockout level, its length in s.
# PF/PL/PS: the same for shoppers' wrong texted codes. TP: tamper latched (1) until cleared.
U, SF, SL, SS, PF, PL, PS, TP = 0, 1, 2, 3, 4, 5, 6, 7


class SafeState:
    def __init__(self, path=FILE, worst=None):
        # worst: ((slot, value), ...) to assume when the file is corrupt (see the module comment).
        self.path = path
        self.v = [0] * 8
        self.corrupt = False
        self.failed = 0  # writes the flash refused
        self._buf = bytearray(36)
        self._f = None
        try:
            self._f = f = open(path, "r+b")
            raw = f.read(40)
        except OSError:
            raw = b""  # no file yet: a case that never granted nor failed
        if len(raw) == 36 and crc32(raw[:32]) & 0xFFFFFFFF == struct.unpack_from("<I", raw, 32)[0]:
            self.v = list(struct.unpack_from(_FMT, raw))
        elif raw:
            self.corrupt = True
            for slot, value in worst or ():
                self.v[slot] = value
        if self._f is None:
            try:
                self._f = open(path, "w+b")
            except OSError as exc:
                self.failed += 1
                print("safestate: cannot open", exc)

    def get(self, slot):
        return self.v[slot]

    def set(self, slot, value, slot2=-1, value2=0, slot3=-1, value3=0):
        """Set up to three slots and write them in one go if any changed. Returns False when the
        flash refused (full or failing): callers go on, safe in RAM, and the app reports it."""
        v = self.v
        if v[slot] == value and (slot2 < 0 or v[slot2] == value2) and (slot3 < 0 or v[slot3] == value3):
            return True
        v[slot] = value
        if slot2 >= 0:
            v[slot2] = value2
        if slot3 >= 0:
            v[slot3] = value3
        buf = self._buf
        struct.pack_into(_FMT, buf, 0, *v)
        struct.pack_into("<I", buf, 32, crc32(memoryview(buf)[:32]) & 0xFFFFFFFF)
        try:
            f = self._f
            if f is None:
                raise OSError(5)  # EIO: the file could not be opened at boot
            f.seek(0)
            f.write(buf)
            f.flush()  # LittleFS commits here: the old contents or these, whatever the cut
        except OSError as exc:
            self.failed += 1
            print("safestate: write failed", exc)
            return False
        return True
