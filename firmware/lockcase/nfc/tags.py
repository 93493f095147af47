# What a tap carries, whatever the reader chip: the store app's token over host card emulation,
# a token in an NDEF Text record on an NTAG, or else the card's UID. The APDUs and the record
# format are specified in docs/protocol.md ("NFC credentials"). A UID is a weak identifier (it
# can be cloned): the app checks staff badges against hashes and sends everything else to the
# cloud, which decides.
from binascii import hexlify

from lockcase.compat import const
from lockcase.nfc.frame import FrameError

# Proprietary AID (category F): F0 "LOCKCASE" 01.
_AID = const(b"\xf0LOCKCASE\x01")
SELECT = b"\x00\xa4\x04\x00" + bytes((len(_AID),)) + _AID + b"\x00"
_GET_TOKEN = const(b"\x80\x10\x00\x00")
_SW_OK = const(0x9000)
_SW_NOT_READY = const(0x6985)  # the app is there but has no token to give (signed out, locked)

_TOKEN_MAX = const(64)
_PREFIX = const(b"lockcase:")
_NTAG_READ = const(0x30)
_CC_PAGE = const(3)
NDEF_MAX = const(96)  # bytes of the tag's data area read at most

# Outcomes that open nothing; the app shows them so the shopper knows to try again.
NO_APP = "no_app"  # a phone without the store app (random UID, our AID not selected)
APP_NOT_READY = "app_not_ready"
UNREADABLE = "unreadable"


def get_token_apdu(case_id):
    """GET TOKEN with the case id as data, so the app can ask for a token bound to this case."""
    cid = case_id.encode()[:32] if case_id else b""
    return _GET_TOKEN + bytes((len(cid),)) + cid + b"\x00"


def sw(r):
    n = len(r)
    return (r[n - 2] << 8) | r[n - 1] if n >= 2 else -1


def token(b):
    """A token as text, if b is one: 1..64 bytes of A-Z a-z 0-9 and - _ . ~ :"""
    n = len(b)
    if not 0 < n <= _TOKEN_MAX:
        return None
    for c in b:
        if not (48 <= c <= 58 or 65 <= c <= 90 or 97 <= c <= 122 or c in (45, 95, 46, 126)):
            return None
    return bytes(b).decode()


def random_uid(uid):
    # ISO/IEC 14443-3: a single-size UID starting 0x08 is random, new at every activation (phones).
    return len(uid) == 4 and uid[0] == 0x08


def find_ndef(buf, n):
    """Locate the NDEF Message TLV in a Type 2 tag's data area buf[:n]: (start, length), None
    when there is none, or -1 when more bytes must be read to tell."""
    i = 0
    while i < n:
        t = buf[i]
        if t == 0x00:  # NULL TLV
            i += 1
            continue
        if t == 0xFE:  # Terminator
            return None
        if i + 1 >= n:
            return -1
        ln = buf[i + 1]
        hl = 2
        if ln == 0xFF:
            if i + 3 >= n:
                return -1
            ln = (buf[i + 2] << 8) | buf[i + 3]
            hl = 4
        if t == 0x03:
            return i + hl, ln
        i += hl + ln  # Lock Control, Memory Control or proprietary TLVs: skipped
    return -1


def text_token(buf, start, length):
    """The token of the first Text record whose text is "lockcase:<token>", else None."""
    p = start
    end = start + length
    while p + 3 <= end:
        h = buf[p]
        tnf = h & 0x07
        tl = buf[p + 1]
        if h & 0x10:  # SR: one-byte payload length
            pl = buf[p + 2]
            q = p + 3
        else:
            if p + 6 > end:
                return None
            pl = (buf[p + 2] << 24) | (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            q = p + 6
        il = 0
        if h & 0x08:  # IL: an ID length byte follows
            if q >= end:
                return None
            il = buf[q]
            q += 1
        payload = q + tl + il
        nxt = payload + pl
        if nxt > end:
            return None
        if tnf == 0x01 and tl == 1 and buf[q] == 0x54 and not h & 0x20 and pl >= 1:
            st = buf[payload]
            if not st & 0x80:  # UTF-8; a UTF-16 text is not ours
                t0 = payload + 1 + (st & 0x3F)
                if t0 + len(_PREFIX) <= nxt and bytes(buf[t0 : t0 + len(_PREFIX)]) == _PREFIX:
                    tok = token(memoryview(buf)[t0 + len(_PREFIX) : nxt])
                    if tok is not None:
                        return tok
        if h & 0x40:  # ME: last record
            return None
        p = nxt
    return None


async def read_ndef_token(chip, buf):
    """Read a Type 2 tag (NTAG21x, Ultralight) with READ 0x30: its NDEF token, or None."""
    r = await chip.exchange(bytes((_NTAG_READ, _CC_PAGE)))
    if len(r) < 16 or r[0] != 0xE1:  # Capability Container magic: no NDEF on this tag
        return None
    size = r[2] * 8
    limit = size if size < len(buf) else len(buf)
    buf[0:12] = r[4:16]
    have = 12
    page = _CC_PAGE + 4
    while True:
        found = find_ndef(buf, have)
        if found is None:
            return None
        if found != -1:
            start, ln = found
            if start + ln <= have:
                return text_token(buf, start, ln)
        if have >= limit:
            return None
        r = await chip.exchange(bytes((_NTAG_READ, page)))
        if len(r) < 16:
            raise FrameError("short page read")
        take = limit - have if limit - have < 16 else 16
        buf[have : have + take] = r[:take]
        have += take
        page += 4


async def read(chip, target, case_id, buf):
    """The credential on the card in the field: (src, value) with src "app", "card" or "nfc",
    or (None, reason). Raises ChipError when the card leaves mid-read. A card that speaks
    ISO-DEP but does not know our AID (a DESFire badge) is known by its UID."""
    if target.sak & 0x20:  # ISO-DEP: a phone with the store app answers on our AID
        s = sw(await chip.exchange(SELECT))
        if s == _SW_OK:
            r = await chip.exchange(get_token_apdu(case_id))
            s = sw(r)
            if s == _SW_OK:
                tok = token(r[: len(r) - 2])
                return ("app", tok) if tok is not None else (None, UNREADABLE)
            return None, APP_NOT_READY if s == _SW_NOT_READY else UNREADABLE
        if random_uid(target.uid):
            return None, NO_APP
    elif target.sak & 0x7F == 0x00 and target.atqa == 0x0044:  # Type 2: NTAG21x, Ultralight
        tok = await read_ndef_token(chip, buf)
        if tok is not None:
            return "card", tok
    if random_uid(target.uid):
        return None, UNREADABLE
    return "nfc", hexlify(target.uid).decode()
