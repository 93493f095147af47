# heap: 256k
# Safety and brute-force state across resets and power cuts, under MicroPython: the duty budget,
# the failed-entry counters and the tamper latch are on flash before the action they guard, and a
# boot (a new Lock, Entry and SafeState on the same files) starts from them.
import os

from fakecloud import Cloud
from mpassert import raises
from scratch import chdir_scratch

from lockcase import config, creds, recover
from lockcase.drivers.coil import Coil
from lockcase.entry import CODE, IDLE, LOCKOUT, MESSAGE, PHONE, STAFF, WAIT, Entry
from lockcase.events import Bus
from lockcase.journal import Journal
from lockcase.lock import LOCKED, RELEASED, Lock
from lockcase.safestate import FILE, MS, SF, TP, G, J, U

SALT = "00112233445566778899aabbccddeeff"
chdir_scratch("safestate")


def fresh():
    for n in (FILE, FILE + ".tmp"):
        try:
            os.remove(n)
        except OSError:
            try:
                os.rmdir(n)  # a test made it a directory: unreadable as a file
            except OSError:
                pass
    try:
        for n in os.listdir("journal"):
            os.remove("journal/" + n)
        os.rmdir("journal")
    except OSError:
        pass


class PowerCut(Exception):
    pass


class Pin:
    def __init__(self, on_high=None):
        self.v = 1  # a chip's latch may hold anything before the firmware runs
        self.on_high = on_high

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        if v and self.on_high:
            self.on_high()


class Timer:
    def arm(self, ms, cb):
        self.ms = ms

    def cancel(self):
        pass


class Display:
    width = 16

    def __init__(self, cut_on=None):
        self.text = ("", "")
        self.cut_on = cut_on

    def show(self, *lines):
        self.text = lines
        if self.cut_on and lines[0] == self.cut_on:
            raise PowerCut(lines[0])



def cfg(**over):
    c = config.defaults()
    c.update(case_id="c1", provisioned=True, unlock_ms=3000, pull_in_ms=300, duty_budget_ms=8000,
             duty_window_s=30, lockout_after=3, lockout_base_s=10, lockout_max_s=40,
             phone_lockout_after=2, phone_lockout_s=5, help_interval_s=60)
    c["staff"] = {"salt": SALT, "iter": 10, "pins": [{"id": "ann", "hash": creds.hash_pin("2468", SALT, 10)}],
                  "badges": []}
    c.update(over)
    return c


class Case:
    """One boot of a case: a Lock and an Entry over the flash files in the current directory."""

    def __init__(self, c=None, t=1000, cloud=None, on_high=None, cut_on=None, door=False, tamper=False,
                 journal=True, clock=None):
        self.cfg = c or cfg()
        self.t = t
        self.events = []
        self.bus = Bus()
        self.bus.subscribe(lambda k, d: self.events.append((k, d)))
        self.store = recover.load(worst=((U, self.cfg["duty_budget_ms"]), (SF, self.cfg["lockout_after"] - 1), (TP, 1)))
        # The journal, as the app wires it: it marks a grant journaled once it is on flash.
        self.journal = Journal("journal", max_records=200, segment_records=50, clock=lambda: 1767225600) if journal else None
        if self.journal is not None:
            self.journal.attach(self.bus, self.store.journaled)
        self.pin = Pin(on_high)
        self.door = door
        self.tamper = tamper
        self.lock = Lock(Coil(self.pin), lambda: self.door, lambda: self.tamper, Timer(), self.bus, self.cfg,
                         t, store=self.store, clock=clock)
        self.d = Display(cut_on)
        self.cloud = cloud
        self.e = Entry(self.bus, self.cfg, creds.StaffCreds(self.cfg["staff"]), self.lock, self.d, t,
                       cloud=cloud, store=self.store)
        recover.journal_lost_grant(self.store, self.bus)  # as lockcase.startup does at boot

    def step(self, ms=10):
        end = self.t + ms
        while self.t < end:
            self.t += 10
            self.lock.step(self.t)
            self.e.step(self.t)

    def type(self, keys, gap=200):
        for k in keys:
            self.t += gap
            self.e.key(k, self.t)
            self.lock.step(self.t)
            self.e.step(self.t)

    def kinds(self):
        return [k for k, _ in self.events]

    def energized_ms(self, grant_every, n):
        """Grant n times, grant_every ms apart, stepping in between; the total energized ms."""
        on = 0
        for _ in range(n):
            self.lock.grant("staff", self.t)
            for _ in range(grant_every // 10):
                self.t += 10
                self.lock.step(self.t)
                on += 10 if self.lock.coil.energized() else 0
        return on


# -- the duty budget ------------------------------------------------------------------------------

def test_coil_is_driven_off_before_the_lock_starts():
    fresh()
    c = Case()
    assert c.pin.v == 0 and c.lock.state == LOCKED


def test_duty_budget_holds_across_resets_between_grants():
    # The sequence from the field: staff grants with a reset after each. Without the record on
    # flash every boot had a fresh budget: 17,940 ms energized in one 30 s window against 8,000.
    fresh()
    t = 1000
    on = 0
    for _ in range(6):
        c = Case(t=t + 50)  # a reset: RAM is gone, the ticks clock starts again
        c.lock.grant("staff", c.t)
        while c.lock.state == RELEASED:
            c.step(10)
            on += 10
        t = c.t
    assert on <= 8000, on
    assert on >= 8000 - 300, on  # and the budget is still usable, not refused outright


def test_boot_after_grants_starts_with_the_recorded_duty():
    fresh()
    c = Case()
    assert c.lock.grant("staff", c.t) and c.store.get(U) == 3000
    c.step(500)
    c2 = Case(t=5)
    assert c2.lock.duty.allowance(5) == 8000 - 3000
    # A whole window later nothing counts any more, and the record says so (one write).
    c2.step(30 * 1000 + 20)
    assert c2.store.get(U) == 0 and c2.lock.duty.allowance(c2.t) == 8000


def test_duty_record_and_grant_record_are_on_flash_before_the_coil_is_energized():
    fresh()
    seen = []

    def on_high():
        # The instant the gate goes high: what is on flash already?
        st = recover.load()
        seen.append((st.get(U), st.get(G), st.get(J), st.get(MS), st.who))

    c = Case(on_high=on_high)
    c.lock.grant("phone", c.t, who="g1")
    assert seen == [(3000, 1, 0, 3000, b"g1")], seen
    # Journaled right after the coil, and marked so on flash.
    assert c.events == [("granted", {"source": "phone", "who": "g1", "ms": 3000, "g": 1})]
    st = recover.load()
    assert st.get(G) == st.get(J) == 1


def test_power_cut_at_energize_keeps_the_grant_on_record():
    fresh()

    def cut():
        raise PowerCut("gate")

    c = Case(on_high=cut)
    raises(PowerCut, c.lock.grant, "staff", c.t, "ann")
    assert c.events == []  # the journal never saw it
    assert recover.load().get(U) == 3000
    # The next boot journals it, once.
    c = Case()
    assert c.events == [("granted", {"source": "staff", "who": "ann", "ms": 3000, "g": 1, "recovered": True})]
    assert Case().events == []


def test_corrupt_record_boots_into_the_worst_case():
    fresh()
    with open(FILE, "wb") as f:
        f.write(b"\x01" * 20)  # cut short
    c = Case()
    assert c.store.corrupt and c.lock.duty.allowance(c.t) == 0
    assert c.lock.shoppers_blocked()  # the tamper latch is assumed too
    assert not c.lock.grant("staff", c.t) and c.lock.why == "duty"
    with open(FILE, "wb") as f:
        f.write(b"\x01" * 68)  # whole length, but its check fails
    assert recover.load(worst=((U, 1),)).corrupt


# -- failed entries ---------------------------------------------------------------------------------

def test_wrong_pins_count_across_resets():
    # lockout_after=3: two wrong PINs, a reset, one more: locked out. (It was: reset every two
    # tries and 20 wrong PINs never lock out.)
    fresh()
    c = Case()
    c.type("**1111#**1111#")
    c = Case()
    assert c.store.get(SF) == 2
    c.type("**1111#")
    assert "lockout" in c.kinds() and c.e.state == LOCKOUT


def test_failure_is_counted_before_the_screen_says_so():
    fresh()
    c = Case(cut_on="Wrong PIN")
    raises(PowerCut, c.type, "**1111#")
    assert recover.load().get(SF) == 1


def test_a_shopper_grant_does_not_reset_the_staff_counter():
    fresh()
    cl = Cloud()
    c = Case(cloud=cl)
    c.type("**1111#")
    c.step(3100)
    c.type("**1111#")
    c.step(3100)
    c.e.cloud_result("granted", c.t)  # a shopper's card opened the case in between
    c.step(3100)
    c.type("**1111#")
    assert [k for k in c.kinds() if k == "lockout"] == ["lockout"]


def test_staff_lockout_leaves_help_and_phone_entry_working():
    fresh()
    cl = Cloud()
    c = Case(c=cfg(lockout_base_s=30), cloud=cl)
    for _ in range(3):
        c.type("**0000#")
        c.step(3100)
    assert c.e.state == LOCKOUT and c.d.text[0] == "Staff PIN locked"
    c.type("#")
    assert cl.sent == [("help",)] and "help" in c.kinds()
    c.e.cloud_result("help_ok", c.t)
    c.step(3100)
    c.type("2025550143#")
    assert cl.sent[-1] == ("phone", "+12025550143")
    # The right PIN is still refused during the staff lockout, and not counted.
    c.e.cloud_result("timeout", c.t)
    c.step(3100)
    c.type("**2468")
    assert c.d.text[0] == "Staff PIN locked"
    c.type("#")
    assert c.lock.state == LOCKED and c.store.get(SF) == 0


def test_a_pin_started_during_a_lockout_times_out_like_any_other():
    fresh()
    c = Case(c=cfg(lockout_base_s=60))
    for _ in range(3):
        c.type("**0000#")
        c.step(3100)
    c.type("**12")
    assert c.e.state == STAFF and c.d.text[0] == "Staff PIN locked"
    c.step(c.cfg["entry_timeout_s"] * 1000 + 100)
    assert c.e.state == IDLE and c.e.n == 0


def test_help_is_rate_limited_not_locked_out():
    fresh()
    cl = Cloud()
    c = Case(cloud=cl)
    c.type("#")
    c.e.cloud_result("help_ok", c.t)
    c.step(3100)
    c.type("#")
    assert cl.sent == [("help",)] and c.kinds().count("help") == 1
    assert c.d.text[0] == "Staff called" and c.d.text[1].startswith("Wait 0:5")
    c.step(60 * 1000)
    c.type("#")
    assert cl.sent == [("help",), ("help",)]


def test_hash_after_an_auto_submitted_code_is_not_a_help_call():
    fresh()
    cl = Cloud()
    c = Case(cloud=cl)
    c.type("2025550143#")
    c.e.cloud_result("code_sent", c.t)
    c.type("123456")
    assert c.e.state == WAIT and cl.sent[-1] == ("code", "123456")
    c.type("#")  # in flight
    c.e.cloud_result("granted", c.t)
    c.type("#")  # right after the answer
    c.step(3100)
    assert "help" not in c.kinds() and ("help",) not in cl.sent
    c.type("#")  # later, on purpose
    assert "help" in c.kinds()


def test_after_a_wrong_code_hash_leaves_for_a_new_number():
    fresh()
    cl = Cloud()
    c = Case(cloud=cl)
    c.type("2025550143#")
    c.e.cloud_result("code_sent", c.t)
    c.type("111111")
    c.e.cloud_result("denied_code", c.t, "Wrong code")
    c.type("#")  # at once, on the "Wrong code" screen: back to the start, not a help call
    assert c.e.state == IDLE and "help" not in c.kinds()
    c.type("2025550188#")
    assert cl.sent[-1] == ("phone", "+12025550188")


def test_wrong_codes_lock_out_shopper_entry_only():
    fresh()
    cl = Cloud()
    c = Case(c=cfg(phone_lockout_s=20), cloud=cl)
    c.type("2025550143#")
    c.e.cloud_result("code_sent", c.t)
    c.type("111111")
    c.e.cloud_result("denied_code", c.t, "Wrong code")
    assert c.e.state == MESSAGE and c.d.text[1] == "1 try left"
    c.step(3100)
    assert c.e.state == CODE
    c.type("222222")
    c.e.cloud_result("denied_code", c.t, "Wrong code")
    assert c.d.text[0] == "Too many tries"
    assert [d for k, d in c.events if k == "lockout"] == [{"s": 20, "level": 1, "entry": "shopper"}]
    c.step(3100)
    c.type("2")
    assert c.e.state != PHONE and c.d.text[0] == "Too many tries"
    # Staff are not locked out by shoppers' failures, nor is their counter touched.
    c.step(3100)
    c.type("**2468#")
    assert c.lock.state == RELEASED and c.d.text == ("Staff: open", "the door")
    # A reset does not lift the shopper lockout either.
    c = Case(c=cfg(phone_lockout_s=20), cloud=cl)
    c.type("2")
    assert c.d.text[0] == "Too many tries"
    c.step(20100)
    c.type("2")
    assert c.e.state == PHONE


# -- tamper ---------------------------------------------------------------------------------------

def test_tamper_latches_refuses_shoppers_and_staff_clear_it():
    fresh()
    cl = Cloud()
    c = Case(cloud=cl)
    c.tamper = True
    c.step(20)
    c.tamper = False
    c.step(20)
    assert c.kinds() == ["tamper", "tamper_cleared"] and c.lock.shoppers_blocked()
    assert c.d.text == ("Case alarm", "Ask an associate")
    c.type("2025550143#")
    assert cl.sent == [] and c.d.text[0] == "Case alarm"
    assert ("denied", {"source": "phone", "reason": "tamper"}) in c.events
    assert not c.lock.grant("app", c.t, who="g1") and c.lock.why == "tamper"
    # A reset keeps the latch.
    c = Case(cloud=cl)
    assert c.lock.shoppers_blocked() and "tamper" in c.lock.alarms()
    c.step(3100)
    c.type("**2468#")
    assert ("tamper_reset", {"by": "ann"}) in c.events and not c.lock.shoppers_blocked()
    assert not Case().lock.shoppers_blocked()


def test_tamper_latch_is_configurable():
    fresh()
    c = Case(c=cfg(tamper_blocks_shoppers=False), tamper=True)
    assert "tamper" in c.kinds() and not c.lock.shoppers_blocked()
    assert c.lock.grant("phone", c.t, who="g1")


def test_staff_cannot_clear_the_latch_while_the_enclosure_is_open():
    fresh()
    c = Case(tamper=True)
    c.type("**2468#")
    assert c.lock.state == RELEASED and c.lock.shoppers_blocked()


# -- what the display says --------------------------------------------------------------------------

def test_open_the_door_stays_while_the_coil_is_energized():
    fresh()
    c = Case(cloud=Cloud())
    c.lock.grant("app", c.t, who="g1")  # an app unlock: no key was pressed
    c.step(20)
    assert c.d.text == ("Open the door", "")
    c.step(2900)
    assert c.d.text == ("Open the door", "") and c.lock.state == RELEASED
    c.step(200)
    assert c.lock.state == LOCKED and c.d.text[0].startswith("Phone")


def test_an_app_unlock_after_a_staff_pin_says_open_the_door():
    fresh()
    c = Case(cloud=Cloud())
    c.type("**2468#")
    assert c.d.text == ("Staff: open", "the door")
    c.step(3100)
    assert c.lock.state == LOCKED
    c.lock.grant("app", c.t, who="g1")
    c.step(20)
    assert c.d.text == ("Open the door", "")


def test_forced_and_held_open_say_so_on_the_display():
    fresh()
    c = Case(c=cfg(held_open_s=5))
    c.door = True
    c.step(100)
    assert c.d.text == ("Close the door", "Alarm sent")
    c.door = False
    c.step(100)
    assert c.d.text[0].startswith("Phone")
    c.type("**2468#")
    c.door = True
    c.step(5100)
    assert "held_open" in c.kinds() and c.d.text == ("Close the door", "Door left open")
    c.door = False
    c.step(100)
    assert c.e.state == IDLE and c.d.text[0].startswith("Phone")


def test_staff_entry_is_not_hijacked_by_the_display():
    fresh()
    c = Case()
    c.door = True
    c.step(100)
    c.type("**24")
    assert c.e.state == STAFF and c.d.text == ("Staff PIN:", "**")


# -- when the flash fails ------------------------------------------------------------------------

class FailingFile:
    # The safety file's handle once the flash refuses writes (full, worn out, failing).
    def seek(self, n):
        pass

    def write(self, b):
        raise OSError(28)  # ENOSPC

    def flush(self):
        pass


def test_a_grant_the_flash_cannot_record_does_not_happen():
    fresh()
    c = Case()
    c.store._f = FailingFile()
    assert not c.lock.grant("staff", c.t, who="ann") and c.lock.why == "store"
    assert c.pin.v == 0 and c.lock.state == LOCKED
    (fault,) = [d for k, d in c.events if k == "fault"]
    assert fault["part"] == "safety_state" and "write failed" in fault["error"]
    assert c.store.get(G) == 0  # not recorded, so not counted as made
    c.type("**2468#")
    assert c.d.text == ("Lock fault", "Call service")


def test_a_badge_the_lock_cannot_open_for_says_why():
    # App.tap hands a checked badge to Entry.open_for_staff, as the PIN path does: a refusal
    # shows on the display instead of nothing.
    fresh()
    c = Case()
    c.store._f = FailingFile()
    c.e.open_for_staff(c.t, "b1")
    assert c.d.text == ("Lock fault", "Call service") and c.lock.state == LOCKED


def test_a_wrong_pin_the_flash_cannot_count_locks_out_at_once():
    fresh()
    c = Case()
    c.store._f = FailingFile()
    c.type("**1111#")
    assert [d for k, d in c.events if k == "lockout"] == [{"s": 10, "level": 1}]
    assert c.e.state == LOCKOUT


def test_an_unreadable_record_is_not_a_fresh_case():
    fresh()
    os.mkdir(FILE)  # there, but not readable as the record
    c = Case()
    assert c.store.corrupt and "unreadable" in c.store.error
    assert c.lock.duty.allowance(c.t) == 0 and c.lock.shoppers_blocked()
    assert c.store.get(SF) == c.cfg["lockout_after"] - 1
    assert not c.lock.grant("staff", c.t, who="ann")  # and nothing can be recorded: no grant
    os.rmdir(FILE)


def test_a_corrupt_record_longer_than_one_is_started_afresh_with_the_worst_case():
    fresh()
    with open(FILE, "wb") as f:
        f.write(b"\x07" * 72)
    c = Case()
    assert c.store.corrupt and os.stat(FILE)[6] == 68
    c2 = Case()  # the next boot reads the worst case that was written, not corrupt any more
    assert not c2.store.corrupt and c2.store.get(U) == 8000 and c2.lock.shoppers_blocked()


def test_a_grant_the_journal_did_not_take_is_recovered_at_the_next_boot():
    fresh()
    c = Case(journal=False)  # the journal is unavailable (a broken filesystem for it)
    c.lock.grant("phone", c.t, who="g9")
    assert c.store.get(G) == 1 and c.store.get(J) == 0
    c = Case()
    assert ("granted", {"source": "phone", "who": "g9", "ms": 3000, "g": 1, "recovered": True}) in c.events
    assert c.store.get(J) == 1 and [r["type"] for r in c.journal.records()] == ["granted"]


def test_the_duty_interval_starts_when_the_coil_does():
    # The flash write and the PIN check take time on a chip: the interval the budget counts and
    # the deadline start after them, so the coil never runs past what was counted.
    fresh()
    late = [0]
    c = Case(clock=lambda: c.t + late[0])
    late[0] = 300
    c.lock.grant("staff", c.t, who="ann")
    start = c.t + 300
    c.step(3000 + 200)
    assert c.lock.state == RELEASED  # 3,200 ms after the call, 2,900 after the coil started
    c.step(200)
    assert c.lock.state == LOCKED
    assert c.lock.duty._start[0] == start


# -- power cuts inside a write, on LittleFS ---------------------------------------------------------

def test_a_cut_at_any_block_write_leaves_the_old_record_or_the_new():
    # The safety file on LittleFS over a RAM block device that loses power at the n-th program or
    # erase (torn or clean), for every n a rewrite reaches, many rewrites in: after the reboot the
    # record reads whole, as what was last written or what was being written, never as corrupt.
    import gc

    import vfs
    from ramblock import RAMBlock

    mnt = "/ss"
    cuts = 0
    for torn in (False, True):
        for n in range(1, 12):
            for before in (1, 40):  # early on, and with the metadata block well used (compaction)
                try:
                    vfs.umount(mnt)
                except OSError:
                    pass
                dev = RAMBlock(512, 32)
                vfs.VfsLfs2.mkfs(dev)
                vfs.mount(vfs.VfsLfs2(dev), mnt)
                path = mnt + "/" + FILE
                st = recover.load(path)
                for i in range(before):
                    assert st.set(U, i + 1, SF, i % 3)
                old = (before, (before - 1) % 3)
                dev.cut_after(n, torn=torn)
                dev.rng.s = n * 7919 + before or 1
                wrote = st.set(U, 5000, SF, 2)
                died = dev.dead
                cuts += died
                assert died or n > 2, (torn, n, before)  # a rewrite programs 3 or more times
                gc.collect()  # the open file's finaliser runs before the mount goes
                vfs.umount(mnt)
                dev.revive()
                vfs.mount(vfs.VfsLfs2(dev), mnt)
                again = recover.load(path)
                got = (again.get(U), again.get(SF))
                assert not again.corrupt and again.error is None, (torn, n, before, again.error)
                assert got in (old, (5000, 2)), (torn, n, before, got)
                if wrote and not died:
                    assert got == (5000, 2)
    vfs.umount(mnt)
    assert cuts >= 12, cuts  # the cuts did land inside writes, at every step a rewrite takes
