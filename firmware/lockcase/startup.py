# Boot-time assembly: config -> board -> app. Runs once; main.py drops this module and the config
# validator afterwards, so the RAM their code takes is free for the running case.
import gc
import sys

import board


def _config():
    from lockcase import config

    error = None
    try:
        cfg = config.load()
    except config.NotProvisioned:
        cfg = config.defaults()
    except config.ConfigError as exc:
        cfg = config.defaults()
        error = str(exc)
    if cfg["board"] != board.NAME and cfg["provisioned"]:
        error = "config is for board %s, this is %s" % (cfg["board"], board.NAME)
        cfg = config.defaults()
    return cfg, error


def build():
    cfg, error = _config()
    forget("lockcase.config")
    gc.collect()  # the validator's code and the raw JSON go before the app's modules load
    if error:
        print(error)
    from lockcase.app import App
    from lockcase.journal import Journal

    hw = board.create(cfg)
    try:
        clock = getattr(hw, "epoch", None)  # the board's RTC where it has its own idea of time
        # Sized from the flash filesystem's statvfs (journal.size_for, docs/memory.md).
        journal = Journal(clock=clock) if clock else Journal()
    except Exception as exc:  # a broken filesystem must not keep the lock from working
        print("journal unavailable:", exc)
        journal = None
    return App(hw, cfg, journal, reset_cause=board.reset_cause(), config_error=error)


def forget(name):
    # Unload a module that is no longer needed, so the GC can reclaim its code.
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and attr in parent.__dict__:
        delattr(parent, attr)
