# Runs first after every reset. The lock output goes to its de-energized level before anything
# else can run or fail: a solenoid lock here is fail-secure, so "off" is "locked".
import board

board.lock_safe()
# Then, where an over-the-air update ever switched, its switch (otaboot.py, compiled, deployed
# beside this file and never replaced by an update; docs/ota.md). A firmware never updated reads
# no more than this: every name in this file is interned at each boot.
import os  # noqa: E402

try:
    os.stat("ota.json")
    import otaboot  # noqa: E402

    otaboot.run()
    del otaboot
except OSError:
    pass
except ImportError as _e:  # a root deployed without it: the root's firmware runs
    print("ota:", _e)
