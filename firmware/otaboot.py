# The over-the-air update's switch (docs/ota.md), run by boot.py (run()) after the lock is safe,
# and only where an update ever switched (ota.json exists). Like boot.py, it is deployed by
# casectl and never replaced by an update: a release carries its own copy, which never runs.
#
# ota.json, replaced only by rename, names the firmware to run: "" the one casectl deployed at the
# root, or a release's directory ("fw_a", "fw_b"), which goes first on sys.path. A release on trial
# ("try": boots left) that has used its boots, is incomplete or whose board module fails goes back
# to the previous firmware ("prev"), with a note of why ("rb") for that firmware to report; the
# anti-rollback floor and the releases refused before are kept. A confirmed release goes back only
# to a root firmware that is still there, and only after its board module failed 3 boots in a row.
import json
import os
import sys


def _root():
    try:
        os.stat("lockcase")
        return True
    except OSError:
        return False


def back(p, why):
    # The rollback record, for the boot's switch and the running release's own check
    # (lockcase/ota/update.py) alike: one definition, so both roll back the same way.
    b = {"run": p.get("prev") or "", "rel": p.get("prel", ""), "floor": p.get("floor", ""),
         "rb": {"rel": p.get("rel", ""), "why": why, "dir": p["run"], "trial": "try" in p}}
    if p.get("bad"):
        b["bad"] = p["bad"]
    return b


def _save(p):
    with open("ota.tmp", "w") as f:
        f.write(json.dumps(p))
    os.rename("ota.tmp", "ota.json")


def _switch():
    try:
        with open("ota.json") as f:
            p = json.loads(f.read())
        run = p["run"]
    except OSError:
        return  # no pointer: the root's firmware
    except Exception:  # unreadable: the root's firmware, or, where a confirmed release made room by
        if _root():  # removing it, the release that said so (its "confirmed" mark)
            return
        p = {}
        p["run"] = run = ""
        for s in ("fw_a", "fw_b"):
            try:
                os.stat(s + "/confirmed")
                p["run"] = run = s
                break
            except OSError:
                pass
        if not run:
            return
    trial = "try" in p
    why = None
    if run:
        try:
            os.stat(run + "/main.py")  # written before the pointer ever names the directory
        except OSError:
            why = "incomplete"
    if why is None and trial:
        if p["try"] <= 0:
            why = "not confirmed in %d boots" % p.get("n", 0)
        else:
            p["try"] -= 1
    if why is not None and (trial or _root()):
        p = back(p, why)
    if why is not None or trial:
        _save(p)
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
        why = "board: %r" % (exc,)
        if "try" in p:
            p = back(p, why)
        else:  # a confirmed release: a few more boots before it is given up
            p["fail"] = p.get("fail", 0) + 1
            if p["fail"] >= 3 and _root():
                p = back(p, why)
        _save(p)
        first.fatal(exc)  # resets: the next boot runs the previous firmware, or tries again
        return
    if p.pop("fail", None):
        _save(p)


def run():
    try:
        _switch()
    except Exception as e:  # a flash that cannot take the pointer: run what is first on the path
        print("ota: boot:", repr(e))
    sys.modules.pop("otaboot", None)  # its code goes once boot.py drops its name
