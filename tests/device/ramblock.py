# RAM block device for vfs.VfsLfs2 (extended protocol: offset reads/writes, ioctl 6 erase) that can
# lose power: from a chosen program/erase operation on, writes fail and change nothing, as on a
# board whose supply died; revive() is the reboot, and the image is then mounted afresh.
#
# A failing operation reports -EIO by return value: MicroPython turns that into an littlefs error
# and then OSError(EIO) at the file call. Raising from writeblocks would longjmp through littlefs
# mid-commit and could leave its in-RAM state unsafe for the finalisers of open files; set
# raise_on_cut to test that path anyway.

_EIO = 5


class Rng:
    # xorshift32: the same sequence on every port and under CPython, so a failing seed replays.
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n if n > 0 else 0


class RAMBlock:
    def __init__(self, block_size=512, blocks=64):
        self.block_size = block_size
        self.blocks = blocks
        self.data = bytearray(b"\xff" * (block_size * blocks))
        self.mv = memoryview(self.data)
        self.ops = 0  # program and erase operations so far (each is a chance to lose power)
        self.cut_at = None
        self.dead = False
        self.torn = False
        self.raise_on_cut = False
        self.rng = Rng(1)
        self.on_cut = None  # called once, at the operation that loses power
        self.ignored = 0  # operations refused after the cut

    def cut_after(self, n, torn=False):
        """Lose power at the n-th program/erase operation from now (n >= 1)."""
        self.cut_at = self.ops + n
        self.torn = torn

    def cut_random(self, seed, within, torn=False):
        """Lose power at a random one of the next `within` operations, chosen by seed."""
        self.rng = Rng(seed)
        self.cut_after(1 + self.rng.below(within), torn)

    def revive(self):
        """Power back on: writes work again; the image is whatever reached it."""
        self.dead = False
        self.cut_at = None

    def _fails(self):
        self.ops += 1
        if self.dead:
            self.ignored += 1
            return True
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.dead = True
            if self.on_cut:
                self.on_cut()
            return True
        return False

    def _cut(self):
        if self.raise_on_cut:
            raise OSError(_EIO)
        return -_EIO

    def readblocks(self, block, buf, offset=0):
        a = block * self.block_size + offset
        buf[:] = self.mv[a : a + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # simple protocol: erase the blocks first
            for i in range(len(buf) // self.block_size):
                r = self.ioctl(6, block + i)
                if r:
                    return r
            offset = 0
        a = block * self.block_size + offset
        n = len(buf)
        if self._fails():
            if self.torn and self.ignored == 0:
                # Torn programming: the supply died part-way, so only a prefix reached the cells.
                k = self.rng.below(n)
                self.mv[a : a + k] = buf[:k]
            return self._cut()
        self.mv[a : a + n] = buf
        return 0

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            a = arg * self.block_size
            n = self.block_size
            if self._fails():
                if self.torn and self.ignored == 0:
                    k = self.rng.below(n)
                    self.mv[a : a + k] = b"\xff" * k
                return self._cut()
            self.mv[a : a + n] = b"\xff" * n
            return 0
        return 0  # 1 init, 2 deinit, 3 sync: nothing to do in RAM


class Clock:
    # A journal's clock that moves on by `step` seconds at every reading: timestamps replay exactly.
    def __init__(self, t0=1767225600, step=10):
        self.t = t0
        self.step = step

    def __call__(self):
        self.t += self.step
        return self.t
