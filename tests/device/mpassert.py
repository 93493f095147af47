# Assertions for the firmware tests that run inside MicroPython (no pytest there).
import asyncio


def raises(exc, fn, *args):
    """Call fn(*args); return the `exc` it raised, or fail the test."""
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError(exc.__name__ + " not raised")


def raises_async(exc, coro):
    """Run a coroutine to completion; return the `exc` it raised, or fail the test."""
    return raises(exc, asyncio.run, coro)
