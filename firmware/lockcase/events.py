# The one dispatcher: drivers and flows hand events over here and never call each other.
# Delivery is synchronous and in subscription order, so a subscriber (the journal) sees an event
# before any later state change can be observed.

# Events that the store must see: they are journaled and, with a cloud link, published.
JOURNALED = (
    "boot",
    "granted",
    "denied",
    "opened",
    "closed",
    "relocked",
    "held_open",
    "forced",
    "tamper",
    "tamper_cleared",
    "tamper_reset",
    "duty_limited",
    "lockout",
    "key_flood",
    "config_error",
    "fault",
    "fault_cleared",
    "help",
    "abandoned",  # a number or code typed and left unsent: d.step, d.n (keys typed), no digits
    "staff_unconfirmed",  # a staff credential used while the cloud could not confirm the set
    "fw",  # an over-the-air update's progress: d.rel, d.st, d.pct, d.why (docs/ota.md)
)


class Bus:
    def __init__(self):
        self._subs = []

    def subscribe(self, fn, kinds=None):
        # kinds: a tuple of event names, or None for every event.
        self._subs.append((fn, kinds))

    def emit(self, kind, **data):
        for fn, kinds in self._subs:
            if kinds is None or kind in kinds:
                try:
                    fn(kind, data)
                except Exception as exc:  # one faulty subscriber must not stop the lock logic
                    print("bus: subscriber failed on", kind, repr(exc))
