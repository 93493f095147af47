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
    main()
