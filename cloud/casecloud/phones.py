"""Keypad digits to E.164, using the store's country, for numbers a text can reach.

Numbering plans come from `phonenumbers` (Google's libphonenumber metadata), not a table of our
own: a hand-written table let any '+' number of 8-15 digits through, which invites SMS pumping
(texts to premium or unassigned ranges that the attacker is paid for).

A keypad has no '+', so an international number is typed with its exit code: 00, or 011 in the
NANP. The case itself sends '+<cc><national number>' (firmware/lockcase/phone.py), the admin API
may send either form, with spaces or dashes.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

# Every country the firmware's keypad accepts numbers of (firmware/lockcase/phone.py _TABLE).
# tests/cloud/test_phones.py checks a mobile of each goes through.
FIRMWARE_COUNTRIES = ("US", "CA", "GB", "IE", "FR", "DE", "NL", "BE", "ES", "IT", "PT", "AU", "NZ", "MX", "BR", "IN")

# Only types that take a text. Where a region cannot tell mobile from fixed (the NANP, MX) the
# library says FIXED_LINE_OR_MOBILE and we must let it through; everything else is refused:
# fixed lines where the region tells them apart, premium rate, shared cost, toll free, personal
# numbers (GB 070: forwarded and premium-priced), pagers, UAN, voicemail, VoIP (many ranges take
# no text), and unknown.
TEXTABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})

# No real number, even with an exit code and separators, is longer; this bounds the parser's work.
_MAX_TYPED = 32


def _international(digits: str, country: str) -> str | None:
    """The number after the keypad's exit code, or None if typed in national form."""
    nanp = phonenumbers.country_code_for_region(country) == 1
    if nanp and digits.startswith("011"):
        return digits[3:]
    if digits.startswith("00"):
        return digits[2:]
    return None


def parse(typed: str, country: str) -> phonenumbers.PhoneNumber | None:
    """The number typed on a keypad (or sent as +E.164), or None if it is not a number at all."""
    if not isinstance(typed, str) or len(typed) > _MAX_TYPED:
        return None
    compact = typed.replace(" ", "").replace("-", "")
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    # str.isdigit() takes other scripts' digits ('٣'), which no gateway does.
    if not digits or not all("0" <= ch <= "9" for ch in digits):
        return None
    region = country.upper() if isinstance(country, str) else ""
    rest = None if plus else _international(digits, region)
    try:
        if plus or rest is not None:
            return phonenumbers.parse("+" + (digits if plus else rest or ""), None)
        if region not in phonenumbers.SUPPORTED_REGIONS:
            return None
        return phonenumbers.parse(digits, region)
    except NumberParseException:
        return None


def to_e164(typed: str, country: str) -> str | None:
    """'+<digits>' for a valid number that can take a text, else None."""
    num = parse(typed, country)
    if num is None or not phonenumbers.is_valid_number(num):
        return None
    if phonenumbers.number_type(num) not in TEXTABLE:
        return None
    return phonenumbers.format_number(num, PhoneNumberFormat.E164)
