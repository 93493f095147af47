# The transfer helper: casectl runs this file once per session in the raw REPL, whose globals
# persist, so every later step is one short exec of a call such as _lc_put('a.mpy', b64, 1).
# Answers are printed after a marker ('LCJSON' + JSON; file data as 'LCDATA' + base64 lines) so
# stray console output cannot be taken for them. Everything reads and writes in small pieces: the
# heap of an interrupted firmware may be fragmented, with no large free block.
import binascii
import gc
import hashlib
import json
import os


def _lc_sha(p):
    # sha256 of a file as hex, None if there is no such file
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()


def _lc_hashes(ps):
    print('LCJSON' + json.dumps([_lc_sha(p) for p in ps]))


def _lc_isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False


def _lc_exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _lc_mkdirs(p):
    # the folders of file path p
    cur = ''
    for d in p.split('/')[:-1]:
        cur = cur + '/' + d if cur else d
        if d and not _lc_isdir(cur):
            os.mkdir(cur)


def _lc_put(p, b, a):
    # write (a false) or append (a true) the base64 text b to file p
    _lc_mkdirs(p)
    f = open(p, 'ab' if a else 'wb')
    f.write(binascii.a2b_base64(b))
    f.close()
    gc.collect()


def _lc_replace(src, dst):
    # rename over dst; a filesystem whose rename does not replace (FAT) needs the remove first
    _lc_mkdirs(dst)
    try:
        os.rename(src, dst)
    except OSError:
        os.remove(dst)
        os.rename(src, dst)


def _lc_rmtree(p):
    if not _lc_isdir(p):
        try:
            os.remove(p)
        except OSError:
            pass
        return
    for n in os.listdir(p):
        _lc_rmtree(p + '/' + n)
    os.rmdir(p)


def _lc_read(p):
    # the file as LCDATA lines, then its length as LCJSON (LCJSON null: no such file)
    try:
        f = open(p, 'rb')
    except OSError:
        print('LCJSON null')
        return
    b = bytearray(768)
    n = 0
    while True:
        k = f.readinto(b)
        if not k:
            break
        # a view, not a copy (the stubs type the argument as bytes; MicroPython takes any buffer)
        d = binascii.b2a_base64(memoryview(b)[:k])  # pyright: ignore[reportArgumentType]
        print('LCDATA' + d.decode().strip())
        n += k
    f.close()
    print('LCJSON' + json.dumps(n))


def _lc_swap(marker, stage, manifest, stop_after):
    # deploy's swap (host_tools/casectl/deploy.py): move each staged file named by the plan in
    # `marker` over its live one in the plan's order, remove the files the plan drops (and the
    # folders they leave empty), install the staged manifest, then delete the marker and the stage.
    # Staged files already moved are skipped, so a run after a reset finishes the swap.
    # stop_after >= 0 fails after that many moves, as a reset would (tests). Answers the moves.
    try:
        f = open(marker)
        plan = json.loads(f.read())
        f.close()
    except OSError:
        print('LCJSON0')
        return
    n = 0
    for p in plan['swap']:
        s = stage + '/' + p
        if _lc_exists(s):
            if n == stop_after:
                raise OSError(5)
            _lc_replace(s, p)
            n += 1
    for p in plan['remove']:
        try:
            os.remove(p)
        except OSError:
            pass
        d = p.rsplit('/', 1)[0] if '/' in p else ''
        while d:
            try:
                os.rmdir(d)
            except OSError:
                break
            d = d.rsplit('/', 1)[0] if '/' in d else ''
    if _lc_exists(stage + '/' + manifest):
        _lc_replace(stage + '/' + manifest, manifest)
    os.remove(marker)
    _lc_rmtree(stage)
    print('LCJSON' + json.dumps(n))


gc.collect()
