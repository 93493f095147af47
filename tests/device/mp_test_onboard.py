# casectl's on-device code (host_tools/casectl/onboard/) under MicroPython, run the way casectl
# runs it in the raw REPL: each file executed into one set of globals that lasts the session, each
# answer read from the marked line it prints. Files are written in the current directory, as on a
# board's flash.
import binascii
import hashlib
import json
import os
import sys

from mpassert import raises
from scratch import chdir_scratch


def _find(name):
    # The repository is on MICROPYPATH (tests/conftest.py): look the file up there, as it is not
    # a module of any package MicroPython imports.
    for d in sys.path:
        p = d + "/host_tools/casectl/onboard/" + name + ".py"
        try:
            os.stat(p)
            return p
        except OSError:
            pass
    raise AssertionError("host_tools/casectl/onboard/" + name + ".py is not under any of " + str(sys.path))


SOURCES = {n: _find(n) for n in ("probe", "files")}
chdir_scratch("onboard")


class Session:
    """The raw REPL's globals for one casectl session, with what the code prints captured."""

    def __init__(self, *names):
        self.out = []
        self.g = {"print": self._print}
        for n in names:
            with open(SOURCES[n]) as f:
                exec(f.read(), self.g)

    def _print(self, *args):
        self.out.append(" ".join(str(a) for a in args))

    def call(self, fn, *args):
        self.out = []
        return self.g[fn](*args)

    def marked(self, marker):
        """The payload of the last line printed with `marker`, as Device.run_marked reads it."""
        for line in reversed(self.out):
            if line.startswith(marker):
                return line[len(marker):].strip()
        raise AssertionError("no " + marker + " line in " + repr(self.out))

    def json(self, fn, *args):
        self.call(fn, *args)
        return json.loads(self.marked("LCJSON"))


def b64(data):
    return binascii.b2a_base64(data).decode().strip()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


# -- probe.py -------------------------------------------------------------------------------------
def test_probe_says_what_answers_and_whether_the_firmware_ran():
    s = Session("probe")
    s.call("_lc_probe")
    name, version, mpy, platform, machine, running = json.loads(s.marked("LCPROBE"))
    impl = sys.implementation
    assert name == "micropython"
    assert version == list(impl.version[:3])
    assert mpy == impl._mpy and mpy & 0xFF == 6  # the .mpy format deploy compares with the build's
    assert platform == sys.platform == "linux" and machine == impl._machine
    assert running is False
    sys.modules["lockcase.app"] = sys  # the firmware's app is loaded: it was running
    try:
        s.call("_lc_probe")
        assert json.loads(s.marked("LCPROBE"))[5] is True
    finally:
        del sys.modules["lockcase.app"]


def _sim_board():
    import boards.sim.board as simboard

    sys.modules["board"] = simboard  # what boards/sim/start.py installs on the sim device
    return simboard


def test_hold_keeps_feeding_the_sim_boards_watchdog():
    from boards.sim.hw import WDT

    board = _sim_board()
    # the control: a 1 s watchdog nobody feeds resets the board
    hw = board.power_on(virtual=True)
    WDT(hw, 1000)
    hw.advance(5000)
    assert hw.reset_cause == "watchdog"

    hw = board.power_on(virtual=True)
    WDT(hw, 1000)
    s = Session("probe")
    s.call("_lc_hold")
    assert s.marked("LCHOLD") == "fed"
    hw.advance(5000)
    assert hw.reset_cause is None
    assert "_lc_holder" in s.g  # the timer outlives the call, for the rest of the session


def test_hold_without_a_running_watchdog_does_nothing():
    board = _sim_board()
    hw = board.power_on(virtual=True)
    s = Session("probe")
    s.call("_lc_hold")
    assert s.marked("LCHOLD") == "none"
    assert hw.timers == [] and "_lc_holder" not in s.g


class _ChipWDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class _ChipBoard:
    """A chip's board module as the hold sees it: its watchdog in _wdt, no HW."""

    def __init__(self, wdt):
        self._wdt = wdt


class _Machine:
    """machine.Timer of a port with virtual timers (id -1, ESP32) or without (RP2: ids >= 0)."""

    def __init__(self, virtual):
        self.timers = []
        machine = self

        class Timer:
            def __init__(self, tid):
                if tid < 0 and not virtual:
                    raise ValueError("no virtual timers")
                self.id = tid
                machine.timers.append(self)

            def init(self, mode, period, callback):
                self.mode, self.period, self.callback = mode, period, callback

        self.Timer = Timer


def test_hold_on_a_chip_feeds_board_wdt_from_a_periodic_machine_timer():
    saved = sys.modules.get("machine")
    try:
        for virtual, tid in ((True, -1), (False, 3)):
            w = _ChipWDT()
            m = _Machine(virtual)
            sys.modules["board"] = _ChipBoard(w)
            sys.modules["machine"] = m
            s = Session("probe")
            s.call("_lc_hold")
            assert s.marked("LCHOLD") == "fed" and w.feeds == 1
            (t,) = m.timers
            assert (t.id, t.mode, t.period) == (tid, 1, 500)
            t.callback(t)
            assert w.feeds == 2 and s.g["_lc_holder"] is t
    finally:
        if saved is None:
            del sys.modules["machine"]
        else:
            sys.modules["machine"] = saved


# -- files.py -------------------------------------------------------------------------------------
def test_put_in_pieces_then_hash_and_read_back():
    s = Session("files")
    data = bytes(range(256)) * 11  # more than one read buffer of _lc_read and of _lc_sha
    s.call("_lc_put", "pkg/sub/f.bin", b64(data[:2048]), 0)  # the folders are made
    s.call("_lc_put", "pkg/sub/f.bin", b64(data[2048:]), 1)  # appended
    assert read("pkg/sub/f.bin") == data
    s.call("_lc_put", "pkg/sub/f.bin", b64(b"again"), 0)  # rewritten
    assert read("pkg/sub/f.bin") == b"again"
    s.call("_lc_put", "pkg/sub/f.bin", b64(data), 0)

    s.call("_lc_put", "empty", "", 0)
    want = [binascii.hexlify(hashlib.sha256(x).digest()).decode() for x in (data, b"")]
    assert s.json("_lc_hashes", ["pkg/sub/f.bin", "empty", "nope"]) == want + [None]

    s.call("_lc_read", "pkg/sub/f.bin")
    got = b"".join(binascii.a2b_base64(x[6:]) for x in s.out if x.startswith("LCDATA"))
    assert got == data and json.loads(s.marked("LCJSON")) == len(data)
    s.call("_lc_read", "nope")
    assert s.out == ["LCJSON null"]
    s.g["_lc_rmtree"]("pkg")
    s.g["_lc_rmtree"]("empty")


def test_replace_rmtree_and_what_exists():
    s = Session("files")
    g = s.g
    write("new.txt", b"new")
    write("old.txt", b"old")
    g["_lc_replace"]("new.txt", "old.txt")  # over an existing file
    assert read("old.txt") == b"new" and not exists("new.txt")
    g["_lc_replace"]("old.txt", "a/b/c.txt")  # into folders that do not exist yet
    assert read("a/b/c.txt") == b"new"
    assert g["_lc_isdir"]("a/b") and not g["_lc_isdir"]("a/b/c.txt") and not g["_lc_isdir"]("zz")
    assert g["_lc_exists"]("a/b/c.txt") and g["_lc_exists"]("a") and not g["_lc_exists"]("zz")
    write("a/top.txt", b"x")
    g["_lc_rmtree"]("a")  # a tree
    assert not exists("a")
    write("f.txt", b"x")
    g["_lc_rmtree"]("f.txt")  # a file
    g["_lc_rmtree"]("zz")  # nothing: no error
    assert not exists("f.txt")


def _staged_update():
    """Live files of the previous build, the new build staged in .lc-stage with its plan."""
    for d in ("lib", "old", "old/deep", ".lc-stage", ".lc-stage/lib"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    write("main.py", b"main v1")
    write("lib/mod.mpy", b"mod v1")
    write("old/deep/gone.mpy", b"dropped by v2")
    write("manifest.json", b'{"version": "1"}')
    write(".lc-stage/main.py", b"main v2")
    write(".lc-stage/lib/mod.mpy", b"mod v2")
    write(".lc-stage/manifest.json", b'{"version": "2"}')
    plan = {"swap": ["lib/mod.mpy", "main.py"], "remove": ["old/deep/gone.mpy"]}
    write(".lc-stage/READY", json.dumps(plan).encode())


def test_swap_cut_short_by_a_reset_is_finished_by_the_next_run():
    _staged_update()
    s = Session("files")
    args = (".lc-stage/READY", ".lc-stage", "manifest.json")
    raises(OSError, s.call, "_lc_swap", *args, 1)  # a reset after the first move
    assert read("lib/mod.mpy") == b"mod v2" and read("main.py") == b"main v1"
    assert exists(".lc-stage/READY") and read("manifest.json") == b'{"version": "1"}'

    s = Session("files")  # the next session, after the reset
    assert s.json("_lc_swap", *args, -1) == 1  # the one move left
    assert read("main.py") == b"main v2" and read("lib/mod.mpy") == b"mod v2"
    assert read("manifest.json") == b'{"version": "2"}'
    assert not exists("old")  # the dropped file, and the folders it left empty
    assert not exists(".lc-stage")
    assert s.json("_lc_swap", *args, -1) == 0  # no plan: nothing to do
    for p in ("lib", "main.py", "manifest.json"):
        s.g["_lc_rmtree"](p)
