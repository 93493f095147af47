"""lockcase.phone under CPython: properties over generated numbers, and the device tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockcase import phone
from tests.device import mp_test_phone as shared

MESSAGES = {"Too short", "Too long", "Not a mobile", "Bad number", "Country?"}

# Written from the numbering plans independently of phone._TABLE, so a slip in the firmware
# table shows up here: country -> (cc, trunk, [(mobile prefixes, NSN lengths)]).
SPEC = {
    "GB": ("44", "0", [(("71", "72", "73", "74", "75", "77", "78", "79", "7624"), (10,))]),
    "IE": ("353", "0", [(("83", "85", "86", "87", "89"), (9,))]),
    "FR": ("33", "0", [(("6", "73", "74", "75", "76", "77", "78", "79"), (9,))]),
    "DE": (
        "49",
        "0",
        [
            (("150", "151", "152", "155", "157", "159"), (11,)),
            (("160", "162", "170", "176", "179"), (10, 11)),
        ],
    ),
    "NL": ("31", "0", [(("61", "62", "63", "64", "65", "68"), (9,))]),
    "BE": ("32", "0", [(("455", "456", "460", "468", "47", "48", "49"), (9,))]),
    "ES": ("34", "", [(("6", "71", "72", "73", "74"), (9,))]),
    "IT": ("39", "", [(("31", "32", "33", "34", "35", "36", "37", "38", "39"), (9, 10))]),
    "PT": ("351", "", [(("91", "92", "93", "96"), (9,))]),
    "AU": ("61", "0", [(("4",), (9,))]),
    "NZ": ("64", "0", [(("20", "21", "22", "27", "28", "29"), (8, 9, 10))]),
    "MX": ("52", "", [(("55", "33", "81", "222", "998", "664"), (10,))]),
    "IN": ("91", "0", [(("6", "7", "8", "9"), (10,))]),
}
COUNTRIES = sorted(set(SPEC) | {"US", "CA", "BR"})
digits = st.text(alphabet="0123456789", min_size=0, max_size=12)


@st.composite
def nanp(draw):
    n = st.sampled_from("23456789")
    d = st.sampled_from("0123456789")
    area = draw(n) + draw(d) + draw(d)
    exch = draw(n) + draw(d) + draw(d)
    toll = {"800", "833", "844", "855", "866", "877", "888", "900"}
    if area[1:] == "11" or exch[1:] == "11" or area in toll:
        area, exch = "202", "555"
    return (
        draw(st.sampled_from(["US", "CA"])),
        "1",
        "1",
        area + exch + draw(st.text("0123456789", min_size=4, max_size=4)),
    )


@st.composite
def brazil(draw):
    ddd = draw(st.text("123456789", min_size=2, max_size=2))
    return (
        "BR",
        "55",
        "0",
        ddd
        + "9"
        + draw(st.sampled_from("123456789"))
        + draw(st.text("0123456789", min_size=7, max_size=7)),
    )


@st.composite
def other(draw):
    country = draw(st.sampled_from(sorted(SPEC)))
    cc, trunk, rules = SPEC[country]
    prefixes, lengths = draw(st.sampled_from(rules))
    pre = draw(st.sampled_from(prefixes))
    n = draw(st.sampled_from(lengths))
    return (
        country,
        cc,
        trunk,
        pre + draw(st.text("0123456789", min_size=n - len(pre), max_size=n - len(pre))),
    )


valid = st.one_of(nanp(), brazil(), other())


@given(valid)
def test_valid_numbers_round_trip(case):
    country, cc, trunk, nsn = case
    want = "+" + cc + nsn
    assert phone.to_e164(nsn, country) == want
    if trunk:
        assert phone.to_e164(trunk + nsn, country) == want
    assert len(want) <= 16  # "+" and at most 15 digits
    # what the shopper sees while typing keeps every digit and fits the 16-char line
    for typed in (nsn, trunk + nsn):
        shown = phone.group(typed, country)
        assert shown.replace(" ", "") == typed
        assert len(shown) <= 16
        # and each prefix of it, as it looks key by key
        for i in range(len(typed)):
            assert phone.group(typed[:i], country).replace(" ", "") == typed[:i]


@given(valid)
def test_valid_numbers_plus_a_digit_are_too_long_and_cut_ones_too_short(case):
    country, _, trunk, nsn = case
    variable = {"NZ": (8, 10), "IT": (9, 10), "DE": (11, 11) if nsn[:2] == "15" else (10, 11)}
    shortest, longest = variable.get(country, (len(nsn), len(nsn)))
    with pytest.raises(ValueError, match="^Too long$"):
        phone.to_e164(trunk + nsn + "5" * (longest + 1 - len(nsn)), country)
    with pytest.raises(ValueError, match="^Too short$"):
        phone.to_e164(trunk + nsn[: shortest - 1], country)


@given(valid)
def test_mask_of_valid_number(case):
    country, _, _, nsn = case
    e164 = phone.to_e164(nsn, country)
    m = phone.mask(e164)
    assert m == "*" * (len(e164) - 3) + e164[-2:]
    assert phone.last2(e164) == e164[-2:]
    assert m.isascii() and len(m) <= 16


@given(st.sampled_from(COUNTRIES + ["ZZ", "", "usa", "U"]), st.one_of(digits, st.text(max_size=20)))
def test_any_input_gives_e164_or_a_short_message(country, typed):
    try:
        out = phone.to_e164(typed, country)
    except ValueError as e:
        assert e.args[0] in MESSAGES
        assert len(e.args[0]) <= 16
        return
    assert out.startswith("+") and out[1:].isdigit() and out[1:].isascii()
    assert 9 <= len(out) <= 16
    assert typed.isascii() and typed.isdigit()
    # whatever was accepted, typed again from its national part, gives the same number
    cc = phone._plan(country)[0]
    assert out.startswith("+" + cc)
    assert phone.to_e164(out[1 + len(cc) :], country) == out


@given(
    st.sampled_from(COUNTRIES),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=15).filter(
        lambda s: not s.isascii()
    ),
)
def test_non_ascii_digits_are_bad(country, typed):
    with pytest.raises(ValueError, match="^Bad number$"):
        phone.to_e164(typed, country)
    assert phone.group(typed, country) == typed


@given(
    st.one_of(st.none(), st.integers(), st.binary(), st.floats(), st.lists(st.text())),
    st.sampled_from(COUNTRIES),
)
def test_non_text_input_raises_value_error(junk, country):
    with pytest.raises(ValueError):
        phone.to_e164(junk, country)


@given(digits, st.one_of(st.none(), st.integers(), st.text(max_size=3)))
def test_unknown_country(typed, country):
    if isinstance(country, str) and country.upper() in COUNTRIES:
        return
    with pytest.raises(ValueError, match=r"^Country\?$"):
        phone.to_e164(typed, country)
    assert phone.group(typed, country) == typed


@given(st.sampled_from(COUNTRIES), st.text(max_size=20))
def test_group_never_crashes_and_keeps_digits(country, typed):
    shown = phone.group(typed, country)
    if typed.isascii() and typed.isdigit():
        assert shown.replace(" ", "") == typed
    else:
        assert shown == typed


@given(st.one_of(st.text(max_size=30), st.none(), st.integers()))
def test_mask_never_shows_more_than_two_digits(value):
    m = phone.mask(value)
    shown = [ch for ch in m if ch != "*"]
    assert len(shown) <= 2
    assert m.isascii()
    src = "" if value is None else "".join(ch for ch in str(value) if "0" <= ch <= "9")
    assert len(m) == len(src)
    if shown:
        assert "".join(shown) == src[-2:] == phone.last2(value)


def test_error_messages_are_the_documented_ones():
    assert {phone.TOO_SHORT, phone.TOO_LONG, phone.NOT_MOBILE, phone.BAD, phone.COUNTRY} == MESSAGES


@pytest.mark.parametrize("name", sorted(n for n in dir(shared) if n.startswith("test_")))
def test_device_tables_under_cpython(name):
    # The same tables the MicroPython run checks: identical answers on both interpreters.
    getattr(shared, name)()
