# Ed25519 signature check (RFC 8032, pure Ed25519: no prehash, no context), verify only, in plain
# MicroPython: the chips' hashlib has no SHA-512, so it is here too (FIPS 180-4). Loaded only while
# a release's manifest is checked, then dropped (lockcase.ota.update).
#
# The work is a generator that yields after every SHA-512 block (the costly part: 64-bit words
# are big integers on a 32-bit port, 2 ms a block here, 16 ms with a collection) and every 8 bits
# of the double scalar multiplication (0.2 ms here), so the app loop steps the keypad and the lock
# between slices; run() drives it to the end in one go (tests, bench). Not constant-time: it only
# handles public data.
from lockcase.compat import const

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
# Written out, not computed at import: each was a modular exponentiation (0.45 ms on the 32-bit
# port here, some 30-60 times that on a chip) in the app loop's step that loads this module.
# _D = -121665 / 121666 mod P, _SQRT_M1 = 2^((P - 1) / 4) mod P (RFC 8032, 5.1); the RFC's vectors
# (tests/device/mp_test_ota.py) check them.
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 2 * _D % P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_M64 = 0xFFFFFFFFFFFFFFFF
# the base point B, in extended coordinates (X, Y, Z, T); _BY = 4/5 mod P
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202

# SHA-512's round constants (the first 64 bits of the fractional parts of the cube roots of the
# first 80 primes), 640 bytes read 8 at a time. As a list of 80 ints they were 80 heap objects
# (2.5 KB on a 32-bit port) for as long as the module was loaded, in the middle of a download
# (docs/ota.md, "Heap and pacing"); read per round, each is garbage at once.
_K = const(
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc\x39\x56\xc2\x5b\xf3\x48\xb5\x38"
    b"\x59\xf1\x11\xf1\xb6\x05\xd0\x19\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1\x9b\xdc\x06\xa7\x25\xc7\x12\x35"
    b"\xc1\x9b\xf1\x74\xcf\x69\x26\x94\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5\x98\x3e\x51\x52\xee\x66\xdf\xab"
    b"\xa8\x31\xc6\x6d\x2d\xb4\x32\x10\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed"
    b"\x53\x38\x0d\x13\x9d\x95\xb3\xdf\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30\xd1\x92\xe8\x19\xd6\xef\x52\x18"
    b"\xd6\x99\x06\x24\x55\x65\xa9\x10\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb\x5b\x9c\xca\x4f\x77\x63\xe3\x73"
    b"\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b\xca\x27\x3e\xce\xea\x26\x61\x9c"
    b"\xd1\x86\xb8\xc7\x21\xc0\xc2\x07\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc"
    b"\x43\x1d\x67\xc4\x9c\x10\x0d\x4c\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)


def _ror(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


class Sha512:
    """hashlib-like SHA-512: update() as often as needed, then digest(). update_steps() is the
    generator form: it yields after every few 128-byte blocks."""

    def __init__(self):
        self.h = [0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
                  0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179]
        self.buf = b""
        self.n = 0

    def update(self, data):
        for _ in self.update_steps(data):
            pass

    def update_steps(self, data, every=1):
        self.n += len(data)
        buf = self.buf + bytes(data)
        i = 0
        k = 0
        while len(buf) - i >= 128:
            self._block(buf, i)
            i += 128
            k += 1
            if k % every == 0:
                yield
        self.buf = buf[i:]

    def _block(self, b, at):
        # The message schedule as a ring of 16 words (w[j] needs w[j-16], w[j-15], w[j-7] and
        # w[j-2] only): 16 big integers held instead of 80.
        w = [int.from_bytes(b[at + 8 * j : at + 8 * j + 8], "big") for j in range(16)]
        a, b_, c, d, e, f, g, h = self.h
        for j in range(80):
            i = j & 15
            if j >= 16:
                x, y = w[(j - 15) & 15], w[(j - 2) & 15]
                s0 = _ror(x, 1) ^ _ror(x, 8) ^ (x >> 7)
                s1 = _ror(y, 19) ^ _ror(y, 61) ^ (y >> 6)
                w[i] = (w[i] + s0 + w[(j - 7) & 15] + s1) & _M64
            k = int.from_bytes(_K[8 * j : 8 * j + 8], "big")
            t1 = (h + (_ror(e, 14) ^ _ror(e, 18) ^ _ror(e, 41)) + ((e & f) ^ ((e ^ _M64) & g)) + k + w[i]) & _M64
            t2 = ((_ror(a, 28) ^ _ror(a, 34) ^ _ror(a, 39)) + ((a & b_) ^ (a & c) ^ (b_ & c))) & _M64
            h, g, f, e, d, c, b_, a = g, f, e, (d + t1) & _M64, c, b_, a, (t1 + t2) & _M64
        s = self.h
        for j, v in enumerate((a, b_, c, d, e, f, g, h)):
            s[j] = (s[j] + v) & _M64

    def digest(self):
        n = self.n
        pad = b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
        self.update(pad)
        self.n = n  # digest() may be called once; n is only for the padding
        out = b""
        for v in self.h:
            out += v.to_bytes(8, "big")
        return out


# -- the curve: twisted Edwards, a = -1, extended coordinates (RFC 8032, 5.1.4) ------------------
def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * _D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _decode(s):
    """32 bytes -> a point, or None when they encode none (RFC 8032, 5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P) % P, (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != (P - u) % P:
            return None  # u/v has no square root: not a point
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x = x * zi % P
    y = y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify_steps(pub, sig, parts, every=8):
    """Generator: yields while it works, and returns (StopIteration's value) True when sig (64
    bytes) is pub's (32 bytes) signature of the message made of `parts` (an iterable of byte
    strings, e.g. a file read in chunks), False otherwise."""
    if len(pub) != 32 or len(sig) != 64:
        return False
    # A point's decoding is two modular exponentiations, the longest piece of work here: one a
    # slice (docs/ota.md, "Heap and pacing")
    a = _decode(pub)
    yield
    r = _decode(sig[:32])
    yield
    s = int.from_bytes(sig[32:], "little")
    if a is None or r is None or s >= L:
        return False
    h = Sha512()
    h.update(sig[:32])
    h.update(pub)
    for part in parts:
        yield from h.update_steps(part)
    k = int.from_bytes(h.digest(), "little") % L
    yield
    # [s]B - [k]A by one double-and-add over both scalars (Straus-Shamir), compared with R
    na = ((P - a[0]) % P, a[1], 1, (P - a[3]) % P)
    b = (_BX, _BY, 1, _BX * _BY % P)
    both = _add(b, na)
    q = (0, 1, 1, 0)
    for i in range(255, -1, -1):
        q = _double(q)
        sb = (s >> i) & 1
        kb = (k >> i) & 1
        if sb and kb:
            q = _add(q, both)
        elif sb:
            q = _add(q, b)
        elif kb:
            q = _add(q, na)
        if i % every == 0:
            yield
    return _encode(q) == bytes(sig[:32])  # (a slice of its own: the loop yielded at i == 0)


def run(gen):
    """Drive a generator of verify_steps to its end; returns its result."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


def verify(pub, sig, msg):
    return run(verify_steps(pub, sig, (msg,)))
