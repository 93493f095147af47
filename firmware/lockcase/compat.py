# Platform quirks live here so the logic modules import under CPython too (for coverage and
# hypothesis) and run unchanged on MicroPython.
try:
    from micropython import const  # noqa: F401
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import ticks_add, ticks_diff, ticks_ms  # noqa: F401
except ImportError:  # CPython: ticks_ms never wraps there, so plain arithmetic is exact.
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


def epoch():
    # Wall-clock seconds; 0-based boards (no RTC set yet) still give a monotonic-ish value.
    import time

    return int(time.time())
