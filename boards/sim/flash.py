# A file-backed block device, so the sim's LittleFS "flash" survives restarts of the process the
# way a real chip's flash survives a reset, and tests can read the raw image back.
import os

BLOCK = 4096
# The Pico W's filesystem (MicroPython's MICROPY_HW_FLASH_STORAGE_BYTES, 848 KiB), the smaller of
# the two boards': the journal sizes itself from the filesystem, so the sim keeps what a case keeps.
BLOCKS = 212


class FileBlockDev:
    def __init__(self, path, blocks=BLOCKS):
        self.path = path
        try:
            size = os.stat(path)[6]
        except OSError:
            size = 0
        self.fresh = size == 0
        if self.fresh:
            blank = b"\xff" * BLOCK  # block by block: the heap is as small as a chip's
            with open(path, "wb") as f:
                for _ in range(blocks):
                    f.write(blank)
            size = BLOCK * blocks
        self.blocks = size // BLOCK
        self.f = open(path, "r+b")

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:
            off = 0
        self.f.seek(n * BLOCK + off)
        self.f.write(buf)
        self.f.flush()  # a killed process must leave what LittleFS believes is written

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:  # erase: LittleFS never relies on erased contents with this driver
            return 0
        return None


def mount(path, at="/flash"):
    import vfs

    bdev = FileBlockDev(path)
    if bdev.fresh:
        vfs.VfsLfs2.mkfs(bdev)
    try:
        fs = vfs.VfsLfs2(bdev)
    except OSError:
        # An unreadable image is what a factory-fresh part looks like: format it, boot unprovisioned.
        vfs.VfsLfs2.mkfs(bdev)
        fs = vfs.VfsLfs2(bdev)
    vfs.mount(fs, at)
    os.chdir(at)
    return bdev
