# config -> board -> app. Any failure ends in the lock off and a reset, never in a REPL with the
# coil in whatever state it had.
import asyncio
import sys

import board


def build():
    from lockcase import startup

    app = startup.build()
    startup.forget("lockcase.startup")
    return app


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
    if sys.path[0][:3] == "fw_":
        # boot.py switched to a release (docs/ota.md): its own main.py, first on the path, runs.
        # One that does not import ends here as any failure does, in a reset: the release is then
        # on trial and goes back to the previous firmware when its boots run out.
        try:
            import main as _release
        except Exception as exc:
            board.lock_safe()
            sys.print_exception(exc)
            board.fatal(exc)
        else:
            _release.main()
    else:
        main()
