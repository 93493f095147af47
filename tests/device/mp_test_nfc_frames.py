# PN532 frames, target lists, APDUs and NDEF records under MicroPython: the byte strings are the
# datasheet's (PN532 User Manual UM0701-02, NTAG213 data sheet, NFC Forum Text RTD), not ones
# produced by the code under test.
import random

from mpassert import raises as _raises

from lockcase.nfc import frame as F
from lockcase.nfc import tags
from lockcase.nfc.pn532 import parse_target


def _h(s):
    return bytes.fromhex(s.replace(" ", ""))


def _enc(cmd, params=b""):
    b = bytearray(64)
    n = F.encode(b, cmd, params)
    return bytes(b[:n])


# -- encoding ---------------------------------------------------------------------------------
def test_encode_datasheet_commands():
    assert _enc(0x02) == _h("00 00 FF 02 FE D4 02 2A 00")  # GetFirmwareVersion
    assert _enc(0x14, b"\x01\x14\x01") == _h("00 00 FF 05 FB D4 14 01 14 01 02 00")  # SAMConfiguration
    assert _enc(0x4A, b"\x01\x00") == _h("00 00 FF 04 FC D4 4A 01 00 E1 00")  # InListPassiveTarget
    assert _enc(0x32, b"\x01\x00") == _h("00 00 FF 04 FC D4 32 01 00 F9 00")  # RF field off
    assert _enc(0x40, b"\x01\x30\x04") == _h("00 00 FF 05 FB D4 40 01 30 04 B7 00")  # READ block 4


def test_encode_refuses_oversize():
    _raises(ValueError, F.encode, bytearray(300), 0x40, bytes(254))
    _raises(ValueError, F.encode, bytearray(8), 0x02, b"")


# -- decoding ---------------------------------------------------------------------------------
def test_decode_firmware_version():
    b = _h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")
    s, e = F.decode(b, len(b), 0x02)
    assert bytes(b[s:e]) == b"\x32\x01\x06\x07"


def test_decode_tolerates_leading_bytes():
    # An I2C read starts with the status byte; some chips send a longer preamble.
    for pre in (b"\x01", b"\x00\x00", b"\x01\x00"):
        b = pre + _h("00 00 FF 03 FD D5 41 00 EA 00")
        s, e = F.decode(b, len(b), 0x40)
        assert bytes(b[s:e]) == b"\x00"
    b = _h("00 FF 03 FD D5 41 00 EA 00")  # no preamble at all
    assert F.decode(b, len(b), 0x40) == (6, 7)


def test_ack_nack_error_frames():
    ack = _h("00 00 FF 00 FF 00")
    assert F.header(ack, 6)[0] == F.KIND_ACK and F.is_ack(ack, 6)
    nack = _h("00 00 FF FF 00 00")
    assert F.header(nack, 6)[0] == F.KIND_NACK and not F.is_ack(nack, 6)
    err = _h("00 00 FF 01 FF 7F 81 00")  # the syntax error frame
    e = _raises(F.ChipError, F.decode, err, len(err), 0x14)
    assert e.code == 0x7F
    assert not F.is_ack(err, len(err))
    _raises(F.FrameError, F.decode, ack, 6, 0x02)  # an ACK where the response was due


def test_checksum_and_format_errors():
    good = _h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00")
    bad_lcs = bytearray(good)
    bad_lcs[4] = 0xFB
    assert "LCS" in str(_raises(F.FrameError, F.decode, bad_lcs, len(good), 0x02))
    bad_dcs = bytearray(good)
    bad_dcs[11] ^= 1
    assert "DCS" in str(_raises(F.FrameError, F.decode, bad_dcs, len(good), 0x02))
    bad_data = bytearray(good)
    bad_data[7] ^= 1  # a flipped data bit: the DCS no longer adds up
    _raises(F.FrameError, F.decode, bad_data, len(good), 0x02)
    # Right checksums, wrong conversation: TFI D4 (an echo) or the answer to another command.
    echo = _h("00 00 FF 02 FE D4 02 2A 00")
    assert "TFI" in str(_raises(F.FrameError, F.decode, echo, len(echo), 0x02))
    assert "another" in str(_raises(F.FrameError, F.decode, good, len(good), 0x4A))
    _raises(F.FrameError, F.decode, good, 8, 0x02)  # truncated
    _raises(F.FrameError, F.decode, bytes(12), 12, 0x02)  # no start code
    _raises(F.FrameError, F.decode, _h("00 00 FF 00 00 00"), 6, 0x02)  # LEN 0


def test_extended_frame_header():
    # 00 00 FF FF FF LENM LENL LCS: a 300-byte frame is recognised, and sized, not misread.
    b = bytearray(_h("00 00 FF FF FF 01 2C D3 D5 41 00"))
    kind, ds, ln, total = F.header(b, len(b))
    assert (kind, ds, ln, total) == (F.KIND_DATA, 8, 300, 310)
    b[7] ^= 1
    _raises(F.FrameError, F.header, b, len(b))


def test_fuzzed_garbage_only_raises_frame_errors():
    # Whatever arrives, the codec answers with a FrameError/ChipError or a range inside the
    # buffer, never an IndexError or a crash.
    random.seed(7)
    seeds = [_h("00 00 FF 06 FA D5 03 32 01 06 07 E8 00"), _h("00 00 FF 01 FF 7F 81 00"),
             _h("00 00 FF 00 FF 00")]
    for i in range(3000):
        if i % 3 == 0:
            b = bytearray(_rb(1 + i % 40))
        else:  # mutate a good frame: the nastier garbage is almost right
            b = bytearray(seeds[i % len(seeds)])
            for _ in range(1 + i % 3):
                b[_pick(len(b))] = _rb(1)[0]
            b = b[: _pick(len(b) + 1)]
        try:
            s, e = F.decode(b, len(b), 0x02)
            assert 0 <= s <= e <= len(b)
        except (F.FrameError, F.ChipError):
            pass


def _rb(n):
    return bytes(random.getrandbits(8) for _ in range(n))


def _pick(n):
    return random.getrandbits(16) % n if n else 0


# -- InListPassiveTarget ----------------------------------------------------------------------
def test_target_none():
    assert parse_target(b"\x00") is None
    _raises(F.FrameError, parse_target, b"")


def test_target_classic_4_byte():
    t = parse_target(_h("01 01 00 04 08 04 A1 B2 C3 D4"))  # datasheet layout, MIFARE 1K
    assert (t.atqa, t.sak, t.uid, t.ats) == (0x0004, 0x08, _h("A1 B2 C3 D4"), b"")


def test_target_7_and_10_byte_and_ats():
    t = parse_target(_h("01 01 00 44 00 07 04 A1 B2 C3 D4 E5 F6"))  # NTAG213
    assert (t.atqa, t.sak, len(t.uid)) == (0x0044, 0x00, 7)
    t = parse_target(_h("01 01 03 44 20 0A 01 02 03 04 05 06 07 08 09 0A 05 78 80 70 02"))
    assert len(t.uid) == 10 and t.sak == 0x20 and t.ats == _h("05 78 80 70 02")


def test_target_bad_lengths():
    _raises(F.FrameError, parse_target, _h("01 01 00 04 08 05 A1 B2 C3 D4 E5"))  # 5-byte UID
    _raises(F.FrameError, parse_target, _h("01 01 00 04 08 07 A1 B2 C3"))  # cut short
    _raises(F.FrameError, parse_target, _h("01 01 00 04 20 04 08 01 02 03 09 78"))  # ATS too long


# -- APDUs (ISO/IEC 7816-4) -------------------------------------------------------------------
def test_select_by_aid():
    assert tags.SELECT == _h("00 A4 04 00 0A F0 4C 4F 43 4B 43 41 53 45 01 00")


def test_get_token_apdu_and_status_words():
    assert tags.get_token_apdu("c1") == _h("80 10 00 00 02 63 31 00")
    assert tags.get_token_apdu("") == _h("80 10 00 00 00 00")
    assert tags.sw(_h("90 00")) == 0x9000
    assert tags.sw(b"tok" + _h("69 85")) == 0x6985
    assert tags.sw(b"\x90") == -1


def test_token_charset():
    assert tags.token(b"lt_AbC-9.~:x") == "lt_AbC-9.~:x"
    for bad in (b"", b"a b", b"x" * 65, b"caf\xc3\xa9", b"a/b", b"a\x00"):
        assert tags.token(bad) is None, bad
    assert tags.token(b"x" * 64) == "x" * 64


def test_random_uid():
    assert tags.random_uid(_h("08 12 34 56"))
    assert not tags.random_uid(_h("04 12 34 56"))
    assert not tags.random_uid(_h("08 12 34 56 78 9A BC"))


# -- NDEF on a Type 2 tag ---------------------------------------------------------------------
def _record(text, lang=b"en", flags=0xD1):
    body = bytes((len(lang),)) + lang + text
    return bytes((flags, 1, len(body))) + b"T" + body


def test_ndef_text_record_forum_example():
    # NFC Forum Text RTD: D1 01 07 54 02 65 6E "ABCD". Not ours (no prefix): no token.
    area = _h("03 0B D1 01 07 54 02 65 6E 41 42 43 44 FE")
    assert tags.find_ndef(area, len(area)) == (2, 11)
    assert tags.text_token(area, 2, 11) is None


def test_ndef_token_after_lock_control_tlv():
    rec = _record(b"lockcase:tok-123")
    area = _h("01 03 A0 0C 34") + bytes((0x03, len(rec))) + rec + b"\xfe"  # as an NTAG213 ships
    start, ln = tags.find_ndef(area, len(area))
    assert (start, ln) == (7, len(rec))
    assert tags.text_token(area, start, ln) == "tok-123"


def test_ndef_long_length_and_second_record():
    first = _record(b"hello", flags=0x91)  # MB, SR, not ME: a record that is not ours
    second = _record(b"lockcase:abc", flags=0x51)  # ME, SR
    msg = first + second
    area = b"\x00\x00\x03\xff" + bytes((0, len(msg))) + msg + b"\xfe"  # NULL TLVs, 3-byte length
    start, ln = tags.find_ndef(area, len(area))
    assert (start, ln) == (6, len(msg))
    assert tags.text_token(area, start, ln) == "abc"


def test_ndef_refusals():
    assert tags.find_ndef(b"\xfe\x03\x01\x00", 4) is None  # terminator first
    assert tags.find_ndef(b"\x01\x03\xa0", 3) == -1  # need more bytes
    rec = _record(b"othershop:member-4711")  # a token, but not for us
    assert tags.text_token(rec, 0, len(rec)) is None
    rec = _record(b"lockcase:bad token")  # a space: not a token
    assert tags.text_token(rec, 0, len(rec)) is None
    rec16 = bytearray(_record(b"lockcase:abc"))
    rec16[4] |= 0x80  # UTF-16 text
    assert tags.text_token(rec16, 0, len(rec16)) is None
    rec = _record(b"lockcase:abc")
    assert tags.text_token(rec, 0, len(rec) - 1) is None  # payload runs past the message
    long = bytes((0xC1, 1, 0, 0, 0, 18)) + b"T" + b"\x02en" + b"lockcase:abcdef"  # 4-byte length
    assert tags.text_token(long, 0, len(long)) == "abcdef"


def test_ndef_fuzz_never_crashes():
    import os

    rec = _record(b"lockcase:abc")
    base = b"\x03" + bytes((len(rec),)) + rec + b"\xfe"
    for i in range(2000):
        b = bytearray(base)
        for _ in range(1 + i % 4):
            b[os.urandom(1)[0] % len(b)] = os.urandom(1)[0]
        found = tags.find_ndef(b, len(b))
        if found not in (None, -1):
            start, ln = found
            tok = tags.text_token(b, start, ln if start + ln <= len(b) else len(b) - start)
            assert tok is None or tags.token(tok.encode()) == tok


# -- config.json "nfc" ------------------------------------------------------------------------
def test_config_nfc_schema():
    from lockcase import config

    assert "nfc" not in config.validate({})
    assert "nfc" not in config.validate({"nfc": "none"})
    cfg = config.validate({"nfc": {}})
    assert cfg["nfc"] == {"driver": "pn532", "bus": "i2c", "addr": 0x24, "irq": True, "poll_ms": 100}
    cfg = config.validate({"nfc": {"driver": "mfrc522", "bus": "spi", "irq": False, "poll_ms": 250}})
    assert cfg["nfc"]["driver"] == "mfrc522" and cfg["nfc"]["poll_ms"] == 250
    for bad, word in (("yes", "nfc"), ({"driver": "acr122"}, "nfc.driver"), ({"bus": "usb"}, "nfc.bus"),
                      ({"driver": "mfrc522", "bus": "i2c"}, "spi"), ({"addr": 200}, "nfc.addr"),
                      ({"addr": True}, "nfc.addr"), ({"irq": 1}, "nfc.irq"), ({"poll_ms": 5}, "nfc.poll_ms"),
                      ({"poll_ms": 100.0}, "nfc.poll_ms"), ({"speed": 1}, "nfc.speed")):
        try:
            config.validate({"nfc": bad})
        except config.ConfigError as e:
            assert word in str(e), (bad, str(e))
        else:
            raise AssertionError("accepted %r" % (bad,))
