# PN532 host-interface frames (PN532 User Manual UM0701-02, section 6.2): normal and extended
# information frames, ACK, NACK and the application-level error frame. Pure functions over
# buffers the caller owns, so a poll allocates nothing, and every way a frame can be wrong ends in
# a FrameError: a reader that sends garbage must never reach the credential logic.
from lockcase.compat import const

_HOST = const(0xD4)  # TFI, host controller -> PN532
_CHIP = const(0xD5)  # TFI, PN532 -> host controller
_ERR_TFI = const(0x7F)  # the syntax error frame's "TFI"

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"

KIND_ACK = const(1)
KIND_NACK = const(2)
KIND_DATA = const(3)

# Big enough for the longest answer the reader asks for (a token APDU of 64 bytes plus SW, or a
# 16-byte page read, inside InDataExchange's frame); longer frames are refused, not truncated.
MAX_FRAME = const(96)
# Bytes a transport reads before it knows a frame's length: preamble, start code, LEN, LCS, and
# for an extended frame FF FF LENM LENL LCS. A leading status byte (I2C) or junk before the start
# code is allowed for, up to _SEARCH bytes.
HEADER = const(10)
_SEARCH = const(4)
# What one bus transaction costs the loop besides its bytes on the wire: the MicroPython call and
# its bookkeeping, roughly, on a 133-240 MHz microcontroller. With the bytes it models the bus
# time a driver held the loop for (hold_us), which the reader budgets its share of the loop with.
OP_US = const(100)


class NfcError(Exception):
    """Anything the reader did wrong or did not do: the service counts it, it never escapes."""


class FrameError(NfcError):
    """A frame that breaks the format: bad start code, LCS, DCS, TFI or response code."""


class ChipError(NfcError):
    """The PN532 understood the frame and answered with an error (code: its status byte, or
    0x7F for the syntax error frame). RF-level codes mean the card, not the reader, failed."""

    def __init__(self, code, what=""):
        super().__init__("%s error 0x%02x" % (what or "chip", code))
        self.code = code


class Timeout(NfcError):
    pass


class NoChip(NfcError):
    """No answer on the bus at all: missing, unpowered or wrongly strapped reader."""


class WrongChip(NfcError):
    pass


# Status codes (UM0701-02 table 7-1) that describe the RF exchange with a card: the card left the
# field or answered badly. The reader is fine when it reports these.
_RF_CODES = const((0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0B, 0x13, 0x14, 0x29, 0x2A, 0x2B))


def rf_error(code):
    return code in _RF_CODES


def encode(buf, cmd, params=None):
    """Write a normal information frame carrying TFI D4, cmd and params into buf; its length."""
    if params is None:
        params = b""
    n = len(params)
    ln = n + 2
    if ln > 255 or len(buf) < n + 9:
        raise ValueError("frame too long")
    buf[0] = 0x00
    buf[1] = 0x00
    buf[2] = 0xFF
    buf[3] = ln
    buf[4] = (-ln) & 0xFF
    buf[5] = _HOST
    buf[6] = cmd
    s = _HOST + cmd
    for i in range(n):
        b = params[i]
        buf[7 + i] = b
        s += b
    buf[7 + n] = (-s) & 0xFF
    buf[8 + n] = 0x00
    return n + 9


def header(buf, n):
    """Parse a frame header in buf[:n]: (kind, data_start, data_len, total), where data is TFI
    onwards and total is the frame's length in buf through the postamble."""
    i = -1
    last = n - 1 if n - 1 < _SEARCH + 2 else _SEARCH + 2
    for j in range(last):
        if buf[j] == 0x00 and buf[j + 1] == 0xFF:
            i = j + 2
            break
    if i < 0:
        raise FrameError("no start code")
    if n < i + 2:
        raise FrameError("short frame")
    a = buf[i]
    b = buf[i + 1]
    if a == 0x00 and b == 0xFF:
        return KIND_ACK, i + 2, 0, i + 3
    if a == 0xFF and b == 0x00:
        return KIND_NACK, i + 2, 0, i + 3
    if a == 0xFF and b == 0xFF:
        if n < i + 5:
            raise FrameError("short frame")
        m = buf[i + 2]
        lo = buf[i + 3]
        if (m + lo + buf[i + 4]) & 0xFF:
            raise FrameError("bad LCS")
        ln = (m << 8) | lo
        ds = i + 5
    else:
        if (a + b) & 0xFF:
            raise FrameError("bad LCS")
        ln = a
        ds = i + 2
    if ln == 0:
        raise FrameError("empty frame")
    return KIND_DATA, ds, ln, ds + ln + 2


def decode(buf, n, cmd):
    """Check a response to cmd in buf[:n]; (start, end) of its parameters (after D5, cmd+1).
    The error frame raises ChipError(0x7F); anything malformed raises FrameError."""
    kind, ds, ln, total = header(buf, n)
    if kind != KIND_DATA:
        raise FrameError("ACK/NACK where a response was due")
    if n < total - 1:  # the postamble is not checked: the checksums already were
        raise FrameError("truncated frame")
    s = 0
    for j in range(ds, ds + ln + 1):
        s += buf[j]
    if s & 0xFF:
        raise FrameError("bad DCS")
    tfi = buf[ds]
    if tfi == _ERR_TFI and ln == 1:
        raise ChipError(_ERR_TFI, "syntax")
    if tfi != _CHIP:
        raise FrameError("bad TFI")
    if ln < 2 or buf[ds + 1] != cmd + 1:
        raise FrameError("response to another command")
    return ds + 2, ds + ln


def is_ack(buf, n):
    try:
        return header(buf, n)[0] == KIND_ACK
    except FrameError:
        return False
