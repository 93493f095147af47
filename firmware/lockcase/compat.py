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


def forget(name):
    """Unload a module that is no longer needed, so the GC can reclaim its code (a chip's heap
    holds the bytecode of every module imported from its filesystem)."""
    import sys

    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and attr in parent.__dict__:
        delattr(parent, attr)


def epoch():
    # Wall-clock seconds; 0-based boards (no RTC set yet) still give a monotonic-ish value.
    import time

    return int(time.time())


def json_whole(text):
    """json.loads for files a power cut may have truncated. MicroPython 1.25's parser returns what
    it read so far ('{"a": 1' gives {'a': 1}); a cut-off file must read as corrupt on every
    version, never as a shorter document. Raises ValueError."""
    import json

    data = text.encode() if isinstance(text, str) else bytes(text)
    depth = 0
    in_str = esc = False
    for c in data:  # bytes iterate as ints: no allocation per character
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B or c == 0x5B:  # { [
            depth += 1
        elif c == 0x7D or c == 0x5D:  # } ]
            depth -= 1
    if depth or in_str:
        raise ValueError("truncated JSON")
    return json.loads(data)
