# Ed25519 signature check (RFC 8032, pure Ed25519: no prehash, no context), verify only, in plain
# MicroPython: the chips' hashlib has no SHA-512, so it is here too (FIPS 180-4). Loaded only while
# a release's manifest is checked, then dropped (lockcase.ota.update).
#
# The work is a generator that yields after every SHA-512 block (the costly part: 64-bit words
# are big integers on a 32-bit port, 2 ms a block here, 16 ms with a collection) and every 8 bits
# of the double scalar multiplication (0.2 ms here), so the app loop steps the keypad and the lock
# between slices; run() drives it to the end in one go (tests, bench). Not constant-time: it only
# handles public data.
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, P - 2, P) % P
_D2 = 2 * _D % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)
_M64 = 0xFFFFFFFFFFFFFFFF
# the base point B, in extended coordinates (X, Y, Z, T)
_BY = 4 * pow(5, P - 2, P) % P
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202

_K = None  # SHA-512's round constants, built on first use and kept only while this module is


def _consts():
    global _K
    if _K is None:
        # the first 64 bits of the fractional parts of the cube roots of the first 80 primes
        _K = [int(h, 16) for h in (
            "428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc 3956c25bf348b538 "
            "59f111f1b605d019 923f82a4af194f9b ab1c5ed5da6d8118 d807aa98a3030242 12835b0145706fbe "
            "243185be4ee4b28c 550c7dc3d5ffb4e2 72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 "
            "c19bf174cf692694 e49b69c19ef14ad2 efbe4786384f25e3 0fc19dc68b8cd5b5 240ca1cc77ac9c65 "
            "2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5 983e5152ee66dfab "
            "a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4 c6e00bf33da88fc2 d5a79147930aa725 "
            "06ca6351e003826f 142929670a0e6e70 27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed "
            "53380d139d95b3df 650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b "
            "a2bfe8a14cf10364 a81a664bbc423001 c24b8b70d0f89791 c76c51a30654be30 d192e819d6ef5218 "
            "d69906245565a910 f40e35855771202a 106aa07032bbd1b8 19a4c116b8d2d0c8 1e376c085141ab53 "
            "2748774cdf8eeb99 34b0bcb5e19b48a8 391c0cb3c5c95a63 4ed8aa4ae3418acb 5b9cca4f7763e373 "
            "682e6ff3d6b2b8a3 748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec "
            "90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b ca273eceea26619c "
            "d186b8c721c0c207 eada7dd6cde0eb1e f57d4f7fee6ed178 06f067aa72176fba 0a637dc5a2c898a6 "
            "113f9804bef90dae 1b710b35131c471b 28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc "
            "431d67c49c100d4c 4cc5d4becb3e42b6 597f299cfc657e2a 5fcb6fab3ad6faec 6c44198c4a475817"
        ).split()]
    return _K


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
        K = _consts()
        w = [int.from_bytes(b[at + 8 * j : at + 8 * j + 8], "big") for j in range(16)]
        for j in range(16, 80):
            x, y = w[j - 15], w[j - 2]
            s0 = _ror(x, 1) ^ _ror(x, 8) ^ (x >> 7)
            s1 = _ror(y, 19) ^ _ror(y, 61) ^ (y >> 6)
            w.append((w[j - 16] + s0 + w[j - 7] + s1) & _M64)
        a, b_, c, d, e, f, g, h = self.h
        for j in range(80):
            t1 = (h + (_ror(e, 14) ^ _ror(e, 18) ^ _ror(e, 41)) + ((e & f) ^ ((e ^ _M64) & g)) + K[j] + w[j]) & _M64
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
    a = _decode(pub)
    r = _decode(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if a is None or r is None or s >= L:
        return False
    h = Sha512()
    h.update(sig[:32])
    h.update(pub)
    for part in parts:
        yield from h.update_steps(part)
    k = int.from_bytes(h.digest(), "little") % L
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
    return _encode(q) == bytes(sig[:32])


def run(gen):
    """Drive a generator of verify_steps to its end; returns its result."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


def verify(pub, sig, msg):
    return run(verify_steps(pub, sig, (msg,)))
