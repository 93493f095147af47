"""Deadlines across ticks_ms's wrap-around, on the 32-bit port where it happens (a 2^30 ms period:
12.4 days, of which 6.2 are "in the future" for any stored tick). A deadline kept after it passed
comes back to life a few days later: the help key rate-limited for days, a '#' swallowed, a
challenge session revived, the duty history never expiring. Each case runs a week of virtual time.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_micropython

SCRIPT = r"""
import os, time
from lockcase import config, creds, recover
from lockcase.entry import Entry, IDLE
from lockcase.events import Bus
from lockcase.display import TextDisplay
from lockcase.drivers.coil import Coil
from lockcase.lock import Lock

os.chdir(%(dir)r)
PERIOD = time.ticks_add(0, -1) + 1
assert PERIOD == 1 << 30, PERIOD  # the chip's period: the point of this test
WEEK = 7 * 86400 * 1000
add = time.ticks_add


class FakeLock:
    state = "locked"
    source = None
    def alert(self): return None
    def shoppers_blocked(self): return False
    def grant(self, *a, **k): return True


class Cloud:
    def __init__(self): self.sent = []
    def reachable(self, now): return True
    def available(self): return True
    def help(self, now): self.sent.append("help")
    def code(self, c, now): self.sent.append("code")
    def phone(self, n, now): self.sent.append("phone")


def cfg(**over):
    c = config.defaults()
    c.update(case_id="c1", provisioned=True, unlock_ms=3000, pull_in_ms=300, duty_budget_ms=20000,
             duty_window_s=60)
    c.update(over)
    return c


def idle(step_fns, t, ms, every=10000):
    for _ in range(ms // every):  # a week is more than half the period: no end tick to compare
        t = add(t, every)
        for fn in step_fns:
            fn(t)
    return t


def entry(cloud, t):
    try:
        os.remove("safety.bin")
    except OSError:
        pass
    return Entry(Bus(), cfg(), creds.StaffCreds(None), FakeLock(), TextDisplay(), t, cloud=cloud)


# The help key, a week after the last call: a call again, not "Staff called / Wait 7816:42".
cl = Cloud()
t = 0
e = entry(cl, t)
e.key("#", t)
e.cloud_result("help_ok", t)
t = idle([e.step], t, WEEK)
e.key("#", t)
print("HELP", cl.sent.count("help"))

# '#' a week after an auto-submitted code: a help call, not swallowed as a confirmation.
cl = Cloud()
t = 0
e = entry(cl, t)
for k in "2025550143#":
    t = add(t, 200)
    e.key(k, t)
e.cloud_result("code_sent", t)
for k in "123456":
    t = add(t, 200)
    e.key(k, t)
e.cloud_result("timeout", t)
t = idle([e.step], t, WEEK)
e.key("#", t)
print("QUIET", cl.sent.count("help"))

# Keys a week after the last one are keys, not a flood.
cl = Cloud()
t = 0
e = entry(cl, t)
e.key("1", t)
t = idle([e.step], t, WEEK)
floods = []
e.bus.subscribe(lambda k, d: floods.append(k), ("key_flood",))
for k in "20255501431234567890":  # more than a bucket: the refill must work after the week
    t = add(t, 300)
    e.key(k, t)
print("KEYS", len(floods))


# The duty history: 20 grants, a week idle, then one a minute: all granted.
class Pin:
    v = 0
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class Timer:
    def arm(self, ms, cb): pass
    def cancel(self): pass


bus = Bus()
t = 0
lock = Lock(Coil(Pin()), None, None, Timer(), bus, cfg(duty_budget_ms=60000), t)
for _ in range(20):
    lock.grant("staff", t)
    t = idle([lock.step], t, 1000, every=10)
t = idle([lock.step], t, WEEK)
ok = 0
for _ in range(40):
    ok += 1 if lock.grant("staff", t) else 0
    t = idle([lock.step], t, 60000, every=100)
print("DUTY", ok)
"""


def test_deadlines_survive_ticks_wrap_on_a_32_bit_port(tmp_path: Path) -> None:
    script = tmp_path / "wrap.py"
    script.write_text(SCRIPT % {"dir": str(tmp_path)})
    proc = run_micropython([str(script)], heap="1m", bits=32, timeout=600)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ")[0] in ("HELP", "QUIET", "KEYS", "DUTY"))
    assert lines["HELP"] == "2", out  # the second call went out
    assert lines["QUIET"] == "1", out  # the '#' a week later called for help
    assert lines["KEYS"] == "0", out  # twenty keys at a person's pace: no flood
    assert lines["DUTY"] == "40", out  # every grant after the idle week
