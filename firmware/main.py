# config -> board -> app. Any failure ends in the lock off and a reset, never in a REPL with the
# coil in whatever state it had.
import asyncio
import sys

import board

from lockcase import config
from lockcase.journal import Journal


def build():
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
    if error:
        print(error)
    from lockcase.app import App

    hw = board.create(cfg)
    try:
        journal = Journal()
    except Exception as exc:  # a broken filesystem must not keep the lock from working
        print("journal unavailable:", exc)
        journal = None
    return App(hw, cfg, journal, reset_cause=board.reset_cause(), config_error=error)


def main():
    try:
        app = build()
        asyncio.run(app.run())
    except KeyboardInterrupt:
        board.lock_safe()
        raise
    except Exception as exc:
        board.lock_safe()
        sys.print_exception(exc)
        board.fatal(exc)


if __name__ == "__main__":
    main()
