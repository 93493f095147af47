# Shopper phone numbers: keypad digits in the case's country -> E.164 for the SMS gateway.
#
# A compact hand-made numbering table, not libphonenumber: the case only has to accept mobile
# numbers (SMS) of the countries it is sold in, and a full metadata set would not fit the heap.
# Sources: the national regulators' numbering plans (Ofcom, ComReg, ARCEP, BNetzA, ACM, BIPT,
# CNMC, AGCOM, ANACOM, ACMA, NZ MBIE, IFT, ANATEL, DoT) and the NANP rules (NXX NXX XXXX).
#
# Error messages are short enough for one 16-char display line.

from lockcase.compat import const

MAX_DIGITS = const(15)  # E.164 caps a full number at 15 digits, so no national entry is longer

TOO_SHORT = "Too short"
TOO_LONG = "Too long"
NOT_MOBILE = "Not a mobile"
BAD = "Bad number"
COUNTRY = "Country?"

# One line per country, all in one string: as a dict of tuples the table cost ~5 KB of heap (a
# qstr or object per field); as one constant it costs its length, and a lookup slices one line.
# Fields: country, calling code, trunk prefix, display groups of the NSN, mobile rules, bad,
# not mobile; "-" is empty.
# rules: "prefixes:min-max" blocks separated by ";"; prefixes are comma-separated, "?" matches
# any digit, an empty prefix list means any number (no mobile range exists: NANP, MX).
# bad / not mobile: prefixes of the NSN that are structurally invalid (digit positions NANP
# reserves, a second trunk digit) or valid but unable to take an SMS (toll-free, premium).
# DE: 015x numbers have an 8-digit subscriber part, 016x/017x 7 or 8.
# ES: 70 is personal numbering, not mobile.
# IT: fixed numbers keep their 0 in the NSN, so there is no trunk prefix to strip.
# NZ: 02x is mobile except 024 (Scott Base), 025 (closed) and 026 (paging).
# MX: since 2019 every number is 10 digits, dialled with no prefix, mobile or not.
# BR: two-digit area code (no zero digit) + 9 + 8 digits; 90x is kept for collect calls.
_TABLE = const(
    "\nUS 1 1 3,3,4 :10 0,1,?11,???0,???1,????11 800,833,844,855,866,877,888,900"
    "\nCA 1 1 3,3,4 :10 0,1,?11,???0,???1,????11 800,833,844,855,866,877,888,900"
    "\nGB 44 0 4,6 71,72,73,74,75,77,78,79,7624:10 0 -"
    "\nIE 353 0 2,3,4 83,85,86,87,89:9 0 -"
    "\nFR 33 0 1,2,2,2,2 6,73,74,75,76,77,78,79:9 0 -"
    "\nDE 49 0 3,8 15:11;16,17:10-11 0 -"
    "\nNL 31 0 1,8 61,62,63,64,65,68:9 0 -"
    "\nBE 32 0 3,2,2,2 455,456,46,47,48,49:9 0 -"
    "\nES 34 - 3,3,3 6,71,72,73,74,75,76,77,78,79:9 - -"
    "\nIT 39 - 3,3,4 3:9-10 - -"
    "\nPT 351 - 3,3,3 91,92,93,96:9 - -"
    "\nAU 61 0 3,3,3 4:9 0 -"
    "\nNZ 64 0 2,3,4 20,21,22,27,28,29:8-10 0 -"
    "\nMX 52 - 3,3,4 :10 0,1 -"
    "\nBR 55 0 2,5,4 ??9:11 0,?0 ??90"
    "\nIN 91 0 5,5 6,7,8,9:10 0 -"
    "\n"
)


def _digits_only(s):
    # str.isdigit() accepts non-ASCII digits under CPython ("²", "٣"), which the SMS gateway
    # would not, and MicroPython disagrees with CPython on them.
    for ch in s:
        if ch < "0" or ch > "9":
            return False
    return True


def _match(pattern, nsn, full):
    # full: the whole prefix must be present; otherwise a shorter nsn that could still grow into
    # the prefix counts as matching (used while deciding "Not a mobile" vs "Too short").
    n = len(pattern)
    if len(nsn) < n:
        if full:
            return False
        n = len(nsn)
    for i in range(n):
        p = pattern[i]
        if p != "?" and p != nsn[i]:
            return False
    return True


def _any(prefixes, nsn):
    for p in prefixes.split(","):
        if p and _match(p, nsn, True):
            return True
    return False


def _rules(spec):
    out = []
    for block in spec.split(";"):
        pre, lens = block.split(":")
        if "-" in lens:
            lo, hi = lens.split("-")
        else:
            lo = hi = lens
        out.append((pre.split(",") if pre else [""], int(lo), int(hi)))
    return out


def _plan(country):
    """(cc, trunk, groups, rules, bad, not mobile) of an ISO alpha-2 country."""
    if isinstance(country, str) and len(country) == 2 and country.isalpha():
        i = _TABLE.find("\n" + country.upper() + " ")
        if i >= 0:
            line = _TABLE[i + 4 : _TABLE.find("\n", i + 1)]
            return ["" if f == "-" else f for f in line.split(" ")]
    raise ValueError(COUNTRY)


def _split(digits, trunk):
    if trunk and digits.startswith(trunk):
        return trunk, digits[len(trunk) :]
    return "", digits


def to_e164(digits, country):
    """National number as typed (with or without the trunk prefix) -> "+<cc><nsn>"."""
    cc, trunk, _, rules, bad, not_mobile = _plan(country)
    if not isinstance(digits, str) or not _digits_only(digits):
        raise ValueError(BAD)
    if len(digits) > MAX_DIGITS:
        raise ValueError(TOO_LONG)
    nsn = _split(digits, trunk)[1]
    if not nsn:
        raise ValueError(TOO_SHORT)
    if trunk and nsn.startswith(trunk):
        raise ValueError(BAD)
    if _any(bad, nsn):
        raise ValueError(BAD)
    if _any(not_mobile, nsn):
        raise ValueError(NOT_MOBILE)
    n = len(nsn)
    lo = hi = None
    for prefixes, rmin, rmax in _rules(rules):
        for p in prefixes:
            if not _match(p, nsn, False):
                continue
            if rmin <= n <= rmax and _match(p, nsn, True):
                return "+" + cc + nsn
            lo = rmin if lo is None else min(lo, rmin)
            hi = rmax if hi is None else max(hi, rmax)
    if lo is None or hi is None:
        raise ValueError(NOT_MOBILE)
    raise ValueError(TOO_LONG if n > hi else TOO_SHORT)


def group(digits, country):
    """Digits as typed, spaced the way the country writes numbers, for the entry display."""
    try:
        plan = _plan(country)
    except ValueError:
        return digits
    if not isinstance(digits, str) or not _digits_only(digits):
        return digits
    lead, nsn = _split(digits, plan[1])
    longest = 0
    for _, _, rmax in _rules(plan[3]):
        longest = max(longest, rmax)
    if len(nsn) > longest:
        return digits  # cannot be valid: raw digits fit the line and show what was typed
    parts = []
    widths = [int(w) for w in plan[2].split(",")]
    for i, w in enumerate(widths):
        if not nsn:
            break
        if i == len(widths) - 1:
            w = len(nsn)
        parts.append(nsn[:w])
        nsn = nsn[w:]
    if parts and lead and lead != "0":
        return lead + " " + " ".join(parts)  # NANP "1 555 123 4567"
    if parts:
        parts[0] = lead + parts[0]
        return " ".join(parts)
    return lead


def _number_digits(e164):
    if e164 is None:
        return ""
    s = e164 if isinstance(e164, str) else str(e164)
    return "".join(ch for ch in s if "0" <= ch <= "9")


def mask(e164):
    """Number for a screen or a log: every digit starred except the last two ("*********67")."""
    d = _number_digits(e164)
    if len(d) < 5:
        return "*" * len(d)  # so short that two digits would give most of it away
    return "*" * (len(d) - 2) + d[-2:]


def last2(e164):
    return _number_digits(e164)[-2:]
