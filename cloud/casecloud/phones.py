"""Keypad digits to E.164, using the store's country. Deliberately small: a keypad has no '+', so
an international number is typed with its exit code (00, or 011 in the NANP)."""

from __future__ import annotations

# ISO country -> (calling code, national number lengths). Extend as stores open elsewhere.
COUNTRIES: dict[str, tuple[str, tuple[int, ...]]] = {
    "US": ("1", (10,)),
    "CA": ("1", (10,)),
    "GB": ("44", (10,)),
    "IE": ("353", (7, 8, 9)),
    "FR": ("33", (9,)),
    "DE": ("49", (7, 8, 9, 10, 11)),
    "NL": ("31", (9,)),
    "BE": ("32", (8, 9)),
    "ES": ("34", (9,)),
    "IT": ("39", (9, 10)),
    "CH": ("41", (9,)),
    "AU": ("61", (9,)),
    "NZ": ("64", (8, 9, 10)),
}


def to_e164(typed: str, country: str) -> str | None:
    """'+<digits>' for a plausible number, else None."""
    digits = "".join(ch for ch in typed if ch.isdigit())
    if not digits or len(digits) != len(typed.replace(" ", "").replace("-", "").lstrip("+")):
        return None
    cc, lengths = COUNTRIES.get(country.upper(), ("", ()))
    if cc == "1" and digits.startswith("011"):
        full = digits[3:]
    elif digits.startswith("00"):
        full = digits[2:]
    elif typed.startswith("+"):
        full = digits
    elif not cc:
        return None
    else:
        national = digits
        if cc == "1" and len(national) == 11 and national.startswith("1"):
            national = national[1:]
        elif cc != "1" and national.startswith("0"):
            national = national[1:]  # the trunk prefix is not part of E.164
        if len(national) not in lengths:
            return None
        full = cc + national
    if not 8 <= len(full) <= 15 or full.startswith("0"):
        return None
    return "+" + full
