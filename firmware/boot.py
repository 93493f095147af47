# Runs first after every reset. The lock output goes to its de-energized level before anything
# else can run or fail: a solenoid lock here is fail-secure, so "off" is "locked".
import board

board.lock_safe()


# Then the over-the-air update's switch (docs/ota.md): ota.json, replaced only by rename, names the
# firmware to run, "" for the one casectl deployed at the root or a release's directory ("fw_a",
# "fw_b"), which goes first on sys.path. A release on trial ("try": boots left) that has used its
# boots, is incomplete or whose board module fails goes back to the previous firmware ("prev"),
# noting why ("rb") for that firmware to report. This file and the root's board module are never
# replaced by an update, so this runs with the board module that just made the lock safe.
def _ota():
    import json
    import os
    import sys

    def back(p, why):
        prev = p.get("prev")
        if prev is None:  # a confirmed release that is unusable: the root's firmware, if it is there
            prev = ""
        return {"run": prev, "rel": p.get("prel", ""), "floor": p.get("pfloor", ""),
                "rb": {"rel": p.get("rel", ""), "why": why, "dir": p["run"]}}

    def save(p):
        with open("ota.tmp", "w") as f:
            f.write(json.dumps(p))
        os.rename("ota.tmp", "ota.json")

    try:
        with open("ota.json") as f:
            text = f.read()
    except OSError:  # no pointer: no update ever switched, the root's firmware runs
        return
    try:
        p = json.loads(text)
        run = p["run"]
    except Exception:  # unreadable: the root's firmware, or, where a confirmed release made room
        p = {}  # by removing it, the release that said so (its "confirmed" mark)
        p["run"] = run = ""
        try:
            os.stat("lockcase")
            return
        except OSError:
            for s in ("fw_a", "fw_b"):
                try:
                    os.stat(s + "/confirmed")
                    p["run"] = run = s
                    break
                except OSError:
                    pass
        if not run:
            return
    why = None
    if run:
        try:
            os.stat(run + "/main.py")  # written before the pointer ever names the directory
        except OSError:
            why = "incomplete"
    if why is None and "try" in p:
        if p["try"] <= 0:
            why = "not confirmed in %d boots" % p.get("n", 0)
        else:
            p["try"] -= 1
    if why is not None:
        p = back(p, why)
    if why is not None or "try" in p:
        save(p)
    run = p["run"]
    if not run:
        return
    sys.path.insert(0, run)
    first = sys.modules.pop("board")
    try:
        import board as b  # the release's own board module

        adopt = getattr(b, "adopt", None)
        if adopt is not None:
            adopt(first)  # a board whose module holds state (the sim's) carries it over
        b.lock_safe()
    except Exception as exc:
        sys.path.remove(run)
        sys.modules["board"] = first
        save(back(p, "board: %r" % (exc,)))
        first.fatal(exc)  # resets: the next boot runs the previous firmware


try:
    _ota()
except Exception as _e:  # a flash that cannot take the pointer: run what is first on the path
    print("ota: boot:", repr(_e))
del _ota
