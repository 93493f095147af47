# Drives the real firmware (boot.py, main.build(), App.step) on the sim board with a virtual
# clock, from a JSON script on stdin, and prints what an observer of the pins would have seen.
# Used by tests/host/test_safety_props.py (hypothesis generates the scripts under CPython).
# A test harness, not a boot path of the sim: a live sim case boots through boards/sim/start.py
# (App.run's loop on the board's real clock); here the harness owns the clock and steps the app.
#
# Script on stdin, one JSON document a line (streamed: the harness must not hold the whole script
# in the heap it measures): {"cfg": {...config.json...} or null, "flash_path": ..., "resume": {...}
# after a reset}, then one action a line, [op, arg]:
#   ["key", "5"]  ["door", 0|1]  ["tamper", 0|1]  ["wait", ms]  ["reset", cause]  ["stall", ms]
#   ["corrupt_config", 0]
#   ["cut", what]: the power fails at the next moment `what` happens, wherever the firmware is:
#     "lock" when the coil is energized, else when the display's first line starts with `what`
#     (e.g. "Wrong PIN": right after that screen appears). The action in progress is abandoned.
# A reset ends the process, as it ends everything in a chip's RAM: the harness prints
# "@@RESET {...}" (where to resume) and the runner starts a new process on the same flash image.
# Output lines: "@@T [t, name, value]" output and input changes, "@@E [t, kind, data]" events,
# "@@B t" boots, and last "@@OUT {...}" with heap figures.
import gc
import json
import os
import sys

import vfs

# A chip imports from a short path ("/lockcase/app.mpy"); this host's may be long, and every
# module's __file__ is heap. Each search directory is mounted under a short name, so the figures
# do not depend on where the repository was checked out.
# Run with -m (from its .mpy), the harness has the current directory first on the path: imports
# from it would be relative, and break once the harness changes into the flash.
if "" in sys.path:
    sys.path.remove("")
for _i, _p in enumerate(sys.path):
    if _p.startswith("/") and len(_p) > 4:
        vfs.mount(vfs.VfsPosix(_p), "/p%d" % _i)
        sys.path[_i] = "/p%d" % _i

try:
    import board  # a compiled build puts the sim's board.mpy on the path
except ImportError:  # running from source: install the sim board as `board`, as start.py does
    _here = __file__ if __file__.startswith("/") else os.getcwd() + "/" + __file__
    sys.path.insert(0, _here.rsplit("/", 3)[0] + "/boards/sim")
    import board
from boards.sim.flash import FileBlockDev  # noqa: E402
from boards.sim.hw import PERIOD  # noqa: E402
from lockcase import events as _events  # noqa: E402

TICK = 10
EPOCH0 = 1_800_000_000  # the virtual RTC at the start of every run: replays are byte-identical


class Reset(Exception):
    pass


class Run:
    def __init__(self, script):
        self.script = script
        resume = script.get("resume") or {}
        self.t = resume.get("t", 0)  # virtual ms since the start of the run, across resets
        self.boots = resume.get("boots", 0)
        self.cause = resume.get("cause", "power_on")
        self.inputs = resume.get("inputs") or {"door": 0, "tamper": 0}
        self.index = resume.get("index", 0)  # the action to go on with
        self.left = resume.get("left", 0)  # ticks left of a wait that a reset cut short
        # The flash lives in a file, as in the live sim: it is not the chip's RAM.
        self.bdev = FileBlockDev(script["flash_path"], blocks=64)
        if not resume:
            vfs.VfsLfs2.mkfs(self.bdev)
        self.app = None
        self.cut = None  # what the next power cut waits for (the "cut" action)
        self.start = PERIOD - 7000  # cross the ticks wrap in every run
        real_emit = _events.Bus.emit
        run = self

        def emit(bus, kind, **data):
            print("@@E " + json.dumps((run.t, kind, data)))
            real_emit(bus, kind, **data)

        _events.Bus.emit = emit

    def mount(self):
        vfs.mount(vfs.VfsLfs2(self.bdev), "/flash")

    def boot(self):
        self.mount()
        os.chdir("/flash")
        hw = board.power_on(virtual=True, start_ms=self.start + self.t, reset_cause=self.cause,
                            epoch_s=EPOCH0 + self.t // 1000)
        hw.inputs.update(self.inputs)
        hw.listeners.append(lambda t, name, value: self.out(name, value))
        hw.on_reset = self._on_reset
        self.boots += 1
        print("@@B %d" % self.t)
        self.out("boot", self.cause)
        board.lock_safe()
        self.live_before_fw = self.live()  # the harness and the emulated hardware
        import main

        self.app = main.build()
        self.app.display.defer = True  # as App.run() sets it: the screen is sent at the end of a step
        self.live_boot = self.live()
        self.hw = hw
        self.wdt = self.app.board.wdt(self.app.cfg["wdt_ms"])
        self.pending_reset = None

    def out(self, name, value):
        # Streamed, not kept: the harness must not eat the heap the firmware is measured in.
        print("@@T " + json.dumps((self.t, name, value)))
        c = self.cut
        if c is not None and ((c == "lock" and name == "lock" and value) or
                              (name == "display" and c != "lock" and value and value[0].startswith(c))):
            self.cut = None
            # SystemExit, not an Exception: no `except Exception` in the firmware may catch the end
            # of its power (and no class of the harness's own costs the heap it measures).
            raise SystemExit(c)

    def live(self):
        gc.collect()
        return gc.mem_alloc()

    def _on_reset(self, cause):
        self.pending_reset = cause

    def tick(self, run_app=True):
        """One tick of the virtual clock; raises Reset when the chip resets during it."""
        self.hw.advance(TICK)
        self.t += TICK
        if self.pending_reset:
            raise Reset(self.pending_reset)
        if run_app:
            now = self.hw.ticks_ms()
            self.app.step(now)
            self.wdt.feed()

    def ticks(self, n, run_app=True):
        for _ in range(max(1, n)):
            self.tick(run_app)

    def play(self):
        cfg = self.script.get("cfg")
        if cfg is not None and not self.script.get("resume"):
            self.mount()
            with open("/flash/config.json", "w") as f:
                f.write(json.dumps(cfg))
            vfs.umount("/flash")
        self.boot()
        if self.left:
            self.ticks(self.left)
        for _ in range(self.index):
            sys.stdin.readline()
        while True:
            line = sys.stdin.readline()
            if not line.strip():
                break
            op, arg = json.loads(line)
            self.index += 1
            if op == "key":
                self.app.board.keys.tap(arg, 50)
                self.ticks(12)
            elif op in ("door", "tamper"):
                self.inputs[op] = arg
                self.hw.inputs[op] = arg
                self.out("in:" + op, arg)
                self.ticks(1)
            elif op == "wait":
                for i in range(max(1, arg // TICK)):
                    self.left = max(1, arg // TICK) - i - 1
                    self.tick()
                self.left = 0
            elif op == "stall":
                # The loop hangs until the watchdog resets the chip; the new boot runs normally.
                # Marked in the trace: the firmware sees no input while it is stalled.
                self.out("stall", 1)
                try:
                    self.ticks(arg // TICK, run_app=False)
                finally:
                    self.out("stall", 0)
            elif op == "reset":
                self.hw.reset(arg)
                raise Reset(arg)
            elif op == "cut":
                self.cut = arg
            elif op == "corrupt_config":
                with open("config.json", "w") as f:
                    f.write('{"unlock_ms": ')
        self.ticks(20)

    def go(self):
        try:
            self.play()
            resume = None
        except (Reset, SystemExit) as r:
            # Everything in RAM ends here; the flash file and where to go on are all that stay.
            # A power cut abandons the action it interrupted (a wait's remaining ticks too).
            cut = isinstance(r, SystemExit)
            resume = {"t": self.t, "boots": self.boots, "cause": "power_on" if cut else r.args[0],
                      "inputs": self.inputs, "index": self.index, "left": 0 if cut else self.left}
        vfs.umount("/flash")
        out = {
            "heap_live_end": self.live(),
            "heap_live_boot": self.live_boot,
            "heap_live_before_firmware": self.live_before_fw,
        }
        print("@@OUT " + json.dumps(out))
        if resume:
            print("@@RESET " + json.dumps(resume))


if __name__ == "__main__":
    Run(json.loads(sys.stdin.readline())).go()
