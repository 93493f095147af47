# The case's side of an over-the-air update (docs/ota.md): download a release over the cloud link
# in chunks (req fwget -> rep fwdata), streamed to flash and hashed as it goes, check the manifest's
# signature and every file before anything changes, stage the release in its own directory, switch
# (ota.json, then a reset: boot.py does the rest) when the case is quiet, and confirm it on trial
# or roll it back. Loaded by the cloud client only while there is something to do; step() returns
# False once there is nothing left, and the client drops these modules.
import binascii
import hashlib
import os

from lockcase.compat import const, forget, ticks_add, ticks_diff
from lockcase.ota import slots
from lockcase.ota.slots import DOWNLOAD, POINTER

_CHUNK = const(512)
_REQ_TIMEOUT_MS = const(10000)  # an unanswered fwget (a dropped link) is asked again
_DENIED_MS = const(60000)  # "no_release": the rollout may open its wave later
_READ = const(512)  # bytes read from flash per slice when re-hashing after a reset
_MANIFEST = "ota_man.bin"  # the manifest's bytes as received (its signature covers exactly these)
_INDEX = "ota_idx.txt"  # one "path size sha256" line a file, written once the manifest checks out
_MAX_BAD = const(4)  # releases remembered as rolled back here, refused if offered again
_MAX_OOM = const(3)  # heap failures in a row (no job done, no chunk written between) before giving up


def _settings():
    # config.json was validated at boot; only the OTA keys are read, raw, while an update runs.
    raw = slots.read("config.json")
    o = raw.get("ota") or {}
    return (raw.get("ota_key") or "", o.get("pace_ms", 250), o.get("boots", 3), o.get("confirm_s", 600))


def _hex_ok(s, n):
    return type(s) is str and len(s) == n and all(c in "0123456789abcdef" for c in s)


class Ota:
    def __init__(self, client, board=None):
        self.c = client
        self.board = board  # the board module (reset); imported when None
        self.key, self.pace, self.boots, self.confirm_ms = _settings()
        self.confirm_ms *= 1000
        self.ptr = slots.read(POINTER)
        self.dl = slots.read(DOWNLOAD)
        self._req = None  # (id, deadline) of the fwget in flight
        self._due = None  # when the next fwget may go
        self._work = None  # a generator doing a long job in slices (signature, re-hash)
        self._f = None  # the file being written
        self._h = hashlib.sha256()  # its sha256 so far
        self._entry = ("", 0, "")  # (path, size, sha256 hex) of the file being fetched
        self._pos = 0  # bytes of it on flash
        self._fi = -1  # its index; -1: the manifest
        self._done = 0  # bytes fetched so far (progress), of self._total
        self._total = 0
        self._pct = -1
        self._files = 0
        self._redo = False  # the heap failed mid-job: start again from the flash (_lost)
        self._oom = 0  # heap failures since the last job done or chunk written
        run = self.ptr.get("run")
        if self.dl and (self.dl.get("slot") == run or self.dl.get("slot") == self.ptr.get("prev")):
            slots.remove(DOWNLOAD)  # switched (the cut came before it was removed) or stale
            self.dl = {}
        rb = self.ptr.get("rb")
        if rb:
            self._rolled_back(rb)
        if self.dl.get("st") == "dl":
            self._resume()

    # -- the cloud's fw command -----------------------------------------------------------------
    def command(self, body, now):
        """cmd fw -> (ok, err) for its ack."""
        rel = body["rel"]
        dl = self.dl
        if rel == "":  # cancel: a download, or a staged release not switched yet
            if dl:
                self._drop()
            return True, None
        if not self.key:
            return False, "bad_key"
        from lockcase.ota.manifest import MAX_BYTES, rel_ok

        if not rel_ok(rel) or not 1 <= body["size"] <= MAX_BYTES or not _hex_ok(body["sig"], 128):
            return False, "refused: bad fw command"
        p = self.ptr
        if rel == p.get("rel") and p.get("run"):
            return True, None  # running it already (its confirmed event is in the journal)
        if "try" in p:
            return False, "busy"  # a switched release is on trial: one change at a time
        if rel in (p.get("bad") or ()):
            return False, "refused: rolled back"
        if p.get("run") in slots.SLOTS:  # a confirmed release runs ("try" is answered above):
            slots.prune_root()  # the root's firmware goes, should a cut have stopped its removal
        if dl.get("rel") == rel:
            return True, None  # in progress or staged: the same command again changes nothing
        if dl:
            self._drop()  # a newer release replaces the one in progress
        slot = slots.staging(p)
        slots.rmtree(slot)
        slots.makedirs(slot)
        self.dl = dl = {"rel": rel, "size": body["size"], "sig": body["sig"], "slot": slot, "st": "dl"}
        slots.remove(_MANIFEST)
        slots.remove(_INDEX)
        slots.save(dl, DOWNLOAD)
        self._resume()
        return True, None

    # -- replies ------------------------------------------------------------------------------
    def reply(self, body, now):
        """A rep; True when it answers our fwget (consumed here)."""
        r = self._req
        if r is None or body["re"] != r[0]:
            return False
        self._req = None
        try:
            self._reply(body, now)
        except OSError as exc:
            self._flash_failed(exc)
        except MemoryError:
            self._lost()
        return True

    def _reply(self, body, now):
        if body["t"] == "fwdata":
            try:
                data = binascii.a2b_base64(body["d"])
            except ValueError:
                self._fail("failed", "bad chunk")
                return
            self._data(data)
        elif body["t"] == "deny":
            if body["why"] == "no_release":  # not (or no longer) offered to us: ask again later
                self._due = ticks_add(now, _DENIED_MS)
            else:
                self._fail("failed", "cloud: " + body["why"])

    def _flash_failed(self, exc):
        # The flash refused (full, worn): a download is given up and said so, never a crash of
        # the app loop over it (main.py would reset, and the resumed download fail again).
        if self.dl:
            self._fail("failed", "flash: %r" % (exc,))

    # -- stepping -------------------------------------------------------------------------------
    def step(self, now):
        """Called by the client's step; False once there is nothing left to do."""
        try:
            return self._step(now)
        except OSError as exc:
            self._flash_failed(exc)
            return bool(self.dl) or "try" in self.ptr  # a trial tries again at the next step
        except MemoryError:
            self._lost()
            return True

    def _lost(self):
        # Out of heap in the middle of a slice or a chunk: the job in hand ended with it (a
        # generator that raised is finished, a file may be left unopened), so it is never taken as
        # done. The download goes on from the flash at a later step, as after a reset; a chunk
        # asked for before is no longer taken.
        self._work = None
        self._req = None
        self._redo = self.dl.get("st") == "dl"
        self._oom += 1
        if self._oom >= _MAX_OOM and self.dl:  # this heap cannot hold it: said, and counted
            self._oom = 0
            self._fail("failed", "out of memory")  # (should this fail too, a later step resumes)

    def _step(self, now):
        if "try" in self.ptr:
            self._trial(now)
            return True
        dl = self.dl
        if not dl:
            return False
        if not self._quiet():
            return True
        if dl.get("st") == "staged":
            self._switch()
            return True
        if self._redo:
            self._redo = False  # (set again should the heap fail once more)
            self._resume()
            return True
        w = self._work
        if w is not None:
            try:
                next(w)
            except StopIteration as e:
                self._oom = 0
                if self._work is w:  # (the job may have started the next one)
                    self._work = None
                self._worked(e.value)
            return True
        r = self._req
        if r is not None and ticks_diff(now, r[1]) < 0:
            return True
        if self._due is not None and ticks_diff(now, self._due) < 0:
            return True
        if not self.c.available():
            return True
        self._due = ticks_add(now, self.pace)
        self._ask(now)
        return True

    def _quiet(self):
        # Never beside a shopper or staff: no flow on the keypad, no request to the cloud waiting,
        # the lock closed with the door shut, no alarm (docs/ota.md, "Pacing").
        c = self.c
        lk = c.lock
        e = c.entry
        if e is not None and e.state not in ("idle", "offline"):
            return False
        return (lk.state == "locked" and not lk.door_open() and not lk.alarms()
                and c._pending is None and c._held is None)

    def _ask(self, now):
        c = self.c
        body = {"t": "fwget", "rel": self.dl["rel"], "f": self._fi, "off": self._pos}
        topic = c.topics["req"]
        if c.link.publish(topic, c.codec.sign(topic, body)):
            self._req = (body["id"], ticks_add(now, _REQ_TIMEOUT_MS))

    # -- download -------------------------------------------------------------------------------
    def _resume(self):
        # Where the download stands, from the flash alone: the manifest's bytes so far, then, once
        # its index exists, each file in turn (its bytes on flash re-hashed before it goes on).
        self._close()
        self._files = 0
        self._total = self.dl["size"]
        self._done = 0
        try:
            with open(_INDEX) as f:
                for line in f:
                    self._files += 1
                    self._total += int(line.split()[1])
        except OSError:
            self._fi = -1
            self._pos = _size(_MANIFEST)
            if self._pos > self.dl["size"]:
                slots.remove(_MANIFEST)
                self._pos = 0
            self._done = self._pos
            if self._pos == self.dl["size"]:
                self._work = self._check_manifest()
            else:
                self._progress()
            return
        self._done = self.dl["size"]
        self._open(0)

    def _open(self, i):
        # Enter file i of the index (or the end: staged).
        self._close()
        self._fi = i
        if i >= self._files:
            self._staged()
            return
        with open(_INDEX) as f:
            for _ in range(i + 1):
                line = f.readline()
        path, size, sha = line.split()
        self._entry = (path, int(size), sha)
        full = self.dl["slot"] + "/" + path
        d = full.rfind("/")
        slots.makedirs(full[:d])
        n = _size(full)
        if n > int(size):
            slots.remove(full)
            n = 0
        self._pos = n
        self._h = hashlib.sha256()
        self._work = self._rehash(full, n)

    def _rehash(self, full, n):
        # The bytes of this file already on flash (a reset or a lost link came mid-file), in slices.
        if n:
            buf = bytearray(_READ)
            with open(full, "rb") as f:
                left = n
                while left:
                    k = f.readinto(buf)
                    if not k:
                        break
                    k = k if k < left else left
                    self._h.update(memoryview(buf)[:k])
                    left -= k
                    yield
        self._done += n
        return "file"

    def _worked(self, what):
        if what == "file":
            path, size, _ = self._entry
            if self._pos == size:
                self._finish()
            else:
                self._f = open(self.dl["slot"] + "/" + path, "ab")
                self._progress()
        elif what is not None:  # the manifest's verdict
            self._fail(what[0], what[1])

    def _data(self, data):
        n = len(data)
        dl = self.dl
        if self._fi < 0:
            want = dl["size"]
            if n == 0 or self._pos + n > want:
                self._fail("failed", "manifest size")
                return
            with open(_MANIFEST, "ab") as f:
                f.write(data)
            self._pos += n
            self._done += n
            self._oom = 0
            if self._pos == want:
                self._work = self._check_manifest()
            self._progress()
            return
        path, size, _ = self._entry
        if n == 0 or self._pos + n > size:
            self._fail("failed", "size " + path)
            return
        f = self._f
        if f is None:
            return
        try:
            f.write(data)
            f.flush()  # on flash before it counts: a reset resumes from what is there
        except OSError as exc:
            self._fail("failed", "flash: %s" % exc)
            return
        self._h.update(data)
        self._pos += n
        self._done += n
        self._oom = 0
        self._progress()
        if self._pos == size:
            self._finish()

    def _finish(self):
        path, _, sha = self._entry
        self._close()
        if binascii.hexlify(self._h.digest()).decode() != sha:
            self._fail("failed", "hash " + path)
            return
        self._open(self._fi + 1)

    def _check_manifest(self):
        # Generator: the signature over the manifest's bytes first (nothing of them is parsed
        # before), then what it says. Returns None (accepted: the index is written) or
        # (state, why) to refuse or fail.
        # Each module's loading, the parse, and the index's reading back are slices of their own:
        # one step of the app loop does one of them (bench/ota_bench.py: the longest step).
        from lockcase.ota import ed25519

        yield
        dl = self.dl
        ok = yield from ed25519.verify_steps(binascii.unhexlify(self.key), binascii.unhexlify(dl["sig"]),
                                             _chunks(_MANIFEST))
        forget("lockcase.ota.ed25519")
        del ed25519  # this frame's reference was the last: its code and constants go now
        if not ok:
            return ("refused", "bad signature")
        from lockcase import FLOOR, VERSION
        from lockcase.ota import manifest

        yield
        bs, free = slots.space()
        need = [8 * bs]  # littlefs: a file takes whole blocks; directories their metadata pairs

        # The entries go to the index as the parse reads them (no list of them in RAM); the index
        # counts only once renamed, below, after every check.
        def each(path, size, sha):
            need[0] += (size + bs - 1) // bs * bs
            out.write("%s %d %s\n" % (path, size, sha))

        try:
            with open(_MANIFEST, "rb") as f, open(_INDEX + ".tmp", "w") as out:
                m = manifest.parse(f, each)
            floor = manifest.highest(self.ptr.get("floor", ""), FLOOR)
            why = manifest.check(m, dl["rel"], self._board().NAME, VERSION, floor)
        except ValueError as exc:
            why = "manifest: %s" % exc
        if why:
            slots.remove(_INDEX + ".tmp")
            return ("refused", why)
        if free is not None and free < need[0]:
            slots.remove(_INDEX + ".tmp")
            return ("failed", "no space: %d KB needed, %d free" % (need[0] // 1024, free // 1024))
        dl["ver"], dl["floor"] = m["version"], m["floor"]
        slots.save(dl, DOWNLOAD)  # before the index: a resumed download always has them
        os.rename(_INDEX + ".tmp", _INDEX)
        forget("lockcase.ota.manifest")
        yield
        self._resume()
        return None

    def _progress(self):
        # A journaled `fw` event at every 10 % (docs/ota.md), so the cloud sees it across resets.
        # Before the manifest is in, the files' sizes are not known: 0 % until then.
        pct = 0 if self._fi < 0 else self._done * 100 // (self._total or 1)
        pct -= pct % 10
        if pct != self._pct and pct < 100:
            self._pct = pct
            self._emit("downloading", pct=pct)

    def _staged(self):
        self.dl["st"] = "staged"
        slots.save(self.dl, DOWNLOAD)
        slots.remove(_INDEX)
        slots.remove(_MANIFEST)
        self._emit("staged")

    def _fail(self, st, why):
        self._emit(st, why=why)
        self._drop()

    def _drop(self):
        self._close()
        self._work = None
        self._req = None
        slot = self.dl.get("slot")
        slots.remove(DOWNLOAD)
        slots.remove(_INDEX)
        slots.remove(_MANIFEST)
        # what a power cut or a flash error left half written (never read): the index being
        # parsed into, the download's record being saved
        slots.remove(_INDEX + ".tmp")
        slots.remove(DOWNLOAD[:-5] + ".tmp")
        if slot and slot not in (self.ptr.get("run"), self.ptr.get("prev")):
            slots.rmtree(slot)
        self.dl = {}

    def _close(self):
        f = self._f
        if f is not None:
            self._f = None
            try:
                f.close()
            except OSError:
                pass

    # -- switch, trial, confirm, roll back ------------------------------------------------------
    def _switch(self):
        # The case is quiet (the door shut, no grant, no alarm): the pointer names the release,
        # on trial for `boots` boots, with the running firmware kept to go back to; then a reset.
        dl, p = self.dl, self.ptr
        self._emit("switching")
        slots.remove(_INDEX)  # (_staged removed them, unless a cut came first: not needed now)
        slots.remove(_MANIFEST)
        new = {"run": dl["slot"], "rel": dl["rel"], "ver": dl.get("ver", ""), "floor": p.get("floor", ""),
               "nfloor": dl.get("floor", ""), "prev": p.get("run", ""), "prel": p.get("rel", ""),
               "pfloor": p.get("floor", ""), "try": self.boots, "n": self.boots, "t": self.confirm_ms // 1000}
        if p.get("bad"):
            new["bad"] = p["bad"]
        slots.save(new, POINTER)
        slots.remove(DOWNLOAD)
        self.ptr = new
        self.dl = {}
        self._reset()

    def _trial(self, now):
        p = self.ptr
        c = self.c
        failed = self._selftest()
        if c.greeted and failed is None:
            # the floor only ever rises: a release with a lower floor (or none) keeps the old one
            from lockcase.ota.manifest import highest

            done = {"run": p["run"], "rel": p["rel"], "ver": p.get("ver", ""),
                    "floor": highest(p.get("floor", ""), p.get("nfloor", ""))}
            if p.get("bad"):
                done["bad"] = p["bad"]
            # the mark boot.py looks for should the pointer ever be unreadable with the root's
            # firmware gone: written before the pointer says confirmed, so never missing after
            with open(p["run"] + "/confirmed", "w"):
                pass
            slots.save(done, POINTER)
            self.ptr = done
            self._emit("confirmed")
            prev = p.get("prev")
            if prev in slots.SLOTS:
                slots.remove(prev + "/confirmed")  # first: a half-removed slot is never a fallback
                slots.rmtree(prev)  # kept until now, to go back to
            elif prev == "":
                slots.prune_root()
            return
        if c.uptime() >= p.get("t", self.confirm_ms // 1000) * 1000 and self._quiet():
            # (never a reset beside a shopper, an open door, a grant or an alarm: as the switch)
            why = "not confirmed in %d s" % p.get("t", 0)
            if c.greeted:  # it reached the cloud: the self-test is what failed
                why = "self-test: %s" % failed
            slots.save(_back(p, why), POINTER)
            self._reset()

    def _selftest(self):
        # What the release must show before it is kept, besides reaching the cloud (the caller):
        # it booted into a running app with its journal, its safety state and a lock it can drive.
        # None when it passes, else what failed. A dead display is the hardware's, not the
        # release's: the previous firmware has it too, and it must not keep a case from updating.
        app = self.c.app
        if app is None:
            return None
        if not app.ready:
            return "app not running"
        if app.journal is None:
            return "no journal"
        for f in app.faults:
            if f[0] != "display":
                return "fault %s" % f[0]
        if app.lock.state != "locked":
            return "lock " + app.lock.state
        return None

    def _rolled_back(self, rb):
        # The previous firmware runs again: report why, and never take that release again.
        p = self.ptr
        self._emit("rolled_back", rel=rb.get("rel", ""), why=rb.get("why", ""))
        if rb.get("trial", True):  # a confirmed release that failed later (the flash) may come again
            bad = [b for b in (p.get("bad") or []) if b != rb.get("rel")]
            bad.append(rb.get("rel", ""))
            p["bad"] = bad[-_MAX_BAD:]
        del p["rb"]
        slots.save(p, POINTER)
        d = rb.get("dir")
        if d in slots.SLOTS and d != p.get("run"):
            slots.rmtree(d)

    def _board(self):
        b = self.board
        if b is None:
            import board as b
        return b

    def _reset(self):
        b = self._board()
        print("ota: reset to switch firmware")
        reset = getattr(b, "reset", None)  # a deliberate reset where the board has one (the sim)
        if reset is not None:
            reset("ota")
        else:
            b.fatal(RuntimeError("ota switch"))

    def _emit(self, st, **d):
        if "rel" not in d:
            d["rel"] = self.dl.get("rel") or self.ptr.get("rel", "")
        d["st"] = st
        self.c.bus.emit("fw", **d)

    def unload(self):
        self._close()
        for name in ("lockcase.ota.update", "lockcase.ota.manifest", "lockcase.ota.ed25519",
                     "lockcase.ota.slots", "lockcase.ota"):
            forget(name)


def no_cloud(board):
    """At boot, with no cloud link: a release on trial rolls back at once (it could never confirm)."""
    p = slots.read(POINTER)
    if "try" in p:
        slots.save(_back(p, "no cloud link"), POINTER)
        print("ota: a release on trial without its cloud link: back to the previous firmware")
        reset = getattr(board, "reset", None)
        if reset is not None:
            reset("ota")
        else:
            board.fatal(RuntimeError("ota: no cloud link"))


def _back(p, why):
    # The boot's own rollback record (otaboot.py, beside boot.py, or the release's copy of it):
    # importing it no longer switches anything, and one definition keeps both paths the same.
    from otaboot import back

    return back(p, why)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _chunks(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(_READ)
            if not b:
                return
            yield b
