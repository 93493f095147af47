# Boots the firmware on the sim board, as a chip would: mount the flash, run boot.py, run main.py.
# micropython boards/sim/start.py --flash case.img [--ctl 127.0.0.1:7700] [--config cfg.json]
# Compiled to start.mpy inside a compiled sim build, it runs as `micropython -m start ...` with
# MICROPYPATH=.frozen:<build> and takes every module from that build (the heap measurements).
import os
import sys


def _repo():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    if not here.startswith("/"):
        here = os.getcwd() + "/" + here
    return here.rsplit("/", 2)[0]


def _args(argv):
    opts = {"flash": "sim-case.img", "ctl": None, "config": None, "fw": None, "heap-report": None}
    i = 1
    while i < len(argv):
        k = argv[i].lstrip("-")
        if k in opts and i + 1 < len(argv):
            opts[k] = argv[i + 1]
            i += 2
        else:
            raise SystemExit("usage: start.py --flash IMG [--ctl HOST:PORT] [--config FILE] [--fw DIR]"
                             " [--heap-report 1]")
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


def main():
    opts = _args(sys.argv)
    flash = opts["flash"]
    if not flash.startswith("/"):
        flash = os.getcwd() + "/" + flash
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
    _search_path(opts)  # once the paths above, relative to the host's directory, are resolved

    import board

    board.OPTIONS["reset_cause"] = cause
    board.OPTIONS["ctl"] = opts["ctl"]
    board.OPTIONS["heap_report"] = bool(opts["heap-report"])

    board.end_process_on_reset(cause_file)
    from boards.sim import flash as simflash

    simflash.mount(flash)
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
