# A test module's own flash root: the firmware keeps its files (safety.bin, seq.json, journal/) in
# the current directory, as on a case, so a test that boots one works in a fresh directory.
import os


def chdir_scratch(name):
    """Make /tmp/lockcase-NAME-PID (created if needed) the current directory; returns it."""
    d = "/tmp/lockcase-%s-%d" % (name, os.getpid()) if hasattr(os, "getpid") else "/tmp/lockcase-" + name
    try:
        os.mkdir(d)
    except OSError:
        pass
    os.chdir(d)
    return d
