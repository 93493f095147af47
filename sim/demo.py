"""The demo store of `make sim`, also used by the tests and benches as a provisioned sim case."""

from __future__ import annotations

from typing import Any

from lockcase import creds

STORE, CASE = "demo-store", "demo-case-1"
DEMO_PIN = "1234"
DEMO_SALT = "5eed5eed5eed5eed5eed5eed5eed5eed"
# Demo shoppers: (label, card UID (7 bytes, as an NTAG or DESFire has), phone, status). The phone
# numbers are fictional (555-01xx).
MEMBERS = [
    ("trusted member card", "04a1b2c3d4e5f6", "2025550101", "trusted"),
    ("member card (asks for phone + code)", "04c0ffee010203", "2025550102", "member"),
    ("flagged member card", "04badbad010203", "2025550103", "flagged"),
]


def demo_config() -> dict[str, Any]:
    """Embedded defaults for the demo case: a provisioned case with one staff PIN."""
    return {
        "board": "sim",
        "store_id": STORE,
        "case_id": CASE,
        "name": "Razors, aisle 7",
        "country": "US",
        "display": "lcd1602",
        "nfc": {"driver": "pn532", "bus": "i2c"},  # the sim's emulated PN532, as on the boards
        "staff": {
            "salt": DEMO_SALT,
            "iter": 1000,
            "pins": [{"id": "demo-associate", "hash": creds.hash_pin(DEMO_PIN, DEMO_SALT, 1000)}],
            "badges": [],
        },
    }
