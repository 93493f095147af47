"""casecloud.phones: numbering plans from phonenumbers, numbers that cannot take a text refused."""

from __future__ import annotations

import pytest

from casecloud.phones import FIRMWARE_COUNTRIES, to_e164
from lockcase import phone as firmware

# A mobile of each country the keypad takes, as a shopper types it (national form).
MOBILES = {
    "US": "2015550123", "CA": "5062345678", "GB": "07400123456", "IE": "0850123456", "FR": "0612345678",
    "DE": "015123456789", "NL": "0612345678", "BE": "0470123456", "ES": "612345678", "IT": "3123456789",
    "PT": "912345678", "AU": "0412345678", "NZ": "0211234567", "MX": "2221234567", "BR": "011961234567",
    "IN": "08123456789",
}


def test_the_cloud_covers_every_country_of_the_firmware() -> None:
    ours = set(FIRMWARE_COUNTRIES)
    for country in ours:
        firmware.to_e164(MOBILES[country], country)  # raises if the firmware does not know it
    with pytest.raises(ValueError):
        firmware.to_e164("0612345678", "JP")  # so the next line would notice a country added there
    assert ours == set(MOBILES)


@pytest.mark.parametrize("country", sorted(MOBILES))
def test_a_mobile_of_each_firmware_country(country: str) -> None:
    typed = MOBILES[country]
    sent = firmware.to_e164(typed, country)  # what the case sends: '+<cc><nsn>'
    assert to_e164(sent, country) == sent
    assert to_e164(typed, country) == sent  # and as typed, as the admin API may get it


@pytest.mark.parametrize(("typed", "country"), [
    ("+449012345678", "GB"),   # GB premium rate: the old table passed any '+' of 8-15 digits
    ("09012345678", "GB"),     # the same, typed nationally (10 digits after the trunk 0)
    ("+19002345678", "US"),    # NANP premium rate
    ("+33891123456", "FR"),    # FR premium rate
    ("08001234567", "GB"),     # toll free
    ("+4930123456", "DE"),     # a Berlin fixed line: DE tells fixed from mobile
    ("0201234567", "NL"),      # an Amsterdam fixed line
    ("07012345678", "GB"),     # GB personal number (forwarded, premium-priced)
])
def test_numbers_that_cannot_take_a_text_are_refused(typed: str, country: str) -> None:
    assert to_e164(typed, country) is None


@pytest.mark.parametrize(("typed", "country"), [
    ("5551234567", "US"),       # 555 is no area code; the old table took any 10 digits
    ("+15551234567", "US"),
    ("+999123456789", "US"),    # no such country code
    ("+4412345678", "GB"),      # too short for GB, 8-15 digits for the old table
    ("0000000000", "FR"),
    ("2015550123", "ZZ"),       # national form in a country that does not exist
    ("", "US"), ("+", "US"), ("abc", "US"), ("201555012٣", "US"), ("1" * 40, "US"),
])
def test_invalid_numbers_are_refused(typed: str, country: str) -> None:
    assert to_e164(typed, country) is None


@pytest.mark.parametrize(("typed", "country", "e164"), [
    ("011447400123456", "US", "+447400123456"),   # NANP exit code
    ("011447400123456", "CA", "+447400123456"),
    ("00447400123456", "FR", "+447400123456"),    # elsewhere 00
    ("0012015550123", "GB", "+12015550123"),
    ("12015550123", "US", "+12015550123"),        # NANP trunk 1
    ("201-555-0123", "US", "+12015550123"),       # the admin API's separators
    ("+33 6 12 34 56 78", "GB", "+33612345678"),  # '+' form: the store's country plays no part
    ("+12015550123", "ZZ", "+12015550123"),
])
def test_keypad_conventions(typed: str, country: str, e164: str) -> None:
    assert to_e164(typed, country) == e164
