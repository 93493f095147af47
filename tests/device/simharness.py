# Drives the real firmware (boot.py, main.build(), App.step) on the sim board with a virtual
# clock, from a JSON script on stdin, and prints what an observer of the pins would have seen.
# Used by tests/host/test_safety_props.py (hypothesis generates the scripts under CPython).
#
# Script: {"cfg": {...config.json...} or null, "actions": [[op, arg], ...]}
#   ["key", "5"]  ["door", 0|1]  ["tamper", 0|1]  ["wait", ms]  ["reset", cause]  ["stall", ms]
#   ["corrupt_config", 0]
# Output lines: "@@T [t, name, value]" output and input changes, "@@E [t, kind, data]" events,
# "@@B t" boots, and last "@@OUT {...}" with heap figures. The flash image is left in the file
# named by "flash_path".
import gc
import json
import os
import sys

import vfs

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
KEEP = ("lockcase.events", "lockcase.compat")


class Run:
    def __init__(self, script):
        self.script = script
        self.t = 0  # virtual ms since the start of the run, across resets
        self.boots = 0
        # The flash lives in a file, as in the live sim: it is not the chip's RAM.
        self.bdev = FileBlockDev(script["flash_path"], blocks=64)
        vfs.VfsLfs2.mkfs(self.bdev)
        self.mounted = False
        self.app = None
        self.cause = "power_on"
        self.inputs = {"door": 0, "tamper": 0}
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
        # A reset clears a chip's RAM: the firmware that ran before must not hold heap while the
        # next one boots.
        self.app = self.wdt = self.hw = None
        gc.collect()
        if self.mounted:
            vfs.umount("/flash")
        self.mount()
        os.chdir("/flash")
        self.mounted = True
        hw = board.power_on(virtual=True, start_ms=self.start + self.t, reset_cause=self.cause)
        hw.inputs.update(self.inputs)
        hw.listeners.append(lambda t, name, value: self.out(name, value))
        hw.on_reset = self._on_reset
        self.boots += 1
        print("@@B %d" % self.t)
        self.out("boot", self.cause)
        board.lock_safe()
        if self.boots == 1:
            self.live_before_fw = self.live()  # the harness and the emulated hardware
        import main

        self.app = main.build()
        if self.boots == 1:
            self.live_boot = self.live()
        self.hw = hw
        self.wdt = self.app.board.wdt(self.app.cfg["wdt_ms"])
        self.pending_reset = None

    def out(self, name, value):
        # Streamed, not kept: the harness must not eat the heap the firmware is measured in.
        print("@@T " + json.dumps((self.t, name, value)))

    def live(self):
        gc.collect()
        return gc.mem_alloc()

    def _on_reset(self, cause):
        self.pending_reset = cause

    def tick(self, run_app=True):
        """One tick of the virtual clock; True when the chip reset during it."""
        self.hw.advance(TICK)
        self.t += TICK
        if self.pending_reset:
            self.cause = self.pending_reset
            return True
        if run_app:
            now = self.hw.ticks_ms()
            self.app.step(now)
            self.wdt.feed()
        return False

    def ticks(self, n, run_app=True, until_reset=False):
        for _ in range(max(1, n)):
            if self.tick(run_app):
                yield from self.reboot()
                if until_reset:
                    return
            else:
                yield

    def reboot(self):
        # A reset clears a chip's RAM: the old firmware, objects and loaded code, is dropped
        # before the new one boots. (The sim's emulated hardware, and the events module the
        # harness listens on, stay: they are not the chip's RAM.)
        self.app = self.wdt = self.hw = None
        for name in list(sys.modules):
            if name in ("main", "boot") or (name.startswith("lockcase.") and name not in KEEP):
                del sys.modules[name]
                pkg, _, attr = name.rpartition(".")
                if pkg in sys.modules and attr in sys.modules[pkg].__dict__:
                    delattr(sys.modules[pkg], attr)
        yield
        self.boot()
        yield

    def steps(self):
        # One yield per tick of the virtual clock: go() runs them all, a caller may stop between
        # two ticks to look at the heap.
        cfg = self.script.get("cfg")
        if cfg is not None:
            self.mount()
            with open("/flash/config.json", "w") as f:
                f.write(json.dumps(cfg))
            vfs.umount("/flash")
        self.boot()
        yield
        for op, arg in self.script["actions"]:
            if op == "key":
                self.app.board.keys.tap(arg, 50)
                yield from self.ticks(12)
            elif op in ("door", "tamper"):
                self.inputs[op] = arg
                self.hw.inputs[op] = arg
                self.out("in:" + op, arg)
                yield from self.ticks(1)
            elif op == "wait":
                yield from self.ticks(arg // TICK)
            elif op == "stall":
                # The loop hangs until the watchdog resets the chip; the new boot runs normally.
                # Marked in the trace: the firmware sees no input while it is stalled.
                self.out("stall", 1)
                yield from self.ticks(arg // TICK, run_app=False, until_reset=True)
                self.out("stall", 0)
            elif op == "reset":
                self.cause = arg
                self.hw.reset(arg)
                yield from self.reboot()
            elif op == "corrupt_config":
                with open("config.json", "w") as f:
                    f.write('{"unlock_ms": ')
        yield from self.ticks(20)
        vfs.umount("/flash")
        self.mounted = False

    def go(self):
        for _ in self.steps():
            pass
        self.report()

    def report(self):
        out = {
            "heap_live_end": self.live(),
            "heap_live_boot": self.live_boot,
            "heap_live_before_firmware": self.live_before_fw,
        }
        print("@@OUT " + json.dumps(out))


if __name__ == "__main__":
    Run(json.loads(sys.stdin.read())).go()
