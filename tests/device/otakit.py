# Test kit for the case's over-the-air update under MicroPython (tests/device/mp_test_ota*.py): a
# littlefs on a RAM block device that can lose power (ramblock.py), the signed test releases of
# tests/vectors/ota_v1.json, a stand-in for the cloud client that Ota drives, a cloud that serves
# a release's chunks, and boot.py run as a chip runs it.
import binascii
import json
import os
import sys

import vfs
from ramblock import RAMBlock

MNT = "/ota_t"
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_ROOT = _HERE.rsplit("/", 2)[0] if _HERE.count("/") >= 2 else _HERE + "/../.."


def vectors():
    with open(_ROOT + "/tests/vectors/ota_v1.json") as f:
        return json.loads(f.read())


V = vectors()


def release(name):
    for r in V["releases"]:
        if r["name"] == name:
            return r
    raise KeyError(name)


class Flash:
    """A littlefs on RAM, mounted at MNT and made the current directory, as a chip's flash is."""

    def __init__(self, blocks=160, block_size=512):
        self.dev = RAMBlock(block_size, blocks)
        vfs.VfsLfs2.mkfs(self.dev)
        self.mount()

    def mount(self):
        try:
            os.chdir("/")
            vfs.umount(MNT)
        except OSError:
            pass
        vfs.mount(vfs.VfsLfs2(self.dev), MNT)
        os.chdir(MNT)

    def reboot(self):
        """The power comes back: writes work again, and the image is mounted afresh."""
        import gc

        gc.collect()
        self.dev.revive()
        self.mount()

    def write(self, path, text):
        with open(path, "w") as f:
            f.write(text)

    def read(self, path):
        with open(path) as f:
            return f.read()

    def exists(self, path):
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def close(self):
        os.chdir("/")
        try:
            vfs.umount(MNT)
        except OSError:
            pass


def provision(flash, key=None, pace_ms=20, boots=3, confirm_s=600):
    cfg = {"board": "sim", "case_id": "c1", "store_id": "s1", "ota_key": key or V["key"],
           "ota": {"pace_ms": pace_ms, "boots": boots, "confirm_s": confirm_s}}
    flash.write("config.json", json.dumps(cfg))


class Lock:
    def __init__(self):
        self.state = "locked"
        self.door = False
        self.alarm = False

    def door_open(self):
        return self.door

    def alarms(self):
        return self.alarm


class Entry:
    state = "idle"


class Bus:
    def __init__(self):
        self.events = []

    def emit(self, kind, **d):
        self.events.append((kind, d))


class Link:
    def __init__(self):
        self.sent = []
        self.up = True

    def publish(self, topic, payload):
        if not self.up:
            return False
        self.sent.append((topic, payload))
        return True


class Codec:
    n = 0

    def sign(self, topic, body):
        Codec.n += 1
        body["id"] = "m%d" % Codec.n
        return json.dumps(body)


class Client:
    """What lockcase.ota.update.Ota uses of lockcase.uplink.client.CloudClient."""

    def __init__(self):
        self.lock = Lock()
        self.entry = Entry()
        self.bus = Bus()
        self.link = Link()
        self.codec = Codec()
        self.topics = {"req": "lockcase/v1/s1/c1/req"}
        self.greeted = False
        self.synced = True
        self.up_ms = 0
        self.app = None
        self._pending = None
        self._held = None

    def available(self):
        return self.synced and self.link.up

    def uptime(self):
        return self.up_ms

    def fw(self, st=None):
        return [d for k, d in self.bus.events if k == "fw" and (st is None or d["st"] == st)]


class Board:
    NAME = "sim"

    def __init__(self):
        self.resets = []

    def reset(self, why):
        self.resets.append(why)


class Cloud:
    """Serves one release's manifest and files for fwget, as the cloud's chunk server does."""

    def __init__(self, rel, chunk=512):
        self.rel = rel
        self.man = rel["manifest"].encode()
        self.names = [f[0] for f in json.loads(self.man)["files"]]
        self.chunk = chunk
        self.served = 0
        self.deny = None

    def cmd(self):
        return {"rel": self.rel["rel"], "size": len(self.man), "sig": self.rel["sig"]}

    def answer(self, client, ota, now=0):
        """Answer the fwgets the case published since the last call; True if there was one."""
        got = False
        while client.link.sent:
            _, payload = client.link.sent.pop(0)
            b = json.loads(payload)
            if b["t"] != "fwget":
                continue
            got = True
            if self.deny:
                ota.reply({"t": "deny", "re": b["id"], "why": self.deny}, now)
                continue
            f, off = b["f"], b["off"]
            if f < -1 or f >= len(self.names) or off < 0:
                ota.reply({"t": "deny", "re": b["id"], "why": "bad_range"}, now)
                continue
            data = self.man if f < 0 else binascii.a2b_base64(self.rel["files"][self.names[f]])
            part = data[off : off + self.chunk]
            self.served += len(part)
            ota.reply({"t": "fwdata", "re": b["id"], "d": binascii.b2a_base64(part).decode().strip()}, now)
        return got


def run(ota, client, cloud, steps=5000, now=0, dt=30):
    """Step the update with the cloud answering, until it has nothing to ask or do; returns now."""
    for _ in range(steps):
        now += dt
        if not ota.step(now):
            return now
        cloud.answer(client, ota, now)
        if ota.dl.get("st") == "staged" or ota.board.resets:
            return now
    return now


def boot(flash=None, src=None):
    """Run boot.py (or the file src) as a chip does after a reset, with a stand-in root board
    module; returns the board module that is `board` afterwards, and leaves sys.path and
    sys.modules as they were. root.first says whether the root's lock_safe() came before anything
    else of the boot (no release on the path, no other board module, the pointer unread)."""
    root = Board()
    root.safe = 0
    root.fatals = []
    root.first = None
    path = list(sys.path)

    def lock_safe():
        if root.first is None:
            root.first = (root.safe == 0 and sys.path == path and sys.modules.get("board") is root
                          and "otaboot" not in sys.modules)
        root.safe += 1

    def fatal(exc):
        root.fatals.append(exc)

    root.lock_safe = lock_safe
    root.fatal = fatal
    saved = sys.modules.get("board")
    sys.modules["board"] = root
    try:
        with open(src or _ROOT + "/firmware/boot.py") as f:
            code = f.read()
        exec(code, {"__name__": "boot"})
        now = sys.modules.get("board")
        first = sys.path[0]
    finally:
        sys.path[:] = path
        if saved is None:
            sys.modules.pop("board", None)
        else:
            sys.modules["board"] = saved
    return root, now, first
