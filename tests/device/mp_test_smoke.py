# Smoke test of the harness itself: the interpreter is the real MicroPython.
import sys


def test_runs_on_micropython():
    assert sys.implementation.name == "micropython"


def test_failure_is_reported():
    try:
        assert 1 == 2, "boom"
    except AssertionError:
        return
    raise Exception("assert did not raise")
