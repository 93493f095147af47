# heap: 256k
# (compiling entry.py from source on the 64-bit port takes more than 96k; the chip runs .mpy, and
# its heap is checked on the 32-bit port by tests/host/test_heap.py)
# Keypad flows under MicroPython with a hand-stepped clock: phone entry, staff PIN, lockout,
# idle timeout, flood protection, help, and what the display shows.
import os

from fakecloud import Cloud
from scratch import chdir_scratch

from lockcase import config, creds
from lockcase.entry import CODE, IDLE, LOCKOUT, MESSAGE, OFFLINE, PHONE, STAFF, WAIT, Entry
from lockcase.events import Bus
from lockcase.safestate import SL

SALT = "00112233445566778899aabbccddeeff"

# The entry keeps its lockout state in safety.bin in the current directory (the flash root on a case).
chdir_scratch("entry")


class Display:
    width = 16

    def __init__(self):
        self.text = ("", "")

    def show(self, *lines):
        self.text = lines


class Lock:
    def __init__(self, ok=True):
        self.grants = []
        self.ok = ok
        self.state = "locked"
        self.source = None
        self.tampered = False
        self.alarm = None

    def grant(self, source, now, who=None):
        self.grants.append((source, who))
        if self.ok:
            self.state = "released"
            self.source = source
        return self.ok

    def shoppers_blocked(self):
        return self.tampered

    def alert(self):
        return "released" if self.state == "released" else self.alarm



class Rig:
    def __init__(self, cloud=None, **over):
        cfg = config.defaults()
        cfg.update(case_id="c1", provisioned=True, lockout_after=3, lockout_base_s=10, lockout_max_s=40)
        cfg["staff"] = {"salt": SALT, "iter": 10, "pins": [{"id": "ann", "hash": creds.hash_pin("2468", SALT, 10)}],
                        "badges": []}
        cfg.update(over)
        self.events = []
        bus = Bus()
        bus.subscribe(lambda k, d: self.events.append((k, d)))
        self.d = Display()
        self.lock = Lock()
        self.t = 1000
        try:
            os.remove("safety.bin")
        except OSError:
            pass
        self.e = Entry(bus, cfg, creds.StaffCreds(cfg["staff"]), self.lock, self.d, self.t, cloud=cloud)

    def type(self, keys, gap=200):
        for k in keys:
            self.t += gap
            self.e.key(k, self.t)
            self.e.step(self.t)

    def wait(self, ms):
        end = self.t + ms
        while self.t < end:
            self.t += 100
            self.e.step(self.t)

    def kinds(self):
        return [k for k, _ in self.events]


def test_idle_prompt_and_grouped_phone_display():
    r = Rig()
    assert r.e.state == IDLE and r.d.text[0].startswith("Phone")
    r.type("2025550")
    assert r.e.state == PHONE and r.d.text[1] == "202 555 0"


def test_star_deletes_and_empties_back_to_idle():
    r = Rig()
    r.type("20*")
    assert r.d.text[1].strip() == "2"
    r.type("*")
    assert r.e.state == IDLE


def test_idle_timeout_clears_the_entry():
    r = Rig()
    r.type("20255")
    r.wait(21000)
    assert r.e.state == IDLE and r.e.n == 0 and bytes(r.e.buf) == bytes(len(r.e.buf))


def test_invalid_number_message_keeps_digits_for_fixing():
    r = Rig(cloud=Cloud())
    r.type("2025#")
    assert r.e.state == MESSAGE and r.d.text[0] == "Too short"
    r.wait(3100)
    assert r.e.state == PHONE and r.e.n == 4


def test_valid_number_goes_to_the_cloud_as_e164_and_is_wiped():
    c = Cloud()
    r = Rig(cloud=c)
    r.type("2025550143#")
    assert c.sent == [("phone", "+12025550143")] and r.e.state == WAIT
    assert r.e.n == 0 and b"2025550143" not in bytes(r.e.buf)
    r.e.cloud_result("code_sent", r.t)
    assert r.e.state == CODE
    r.type("123456")
    assert c.sent[-1] == ("code", "123456")


def test_wrong_code_counts_the_fewer_tries_of_the_case_and_the_cloud():
    # The case allows 5 wrong codes before its own lockout, the cloud 3 per texted code: the
    # shopper is told what is true for this code ("1 try left", in the singular), not the case's 4.
    c = Cloud()
    r = Rig(cloud=c)
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("111111")
    r.e.cloud_result("denied_code", r.t, "Wrong code", 1)
    assert r.d.text == ("Wrong code", "1 try left")
    r.wait(3100)
    assert r.e.state == CODE  # the same code takes its last try
    r.type("222222")
    r.e.cloud_result("denied_code", r.t, "Wrong code", 0)
    assert r.d.text == ("Wrong code", "No tries left")
    r.wait(3100)
    assert r.e.state == IDLE  # this code is spent: a new number gets a new one


def test_wrong_code_without_the_clouds_count_uses_the_cases():
    r = Rig(cloud=Cloud(), phone_lockout_after=2)
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("111111")
    r.e.cloud_result("denied_code", r.t, "Wrong code")
    assert r.d.text == ("Wrong code", "1 try left")


def test_help_without_a_cloud_calls_no_one():
    # No cloud configured (a staff-only case, `make sim ARGS=--no-cloud`): nobody would come.
    r = Rig()
    r.type("#")
    assert "help" in r.kinds()  # journaled all the same
    assert r.d.text == ("Service offline", "Ask an associate")


def test_cloud_offline_tells_the_shopper():
    r = Rig(cloud=Cloud(up=False))
    r.type("2025550143#")
    assert r.d.text == ("Service offline", "Ask an associate")
    assert ("denied", {"source": "phone", "reason": "offline", "last2": "43"}) in r.events


def test_staff_pin_opens():
    r = Rig()
    r.type("**2468#")
    assert r.lock.grants == [("staff", "ann")]
    assert r.d.text[0].startswith("Staff")


def test_pin_digits_are_masked_on_the_display():
    r = Rig()
    r.type("**24")
    assert r.e.state == STAFF and r.d.text == ("Staff PIN:", "**")


def test_wrong_pins_lock_out_with_exponential_backoff():
    r = Rig()
    for _ in range(3):
        r.type("**1111#")
        r.wait(3100)
    assert r.e.state == LOCKOUT and r.d.text[0] == "Staff PIN locked"
    lockouts = [d for k, d in r.events if k == "lockout"]
    assert lockouts == [{"s": 10, "level": 1}]
    r.type("**2468#")  # refused while locked out
    assert r.lock.grants == []
    r.wait(10100)
    assert r.e.state == IDLE
    for _ in range(3):
        r.type("**1111#")
        r.wait(3100)
    assert [d["s"] for k, d in r.events if k == "lockout"] == [10, 20]
    r.wait(20100)
    for _ in range(3):
        r.type("**1111#")
        r.wait(3100)
    assert [d["s"] for k, d in r.events if k == "lockout"] == [10, 20, 40]  # capped at lockout_max_s
    r.wait(40100)
    r.type("**2468#")
    assert r.lock.grants == [("staff", "ann")] and r.e.store.get(SL) == 0


def test_lockout_survives_a_reset():
    r = Rig()
    for _ in range(3):
        r.type("**1111#")
        r.wait(3100)
    # A new Entry (after a reboot) reads safety.bin and starts locked out.
    e2 = Entry(Bus(), r.e.cfg, r.e.staff, Lock(), Display(), 0)
    assert e2.state == LOCKOUT
    os.remove("safety.bin")


def test_key_flood_is_dropped_and_reported_once():
    r = Rig()
    r.type("1" * 60, gap=5)
    assert r.kinds().count("key_flood") == 1
    assert r.e.n < 20
    assert r.lock.grants == []


def test_hash_alone_calls_for_help():
    c = Cloud()
    r = Rig(cloud=c)
    r.type("#")
    assert "help" in r.kinds() and c.sent == [("help",)]


def test_unprovisioned_ignores_keys():
    r = Rig(provisioned=False)
    r.type("**2468#")
    assert r.e.state == OFFLINE and r.lock.grants == []


# -- what the store's analytics count (issue 14): abandoned entries, time from the first key ------
def _abandoned(r):
    return [d for k, d in r.events if k == "abandoned"]


def test_a_number_typed_and_left_journals_one_abandoned_event_without_digits():
    r = Rig(cloud=Cloud())
    r.type("2025550143")
    r.wait(21000)
    r.wait(21000)
    assert _abandoned(r) == [{"step": "phone", "n": 10}]  # once, and no digit of it, nor the last two
    r.type("20**")  # typed, then deleted back to nothing: a clear
    assert r.e.state == IDLE and _abandoned(r)[1:] == [{"step": "phone", "n": 2}]
    r.wait(21000)
    assert len(_abandoned(r)) == 2
    r.type("1" * 25)  # more than the number holds: the count is capped, the digits are not in it
    r.wait(21000)
    assert _abandoned(r)[2:] == [{"step": "phone", "n": 20}]


def test_a_submitted_number_or_code_journals_no_abandoned_event():
    c = Cloud()
    r = Rig(cloud=c)
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("123456")
    assert c.sent[-1] == ("code", "123456")
    r.e.cloud_result("denied_code", r.t, "Wrong code", 2)
    r.wait(60000)
    r.type("**2468#")  # and a staff PIN is never a shopper's abandoned entry
    r.type("**24")
    r.wait(21000)
    assert _abandoned(r) == []


def test_a_code_typed_and_left_is_abandoned_at_the_code_step():
    r = Rig(cloud=Cloud())
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("12")
    r.wait(21000)
    assert r.e.state == IDLE and _abandoned(r) == [{"step": "code", "n": 2}]
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("1*#")  # typed, deleted, and left the code screen
    assert r.e.state == IDLE and _abandoned(r)[1:] == [{"step": "code", "n": 1}]


class _Pin:
    v = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class _Timer:
    def arm(self, ms, cb):
        pass

    def cancel(self):
        pass


def _real_lock_rig(cloud):
    from lockcase.drivers.coil import Coil
    from lockcase.lock import Lock as RealLock

    r = Rig(cloud=cloud)
    bus = r.e.bus
    r.lock = r.e.lock = RealLock(Coil(_Pin()), lambda: False, None, _Timer(), bus, config.defaults(), r.t)
    return r


def test_a_grant_carries_the_wait_from_the_first_key():
    c = Cloud()
    r = _real_lock_rig(c)
    r.type("2")
    first = r.t
    r.type("025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.wait(5000)
    r.type("123456")
    r.t += 700  # the cloud's answer
    assert r.lock.grant("phone", r.t, who="g1")  # what the cloud link does on "allow"
    r.e.cloud_result("granted", r.t)
    (g,) = [d for k, d in r.events if k == "granted"]
    assert g["wait_ms"] == r.t - first and g["source"] == "phone"
    assert r.lock.t0 is None  # taken by this grant: the next one carries no wait of this flow


def test_a_tap_starts_the_wait_and_a_number_it_asks_for_continues_it():
    r = _real_lock_rig(Cloud())
    tap = r.t = r.t + 500
    r.e.waiting(r.t)  # what a card tap does before it asks the cloud
    r.t += 600
    r.e.cloud_result("need_phone", r.t)
    r.wait(3100)
    r.type("2025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("123456")
    r.t += 500
    assert r.lock.grant("card", r.t, who="g2")
    (g,) = [d for k, d in r.events if k == "granted"]
    assert g["wait_ms"] == r.t - tap


def test_a_staff_grant_carries_no_wait():
    r = _real_lock_rig(Cloud())
    r.type("2025550143#")  # a shopper's request in flight
    assert r.e.state == WAIT and r.lock.grant("staff", r.t, who="ann")  # a badge meanwhile
    (g,) = [d for k, d in r.events if k == "granted"]
    assert "wait_ms" not in g and r.lock.t0 is not None


def test_a_number_typed_long_after_a_tap_starts_its_own_wait():
    r = _real_lock_rig(Cloud())
    r.e.waiting(r.t)
    r.e.cloud_result("need_phone", r.t + 500)
    r.wait(60000)  # the shopper who tapped left; the next one types a number
    r.type("2")
    first = r.t
    r.type("025550143#")
    r.e.cloud_result("code_sent", r.t)
    r.type("123456")
    assert r.lock.grant("phone", r.t, who="g3")
    (g,) = [d for k, d in r.events if k == "granted"]
    assert g["wait_ms"] == r.t - first
