# The sim board's boot path, as a chip's boot ROM runs it: mount the flash, run boot.py, run
# main.py. Every sim process boots here (sim/process.py's SimCase, sim/device.py's SimDevice, the
# benches; docs/sim.md):
#   micropython boards/sim/start.py --flash case.img [--ctl 127.0.0.1:7700] [--config cfg.json]
#       [--fw DIR | --fw flash] [--hands PORT] [--heap-report 1] [--uart 1]
# Where the firmware comes from:
# - the checkout's firmware/ (or --fw DIR) from source, with boards/sim/board.py as `board`;
# - a compiled sim build: compiled to start.mpy inside it, this runs as `micropython -m start ...`
#   with MICROPYPATH=.frozen:<build> and takes every module from that build (the heap
#   measurements);
# - `--fw flash`: what is deployed on the flash (boot.py, main.py, board.py, lockcase/), as a chip
#   runs it: the sim device on a pseudo-terminal that casectl and mpremote talk to. Without a
#   firmware on the flash this returns, and `micropython -i` leaves the REPL, as a blank board does.
import os
import sys


def _repo():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    if not here.startswith("/"):
        here = os.getcwd() + "/" + here
    return here.rsplit("/", 2)[0]


def _args(argv):
    opts = {"flash": "sim-case.img", "ctl": None, "config": None, "fw": None, "heap-report": None,
            "hands": None, "uart": None}
    i = 1
    while i < len(argv):
        k = argv[i].lstrip("-")
        if k in opts and i + 1 < len(argv):
            opts[k] = argv[i + 1]
            i += 2
        else:
            raise SystemExit("usage: start.py --flash IMG [--ctl HOST:PORT] [--config FILE]"
                             " [--fw DIR|flash] [--hands PORT] [--heap-report 1] [--uart 1]")
    return opts


def _search_path(opts):
    if __file__.endswith(".mpy"):
        _compiled_path()
        return
    repo = _repo()
    fw = opts["fw"] or repo + "/firmware"
    for p in (repo + "/build/device-lib", repo, fw, repo + "/boards/sim"):
        if p not in sys.path:
            sys.path.insert(0, p)


def _compiled_path():
    # The build is the whole firmware, as on a chip: nothing from the checkout joins the path.
    # As in tests/device/simharness.py: the current directory (the flash, once mounted) leaves the
    # path, and each directory is mounted under a short name, since every module's __file__ is
    # heap and a chip's are short.
    import vfs

    if "" in sys.path:
        sys.path.remove("")
    for i, p in enumerate(sys.path):
        if p.startswith("/") and len(p) > 4:
            vfs.mount(vfs.VfsPosix(p), "/p%d" % i)
            sys.path[i] = "/p%d" % i
    _sim_rom(vfs)


def _sim_rom(vfs):
    # The heap harness (tests/host/heapcloud.py) passes the sim's own parts (boards/sim/*: the
    # emulated PN532, I2C bus, LCD, keypad matrix, control socket) as a ROMFS image. It is read
    # into memory from the C library's malloc, outside the GC heap, and mounted first on the path:
    # their bytecode then runs in place, as frozen code does, instead of taking the heap being
    # measured, which a chip (it has none of these parts) never gives them. Their objects and
    # interned names are still heap. docs/memory.md, "The production case".
    path = os.getenv("LOCKCASE_SIM_ROM")
    if not path:
        return
    import ffi
    import uctypes

    n = os.stat(path)[6]
    buf = uctypes.bytearray_at(ffi.open("libc.so.6").func("p", "malloc", "I")(n), n)
    with open(path, "rb") as f:
        f.readinto(buf)
    vfs.mount(vfs.VfsRom(buf), "/r")
    sys.path.insert(0, "/r")
    print("HEAP sim parts from ROM: %d bytes outside the GC heap" % n)


def _firmware_on_flash(flash):
    """Mounts the flash and says whether a firmware is deployed on it. The flash comes first on
    the path, as on a chip; the checkout only lends the sim's emulated parts (boards.sim, imported
    from it before the mount: they are the board's hardware, not its firmware)."""
    repo = _repo()
    sys.path[:] = ["/flash", repo, ".frozen"]
    from boards.sim import flash as simflash

    simflash.mount(flash)
    open(flash + ".ready", "w").close()  # sim/device.py waits for it: the board is booting
    for name in ("boot.py", "main.py"):
        try:
            os.stat(name)
        except OSError:
            return False
    return True


def main():
    opts = _args(sys.argv)
    flash = opts["flash"]
    if not flash.startswith("/"):
        flash = os.getcwd() + "/" + flash
    on_flash = opts["fw"] == "flash"
    cause_file = flash + ".cause"
    cause = "power_on"
    try:
        with open(cause_file) as f:
            cause = f.read().strip() or "power_on"
        os.remove(cause_file)
    except OSError:
        pass
    cfg_text = None
    if opts["config"]:
        with open(opts["config"]) as f:
            cfg_text = f.read()
    if on_flash:
        # board.py is the flash's own (casectl deploys it): the flash is mounted first.
        if not _firmware_on_flash(flash):
            print("sim board: MicroPython with no firmware on the flash")
            return
    else:
        _search_path(opts)  # once the paths above, relative to the host's directory, are resolved

    import board

    board.OPTIONS["reset_cause"] = cause
    board.OPTIONS["ctl"] = opts["ctl"]
    board.OPTIONS["heap_report"] = bool(opts["heap-report"])

    board.end_process_on_reset(cause_file)
    if opts["uart"]:
        # stdin is the board's USB serial (sim/device.py's pty): Ctrl-C on it stops the firmware
        board.HW.watch_console()
    if not on_flash:
        from boards.sim import flash as simflash

        simflash.mount(flash)
    if opts["hands"]:
        from boards.sim import hands

        hands.serve(board, int(opts["hands"]))
    if cfg_text is not None:
        try:
            os.stat("config.json")
        except OSError:
            with open("config.json", "w") as f:
                f.write(cfg_text)
    import boot  # noqa: F401
    import main as firmware_main

    firmware_main.main()


main()
