# heap: 1m
# Power cuts at random points of an over-the-air update (docs/ota.md, "Power cuts"), on littlefs
# over a RAM block device whose writes fail from the cut on (ramblock.py), sometimes tearing the
# write in progress: download, manifest check, staging, the switch, the trial boots and the
# confirmation. After every cut the case boots again (boot.py as a chip runs it) and the update
# goes on. Each boot must make the lock safe first and run a complete firmware (the root's, or the
# release with every file as signed), and every run must end with the release confirmed (or,
# never here with one cut, rolled back).
import binascii
import json
import os

from otakit import Board, Client, Cloud, Flash, boot, provision, release, run

from lockcase.ota import slots
from lockcase.ota.update import Ota

GOOD = release("good")
FILES = {p: binascii.a2b_base64(b) for p, b in GOOD["files"].items()}


def _complete(slot):
    for path, data in FILES.items():
        try:
            with open(slot + "/" + path, "rb") as f:
                if f.read() != data:
                    return False
        except OSError:
            return False
    return True


def _update(fl, log):
    """One boot of the case through the update; returns 'confirmed', 'rolled_back' or None
    (the power went, or the case reset to switch)."""
    root, now, first = boot()
    assert root.safe == 1 and root.first, "the lock was not made safe first"
    if first == "fw_a":
        assert now.SAFE == [1], "the release's board did not keep the lock safe"
        assert _complete("fw_a"), "booted an incomplete release"
    p = slots.read(slots.POINTER)
    log.append((first, p.get("run"), p.get("try")))
    if p.get("bad"):
        return "rolled_back"
    if p.get("run") == "fw_a" and "try" not in p and first == "fw_a":
        return "confirmed"
    c = Client()
    c.greeted = True
    ota = Ota(c, Board())
    if "try" not in p and not ota.dl:
        ok, err = ota.command(Cloud(GOOD).cmd(), 0)
        assert ok, err
    cloud = Cloud(GOOD)
    now = run(ota, c, cloud)
    for i in range(3):
        if ota.board.resets or not ota.step(now + i):
            break
    if ota.board.resets:
        return None
    p = slots.read(slots.POINTER)
    if p.get("run") == "fw_a" and "try" not in p:
        return None  # confirmed: the next boot says so
    return None


def _one(seed, within, torn):
    fl = Flash()
    try:
        provision(fl)
        fl.dev.cut_random(seed, within, torn)
        log = []
        for _ in range(12):
            try:
                end = _update(fl, log)
            except OSError:
                end = None  # the power went in the middle of it
            if end:
                return end, fl.dev.ops, log
            fl.reboot()
        raise AssertionError("seed %d: no end in 12 boots: %r" % (seed, log))
    finally:
        fl.close()


def _clean_ops():
    end, ops, _ = _one(1, 1 << 30, False)  # a cut that never comes
    assert end == "confirmed"
    return ops


def test_an_update_without_a_cut_confirms():
    assert _clean_ops() > 100


def test_power_cuts_anywhere_in_an_update_end_confirmed_with_a_complete_firmware_on_every_boot():
    within = _clean_ops()
    ends = {}
    for seed in range(1, 61):
        end, _, log = _one(seed, within, torn=seed % 2 == 0)
        assert end == "confirmed", (seed, log)
        ends[end] = ends.get(end, 0) + 1
    assert ends == {"confirmed": 60}, ends


def test_a_cut_while_the_pointer_is_replaced_leaves_the_old_or_the_new_one():
    # every write of the switch, one by one: the pointer reads as before or after, never torn
    within = _clean_ops()
    for n in range(1, 40):
        fl = Flash()
        try:
            provision(fl)
            c = Client()
            ota = Ota(c, Board())
            cloud = Cloud(GOOD)
            ota.command(cloud.cmd(), 0)
            run(ota, c, cloud)
            assert ota.dl["st"] == "staged"
            fl.dev.cut_after(n, torn=n % 2 == 1)
            try:
                ota.step(1)
            except OSError:
                pass
            fl.reboot()
            p = slots.read(slots.POINTER)
            assert p == {} or (p["run"] == "fw_a" and p["try"] == 3), (n, p)
            root, now, first = boot()
            assert root.safe == 1
            assert first != "fw_a" or _complete("fw_a"), n
            if p == {}:
                # not switched: the staged release is still there, and switches at the next chance
                c2 = Client()
                ota2 = Ota(c2, Board())
                assert ota2.dl.get("st") == "staged", (n, ota2.dl)
                ota2.step(2)
                assert ota2.board.resets == ["ota"]
        finally:
            fl.close()
    assert within > 0


def test_events_of_an_interrupted_update_are_in_order_and_say_where_it_was():
    # a reset mid-download resumes from the bytes on flash: progress goes on, never back to 0
    fl = Flash()
    try:
        provision(fl)
        c = Client()
        ota = Ota(c, Board())
        cloud = Cloud(GOOD)
        ota.command(cloud.cmd(), 0)
        for i in range(40):
            ota.step(i * 30)
            cloud.answer(c, ota, i * 30)
        served = cloud.served
        assert ota.dl["st"] == "dl" and served > 0
        ota._close()  # the reset (what the file had is on flash: each chunk was flushed)
        c2 = Client()
        ota2 = Ota(c2, Board())
        cloud2 = Cloud(GOOD)
        run(ota2, c2, cloud2)
        assert ota2.dl["st"] == "staged"
        total = len(GOOD["manifest"]) + sum(len(b) for b in FILES.values())
        assert served + cloud2.served < total + 512 * 2, (served, cloud2.served, total)  # resumed
        pcts = [d["pct"] for d in c2.fw("downloading")]
        assert pcts and pcts[0] > 0, pcts
    finally:
        fl.close()


def test_the_pointer_file_is_small_json():
    fl = Flash()
    try:
        slots.save({"run": "fw_a", "rel": "r2", "try": 3})
        with open(slots.POINTER) as f:
            assert json.loads(f.read())["try"] == 3
    finally:
        fl.close()


# The root's firmware as casectl deployed it: the boot kit, and the lockcase/ the first confirmed
# release removes to make room (docs/ota.md, "Flash space").
ROOT_KIT = ("boot.py", "main.py", "board.mpy")
ROOT_FW = ("lockcase/__init__.mpy", "lockcase/app.mpy", "lockcase/lock.mpy", "lockcase/uplink/client.mpy",
           "lockcase/uplink/codec.mpy", "lockcase/entry.mpy")


def _deploy_root(fl):
    for path in ROOT_KIT + ROOT_FW:
        if "/" in path:
            slots.makedirs(path.rsplit("/", 1)[0])
        fl.write(path, "deployed " + path)


def _root_whole_or_gone(fl):
    # boot.py goes back to the root's firmware whenever its lockcase/ is there: never half of it
    have = [p for p in ROOT_FW if fl.exists(p)]
    return have == [] and not fl.exists("lockcase") or have == list(ROOT_FW)


def test_a_cut_anywhere_in_the_confirmation_leaves_the_roots_firmware_whole_or_gone_and_the_room_is_made():
    # every write of the confirmation one by one (the pointer, the mark, the root's lockcase/
    # removed): after the cut the case boots the release, the root's firmware is whole or gone,
    # and by the time the next release downloads its room is free again
    for n in range(1, 40):
        fl = Flash()
        try:
            _deploy_root(fl)
            provision(fl)
            c = Client()
            ota = Ota(c, Board())
            cloud = Cloud(GOOD)
            ota.command(cloud.cmd(), 0)
            run(ota, c, cloud)
            ota.step(1)
            assert ota.board.resets == ["ota"]
            _, _, first = boot()  # the trial boot
            assert first == "fw_a"
            c = Client()
            c.greeted = True
            ota = Ota(c, Board())
            fl.dev.cut_after(n, torn=n % 2 == 1)
            try:
                ota.step(0)  # confirms
            except OSError:
                pass
            fl.reboot()
            assert _root_whole_or_gone(fl), (n, [p for p in ROOT_FW if fl.exists(p)])
            root, _, first = boot()
            assert root.first and first == "fw_a" and _complete("fw_a"), n
            if "try" in slots.read(slots.POINTER):  # the cut came before the pointer: confirmed now
                c = Client()
                c.greeted = True
                Ota(c, Board()).step(0)
            p = slots.read(slots.POINTER)
            assert p["run"] == "fw_a" and "try" not in p, (n, p)
            assert _root_whole_or_gone(fl), n
            ota = Ota(Client(), Board())  # the next release: the root's blocks are free for it
            assert ota.command(Cloud(release("good3")).cmd(), 0) == (True, None)
            assert [d for d in os.listdir() if d.startswith("lockcase")] == [], n
            for kit in ROOT_KIT:
                assert fl.exists(kit), (n, kit)
            fl.write(slots.POINTER, "{")  # were the pointer ever unreadable: the release, the root being gone
            _, _, first = boot()
            assert first == "fw_a", n
        finally:
            fl.close()
