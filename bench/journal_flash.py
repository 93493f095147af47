# Runs under MicroPython (bench/journal_bench.py starts it): the journal on a RAM littlefs the size
# and block size of each board's filesystem, with the firmware's files on it, sized from statvfs as
# a case sizes it at boot, then filled to its capacity with a busy case's events.
# Prints one JSON line per board.
# MicroPython code checked by the host's pyright (bench/ is host code): vfs, ramblock and
# time.ticks_* exist only inside MicroPython.
# pyright: reportMissingImports=false, reportAttributeAccessIssue=false
import gc
import json
import os
import sys
import time

import vfs

sys.path.append("tests/device")
from ramblock import Clock, RAMBlock  # noqa: E402
from typical_events import EVENTS  # noqa: E402

from lockcase.journal import Journal  # noqa: E402

MNT = "/jb"
# name, filesystem bytes: MicroPython's stock layouts (docs/memory.md, "Journal", for the sources).
BOARDS = (
    ("picow", 848 * 1024),  # ports/rp2/boards/RPI_PICO_W: MICROPY_HW_FLASH_STORAGE_BYTES
    ("esp32s3_4mb_960k", 0x0F0000),  # partitions-4MiB.csv with the 3 MiB app partition
    ("esp32s3_4mb", 0x200000),  # partitions-4MiB.csv, vfs at 0x200000
    ("esp32s3_8mb", 0x4F0000),  # partitions-8MiB.csv with the 3 MiB app partition
)


class Dev(RAMBlock):
    # Counts what a flash chip spends its time on: sector erases and bytes programmed.
    def __init__(self, bs, n):
        super().__init__(bs, n)
        self.erases = 0
        self.programmed = 0

    def writeblocks(self, block, buf, offset=None):
        self.programmed += len(buf)
        return super().writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        if op == 6:
            self.erases += 1
        return super().ioctl(op, arg)



def free():
    st = os.statvfs(MNT)
    return st[0] * st[3] if st[3] <= st[2] else 0


def firmware_files():
    # As in tests/device/mp_test_journal_size.py: the picow/esp32s3 build's 49 .mpy files in 54
    # blocks of 4 KiB (44 in one, 5 in two), and the small state files.
    os.mkdir(MNT + "/lib")
    for i in range(49):
        with open(f"{MNT}/lib/m{i}.mpy", "wb") as f:
            f.write(b"\x4d" * (600 + (i * 97) % 1800 if i < 44 else 4200 + (i * 131) % 1200))
    for name, n in (("config.json", 1500), ("seq.json", 20), ("safety.bin", 68)):
        with open(MNT + "/" + name, "wb") as f:
            f.write(b"{" * n)


def board(name, size):
    dev = Dev(4096, size // 4096)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MNT)
    firmware_files()
    clock = Clock()
    f0 = free()
    j = Journal(MNT + "/j", clock=clock)
    n = j.max_records
    e0, p0 = dev.erases, dev.programmed
    worst = 0
    t0 = time.ticks_us()
    for i in range(n):
        t = time.ticks_us()
        j.append(*EVENTS[i % len(EVENTS)])
        d = time.ticks_diff(time.ticks_us(), t)
        if d > worst:
            worst = d
    t_app = time.ticks_diff(time.ticks_us(), t0)
    out = {
        "board": name,
        "fs_bytes": size,
        "capacity_records": n,
        "segment_records": j.segment_records,
        "hours_at_1_per_10s": round(n * 10 / 3600, 1),
        "lost": j.lost,
        "faults": j.faults,
        "bytes_per_record": round((f0 - free()) / n, 1),
        "append_ms_mean": round(t_app / n / 1000, 3),
        "append_ms_max": round(worst / 1000, 2),
        "erases_per_append": round((dev.erases - e0) / n, 2),
        "bytes_programmed_per_append": round((dev.programmed - p0) / n),
        "free_bytes_when_full": free(),
    }
    # A reboot with the journal full: open reads every record.
    vfs.umount(MNT)
    vfs.mount(vfs.VfsLfs2(dev), MNT)
    j = None
    gc.collect()
    m = gc.mem_alloc()
    t0 = time.ticks_ms()
    j = Journal(MNT + "/j", clock=clock)
    out["open_full_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    out["journal_ram_bytes"] = gc.mem_alloc() - m
    # The link comes back: the sender's batches of 12, each acked.
    t0 = time.ticks_ms()
    got = 0
    while True:
        batch = list(j.records(0, 12))
        if not batch:
            break
        got += len(batch)
        j.ack(batch[-1]["id"])
    out["drain_ms_per_record"] = round(time.ticks_diff(time.ticks_ms(), t0) / max(got, 1), 3)
    out["delivered"] = got
    vfs.umount(MNT)
    return out


for b in BOARDS:
    print(json.dumps(board(*b)))
    gc.collect()
