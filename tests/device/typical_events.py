# A busy case's events as the app emits them (lock.py, entry.py), in a typical order: what the
# journal's capacity and cost are measured with (the journal size test and bench).
EVENTS = (
    ("granted", {"source": "phone", "who": "..43", "ms": 5000, "g": 1234}),
    ("opened", {"source": "phone"}),
    ("closed", {"after": "open"}),
    ("denied", {"source": "keypad", "reason": "offline", "last2": "17"}),
    ("relocked", {"reason": "timeout"}),
)
