# Boots the firmware on the sim board, as a chip would: mount the flash, run boot.py, run main.py.
# micropython boards/sim/start.py --flash case.img [--ctl 127.0.0.1:7700] [--config cfg.json]
import os
import sys


def _repo():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    if not here.startswith("/"):
        here = os.getcwd() + "/" + here
    return here.rsplit("/", 2)[0]


def _args(argv):
    opts = {"flash": "sim-case.img", "ctl": None, "config": None, "fw": None}
    i = 1
    while i < len(argv):
        k = argv[i].lstrip("-")
        if k in opts and i + 1 < len(argv):
            opts[k] = argv[i + 1]
            i += 2
        else:
            raise SystemExit("usage: start.py --flash IMG [--ctl HOST:PORT] [--config FILE] [--fw DIR]")
    return opts


def main():
    opts = _args(sys.argv)
    repo = _repo()
    fw = opts["fw"] or repo + "/firmware"
    for p in (repo + "/build/device-lib", repo, fw, repo + "/boards/sim"):
        if p not in sys.path:
            sys.path.insert(0, p)
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

    import board

    board.OPTIONS["reset_cause"] = cause
    board.OPTIONS["ctl"] = opts["ctl"]

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
