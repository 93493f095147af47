# lockcase.phone under MicroPython. tests/host/test_phone.py runs the same tables under CPython,
# so both interpreters are held to the same answers.
from lockcase import phone

# (typed digits, country, "+E164" or the error message)
E164 = [
    # NANP: 10 digits, or 11 with the leading 1
    ("2025550143", "US", "+12025550143"),
    ("12025550143", "US", "+12025550143"),
    ("4165550199", "CA", "+14165550199"),
    ("14165550199", "ca", "+14165550199"),
    ("202555014", "US", "Too short"),
    ("20255501430", "US", "Too long"),
    ("120255501431", "US", "Too long"),
    ("0205550143", "US", "Bad number"),
    ("1105550143", "US", "Bad number"),
    ("2115550143", "US", "Bad number"),
    ("2020550143", "US", "Bad number"),
    ("2021550143", "US", "Bad number"),
    ("2029110143", "US", "Bad number"),
    ("8005550143", "US", "Not a mobile"),
    ("18885550143", "US", "Not a mobile"),
    ("9005550143", "CA", "Not a mobile"),
    ("911", "US", "Bad number"),
    ("555", "US", "Too short"),
    # GB: 07 + 9 digits, 076 only for 07624
    ("07700900123", "GB", "+447700900123"),
    ("7700900123", "GB", "+447700900123"),
    ("07624123456", "GB", "+447624123456"),
    ("07612345678", "GB", "Not a mobile"),
    ("07012345678", "GB", "Not a mobile"),
    ("02079460000", "GB", "Not a mobile"),
    ("0770090012", "GB", "Too short"),
    ("077009001234", "GB", "Too long"),
    ("0077009001234", "GB", "Bad number"),
    ("447700900123", "GB", "Not a mobile"),
    # IE
    ("0871234567", "IE", "+353871234567"),
    ("831234567", "IE", "+353831234567"),
    ("0841234567", "IE", "Not a mobile"),
    ("012345678", "IE", "Not a mobile"),
    ("087123456", "IE", "Too short"),
    # FR
    ("0612345678", "FR", "+33612345678"),
    ("0751234567", "FR", "+33751234567"),
    ("0701234567", "FR", "Not a mobile"),
    ("0123456789", "FR", "Not a mobile"),
    ("061234567", "FR", "Too short"),
    ("06123456789", "FR", "Too long"),
    # DE: 015x 11 digits, 016x/017x 10 or 11
    ("015112345678", "DE", "+4915112345678"),
    ("01511234567", "DE", "Too short"),
    ("01701234567", "DE", "+491701234567"),
    ("017612345678", "DE", "+4917612345678"),
    ("1601234567", "DE", "+491601234567"),
    ("030123456", "DE", "Not a mobile"),
    ("0170123456", "DE", "Too short"),
    ("0170123456789", "DE", "Too long"),
    # NL
    ("0612345678", "NL", "+31612345678"),
    ("0681234567", "NL", "+31681234567"),
    ("0661234567", "NL", "Not a mobile"),
    ("0201234567", "NL", "Not a mobile"),
    # BE
    ("0470123456", "BE", "+32470123456"),
    ("0456123456", "BE", "+32456123456"),
    ("0450123456", "BE", "Not a mobile"),
    ("022268888", "BE", "Not a mobile"),
    ("047012345", "BE", "Too short"),
    # ES: no trunk prefix
    ("612345678", "ES", "+34612345678"),
    ("712345678", "ES", "+34712345678"),
    ("702345678", "ES", "Not a mobile"),
    ("912345678", "ES", "Not a mobile"),
    ("0612345678", "ES", "Not a mobile"),
    ("61234567", "ES", "Too short"),
    # IT: 3xx mobile, 9 or 10 digits; 0 belongs to fixed numbers
    ("3123456789", "IT", "+393123456789"),
    ("312345678", "IT", "+39312345678"),
    ("0612345678", "IT", "Not a mobile"),
    ("31234567", "IT", "Too short"),
    ("31234567890", "IT", "Too long"),
    # PT
    ("912345678", "PT", "+351912345678"),
    ("961234567", "PT", "+351961234567"),
    ("941234567", "PT", "Not a mobile"),
    ("212345678", "PT", "Not a mobile"),
    # AU
    ("0412345678", "AU", "+61412345678"),
    ("412345678", "AU", "+61412345678"),
    ("0212345678", "AU", "Not a mobile"),
    ("041234567", "AU", "Too short"),
    # NZ: 8 to 10 digits
    ("0211234567", "NZ", "+64211234567"),
    ("021123456", "NZ", "+6421123456"),
    ("02112345678", "NZ", "+642112345678"),
    ("0271234567", "NZ", "+64271234567"),
    ("0261234567", "NZ", "Not a mobile"),
    ("093456789", "NZ", "Not a mobile"),
    ("02112345", "NZ", "Too short"),
    # MX: 10 digits, no prefix
    ("5512345678", "MX", "+525512345678"),
    ("2221234567", "MX", "+522221234567"),
    ("0445512345678", "MX", "Bad number"),
    ("551234567", "MX", "Too short"),
    ("55123456789", "MX", "Too long"),
    # BR: DDD + 9 + 8 digits, trunk 0
    ("11912345678", "BR", "+5511912345678"),
    ("011912345678", "BR", "+5511912345678"),
    ("21987654321", "BR", "+5521987654321"),
    ("1123456789", "BR", "Not a mobile"),
    ("11902345678", "BR", "Not a mobile"),
    ("10912345678", "BR", "Bad number"),
    ("1191234567", "BR", "Too short"),
    # IN
    ("9876543210", "IN", "+919876543210"),
    ("09876543210", "IN", "+919876543210"),
    ("6123456789", "IN", "+916123456789"),
    ("1123456789", "IN", "Not a mobile"),
    ("987654321", "IN", "Too short"),
    # anything else
    ("", "US", "Too short"),
    ("0", "GB", "Too short"),
    ("1", "US", "Too short"),
    ("12a4", "US", "Bad number"),
    ("+12025550143", "US", "Bad number"),
    ("202 555 0143", "US", "Bad number"),
    # digits of other scripts: CPython's str.isdigit() says yes, the SMS gateway would not
    ("\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0664\u0663", "US", "Bad number"),
    ("\uff10\uff17\uff17\uff10\uff10\uff19\uff10\uff10\uff11\uff12\uff13", "GB", "Bad number"),
    ("202555014\u00b2", "US", "Bad number"),
    ("2025550143", "ZZ", "Country?"),
    ("2025550143", "", "Country?"),
    ("1234567890123456", "US", "Too long"),
]

GROUP = [
    ("5551234567", "US", "555 123 4567"),
    ("15551234567", "US", "1 555 123 4567"),
    ("5551", "US", "555 1"),
    ("1", "US", "1"),
    ("07700900123", "GB", "07700 900123"),
    ("7700900123", "GB", "7700 900123"),
    ("077009", "GB", "07700 9"),
    ("0", "GB", "0"),
    ("", "GB", ""),
    ("0612345678", "FR", "06 12 34 56 78"),
    ("015112345678", "DE", "0151 12345678"),
    ("0612345678", "NL", "06 12345678"),
    ("0470123456", "BE", "0470 12 34 56"),
    ("612345678", "ES", "612 345 678"),
    ("3123456789", "IT", "312 345 6789"),
    ("912345678", "PT", "912 345 678"),
    ("0412345678", "AU", "0412 345 678"),
    ("0211234567", "NZ", "021 123 4567"),
    ("5512345678", "MX", "551 234 5678"),
    ("011912345678", "BR", "011 91234 5678"),
    ("09876543210", "IN", "098765 43210"),
    ("0871234567", "IE", "087 123 4567"),
    ("123456789012345", "US", "123456789012345"),
    ("5551234567", "ZZ", "5551234567"),
]

MASK = [
    ("+12025550167", "*********67", "67"),
    ("+447700900123", "**********23", "23"),
    ("+5511912345678", "***********78", "78"),
    ("", "", ""),
    (None, "", ""),
    ("+123", "***", "23"),
]


def _outcome(digits, country):
    try:
        return phone.to_e164(digits, country)
    except ValueError as e:
        return e.args[0]


def test_to_e164_table():
    bad = []
    for digits, country, want in E164:
        got = _outcome(digits, country)
        if got != want:
            bad.append((digits, country, want, got))
    assert not bad, bad


def test_errors_fit_one_display_line():
    for _, _, want in E164:
        if not want.startswith("+"):
            assert len(want) <= 16, want


def test_group_table():
    bad = []
    for digits, country, want in GROUP:
        got = phone.group(digits, country)
        if got != want:
            bad.append((digits, country, want, got))
    assert not bad, bad


def test_group_keeps_every_digit():
    for digits, country, _ in E164:
        if all("0" <= ch <= "9" for ch in digits):
            assert phone.group(digits, country).replace(" ", "") == digits


def test_mask_and_last2():
    for e164, masked, two in MASK:
        assert phone.mask(e164) == masked, (e164, phone.mask(e164))
        assert phone.last2(e164) == two


def test_mask_is_ascii_and_hides_all_but_two():
    for _, _, want in E164:
        if want.startswith("+"):
            m = phone.mask(want)
            assert len(m) <= 16
            assert all(ord(ch) < 128 for ch in m)
            assert sum(1 for ch in m if "0" <= ch <= "9") == 2
            assert m.endswith(want[-2:])


def test_max_digits():
    assert phone.MAX_DIGITS == 15


def test_non_string_input_is_value_error():
    for junk in (None, 12025550143, b"2025550143", ["2"]):
        try:
            phone.to_e164(junk, "US")
        except ValueError:
            continue
        raise AssertionError(f"accepted {junk!r}")
    try:
        phone.to_e164("2025550143", None)
    except ValueError as e:
        assert e.args[0] == "Country?"
    else:
        raise AssertionError("accepted country None")
