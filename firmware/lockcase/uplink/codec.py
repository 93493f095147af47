# LockCase cloud protocol v1, the case's codec (docs/protocol.md is the contract; the cloud's twin
# is cloud/casecloud/codec.py and tests/vectors/protocol_v1.json keeps the two in step).
#
# Every message is {"p": <body JSON text>, "s": <hex HMAC-SHA256(key, topic + "\n" + p)>}: the
# signature covers the exact text that was sent, so neither side ever re-serializes JSON.
import binascii
import json
import os

from lockcase.compat import const, json_whole, ticks_diff, ticks_ms
from lockcase.creds import equal, hmac_sha256

VERSION = 1
PREFIX = "lockcase/v1"
MAX_BYTES = 1024  # whole MQTT payload; both sides refuse bigger ones before parsing
TTL = 30  # seconds a message stays valid after it is signed
WINDOW = const(16)  # seqs below the highest still accepted once, for the cloud's several connections
_MASK = const((1 << WINDOW) - 1)  # fits a small int on 32-bit ports: no heap allocation per check
_TX_BLOCK = const(64)  # outgoing seqs are reserved in blocks so flash is written once per 64 sends
# The hellos of this connection whose answer (the `time` cmd) is still taken: the last _HELLOS
# signed, each for _HELLO_MAX_MS after it was signed (Codec._answers says why that bound).
_HELLOS = const(4)
_HELLO_MAX_MS = const(60000)  # the longest wait between two hellos (client.py's _HELLO_MAX_MS)

# kind -> type -> required fields (name, code): s str, i int, b bool, l list, d dict.
# Every body also has the header fields of HEAD. Extra fields are allowed (forward compatible).
# The one source of the message schema: the cloud's codec (cloud/casecloud/codec.py) imports it
# from here, so the two sides cannot disagree on a message's shape.
SCHEMA = {
    # case -> cloud
    "req": {
        "phone": (("num", "s"),),
        "otp": (("sid", "s"), ("code", "s")),
        "token": (("tok", "s"), ("src", "s")),
        "help": (),
        # a chunk of a release (docs/ota.md): f = -1 the manifest, else its index in the files
        "fwget": (("rel", "s"), ("f", "i"), ("off", "i")),
    },
    "evt": {"evts": (("evts", "l"),)},
    "status": {"hello": (("fw", "s"),), "beat": (("up", "i"),)},
    "ack": {"ack": (("re", "s"), ("ok", "b"))},
    # cloud -> case
    "rep": {
        "allow": (("re", "s"), ("grant", "s")),
        "challenge": (("re", "s"), ("sid", "s"), ("need", "s"), ("ttl", "i")),
        "deny": (("re", "s"), ("why", "s")),
        "ok": (("re", "s"),),
        "fwdata": (("re", "s"), ("d", "s")),
    },
    "cmd": {
        "unlock": (("grant", "s"),),
        "relock": (),
        "reset_tamper": (),
        "staff": (("op", "s"), ("kind", "s"), ("sid", "s")),
        "config": (("set", "d"),),
        "state": (("sv", "i"), ("i", "i"), ("n", "i"), ("staff", "l")),
        "time": (("re", "s"), ("now", "i"), ("rx", "i")),
        "fw": (("rel", "s"), ("size", "i"), ("sig", "s")),
    },
    "evtack": {"evtack": (("re", "s"), ("ids", "l"))},
}
HEAD = (("v", "i"), ("case", "s"), ("id", "s"), ("seq", "i"), ("exp", "i"), ("t", "s"))


class Rejected(Exception):
    # reason: one of the codes in docs/protocol.md ("bad_sig", "replay", ...)
    @property
    def reason(self):
        return self.args[0]


def topics(prefix, store, case):
    base = "%s/%s/%s/" % (prefix, store, case)
    t = {}
    for kind in ("req", "evt", "status", "ack", "rep", "cmd", "evtack", "presence"):
        t[kind] = base + kind
    return t


def subscriptions(prefix, store, case):
    # What the case subscribes to: exactly the cloud -> case kinds.
    base = "%s/%s/%s/" % (prefix, store, case)
    return (base + "rep", base + "cmd", base + "evtack")


def seal(key, topic, p):
    # p: the body JSON text. Returns the envelope bytes ready to publish.
    sig = binascii.hexlify(hmac_sha256(key, topic, "\n", p)).decode()
    return json.dumps({"p": p, "s": sig}, separators=(",", ":")).encode()


def _typed(v, code):
    if code == "s":
        return type(v) is str
    if code == "i":
        return type(v) is int  # not bool, not float
    if code == "b":
        return type(v) is bool
    if code == "l":
        return type(v) is list
    return type(v) is dict


def _check_fields(body, fields):
    for name, code in fields:
        if name not in body or not _typed(body[name], code):
            raise Rejected("bad_field")


def verify(key, topic, payload):
    """Signature and shape only (no clock, no seq): returns (kind, body) or raises Rejected."""
    if isinstance(payload, str):
        payload = payload.encode()
    if isinstance(topic, bytes):
        topic = topic.decode()
    if len(payload) > MAX_BYTES:
        raise Rejected("too_large")
    try:
        env = json.loads(payload)
    except ValueError:
        raise Rejected("bad_json")
    if type(env) is not dict or type(env.get("p")) is not str or type(env.get("s")) is not str:
        raise Rejected("bad_json")
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] + "/" + parts[1] != PREFIX or parts[4] not in SCHEMA:
        raise Rejected("bad_topic")
    p = env["p"]
    # Compared as text: only the canonical form (64 lowercase hex digits) matches, as the cloud's
    # codec requires; unhexlify would also take uppercase.
    if not equal(binascii.hexlify(hmac_sha256(key, topic, "\n", p)), env["s"]):
        raise Rejected("bad_sig")
    try:
        body = json.loads(p)
    except ValueError:
        raise Rejected("bad_json")
    if type(body) is not dict:
        raise Rejected("bad_json")
    if body.get("v") != VERSION or type(body.get("v")) is not int:
        raise Rejected("bad_version")
    _check_fields(body, HEAD)
    if body["case"] != parts[3]:
        raise Rejected("wrong_case")
    kind = parts[4]
    fields = SCHEMA[kind].get(body["t"])
    if fields is None:
        raise Rejected("bad_type")
    _check_fields(body, fields)
    return kind, body


def window(rx, mask, seq):
    """Replay window: returns the new (rx, mask) or raises Rejected("replay").

    rx is the highest seq accepted; bit k of mask means rx - k was accepted.
    """
    if seq > rx:
        shift = seq - rx
        mask = ((mask << shift) | 1) & _MASK if shift < WINDOW else 1
        return seq, mask
    k = rx - seq
    if k >= WINDOW or mask & (1 << k):
        raise Rejected("replay")
    return rx, mask | (1 << k)


def new_id():
    # Random, not a counter: a hello id must be unpredictable so an old time reply never matches.
    return binascii.hexlify(os.urandom(6)).decode()


class MemorySeqs:
    # Seq store for tests and the sim: load() -> (rx, tx), save(rx, tx).
    def __init__(self, rx=0, tx=0):
        self.rx = rx
        self.tx = tx
        self.saves = 0

    def load(self):
        return self.rx, self.tx

    def save(self, rx, tx):
        self.rx = rx
        self.tx = tx
        self.saves += 1


class FileSeqs:
    # Seq store in a tiny file, kept open and rewritten in place at a fixed width, then synced.
    # It is written for every accepted message that moves the window (a command's before it runs,
    # a reply's once acted on, Codec.open/flush), so it must be cheap: at 23 bytes LittleFS keeps it inline in its
    # directory's metadata and commits it whole at sync (a cut leaves the old or the new one),
    # one metadata commit and no file created, renamed or erased; and no file object allocated
    # on a fragmented heap at the moment a shopper waits.
    def __init__(self, path="seq.json"):
        self.path = path
        self._f = None

    def load(self):
        try:
            self._f = f = open(self.path, "r+")
            v = json_whole(f.read(64))
            return int(v[0]), int(v[1])
        except (OSError, ValueError, TypeError, IndexError, KeyError):
            # Lost or corrupt: start from zero; the cloud's time reply re-seeds tx (see protocol.md).
            # A corrupt file is started afresh, so no old bytes trail the fixed-width record.
            self._close()
            return 0, 0

    def save(self, rx, tx):
        f = self._f
        if f is None:
            f = self._f = open(self.path, "w+")
        f.seek(0)
        f.write("[%010d,%010d]" % (rx, tx))
        f.flush()

    def _close(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


class Codec:
    """The case's codec: sign(topic, body) -> bytes, open(topic, payload, now) -> body.

    Until a signed `time` cmd answering one of this codec's recent `hello`s arrives, open() refuses
    everything else with "no_clock": the case's RTC cannot be trusted to check `exp`.
    """

    def __init__(self, case_id, key, seqs, clock=None, ttl=TTL, ticks=None):
        self.case = case_id
        self.key = key
        self.seqs = seqs
        self.ttl = ttl
        if clock is None:
            import time

            clock = time.time
        self.clock = clock
        self.ticks = ticks_ms if ticks is None else ticks  # ms, monotonic: a hello's age
        rx, tx = seqs.load()
        self.rx = rx
        self.mask = _MASK if rx else 0  # after a reboot every seq up to rx counts as seen
        self.tx = tx
        self._tx_limit = tx
        self.offset = 0  # cloud time - local time, learnt from the time cmd
        self.synced = False
        # The hellos awaiting their time: a ring of ids and the ticks each was signed at, two
        # fixed lists (no allocation per hello on a chip's heap); None is a free slot.
        self._hellos = [None] * _HELLOS
        self._hello_ms = [self.ticks()] * _HELLOS  # (a free slot's is never read)
        self._hello_next = 0
        self._dirty = False  # rx moved and not saved yet (open, flush)

    def now(self, local=None):
        # Cloud time in epoch seconds (meaningful once synced).
        if local is None:
            local = self.clock()
        return int(local) + self.offset

    def sign(self, topic, body, now_epoch=None):
        # Fills v, case, id (unless given), seq and exp into body (in place) and returns the payload.
        kind = topic[topic.rfind("/") + 1 :]
        if body.get("t") not in SCHEMA.get(kind, ()):
            raise ValueError("no type %s on %s" % (body.get("t"), kind))
        body["v"] = VERSION
        body["case"] = self.case
        if "id" not in body:
            body["id"] = new_id()
        seq = self.tx + 1
        if seq > self._tx_limit:
            self._tx_limit = seq + _TX_BLOCK - 1
            self.seqs.save(self.rx, self._tx_limit)
        self.tx = seq
        body["seq"] = seq
        body["exp"] = self.now(now_epoch) + self.ttl
        out = seal(self.key, topic, json.dumps(body, separators=(",", ":")))
        if len(out) > MAX_BYTES:
            raise ValueError("too_large")
        if body["t"] == "hello":
            # Remembered as signed, a moment before it is sent: its age is never underestimated.
            i = self._hello_next
            self._hellos[i] = body["id"]
            self._hello_ms[i] = self.ticks()
            self._hello_next = (i + 1) % _HELLOS
        return out

    def forget_hellos(self):
        # A new connection (client.on_up), or a time taken: no answer to an earlier hello counts.
        for i in range(_HELLOS):
            self._hellos[i] = None

    def _answers(self, re):
        # The time answering `re` is fresh by construction when `re` is one of our remembered
        # hellos, signed at most _HELLO_MAX_MS ago: a hello's id is random, so its answer, and
        # the `now` the cloud stamped in it, came after that hello was sent; the offset is set
        # from the answer's arrival, so its error is the time between the stamp and the arrival,
        # at most (arrival - that hello's signing). Taking only the last hello, as before,
        # bounded that by the repeat interval (60 s at most) for the same reason; any hello of
        # the connection within the same 60 s keeps the bound, and an overloaded cloud whose
        # answers come after the next repeat still syncs the case (docs/protocol.md, "Clock").
        # The ring holds hellos of one connection only (forget_hellos), repeated at most 60 s
        # apart, so their ages stay far inside ticks_ms's wrap.
        for i in range(_HELLOS):
            if self._hellos[i] == re:  # re is a str (SCHEMA): a free slot never matches
                # Not negative either: past a ticks_ms wrap (2**30 ms on a chip, 12.4 days) a
                # hello held back for days would seem to be from the future.
                if 0 <= ticks_diff(self.ticks(), self._hello_ms[i]) <= _HELLO_MAX_MS:
                    return
                break
        raise Rejected("replay")

    def open(self, topic, payload, now_epoch=None):
        kind, body = verify(self.key, topic, payload)
        if body["case"] != self.case:
            raise Rejected("wrong_case")
        if now_epoch is None:
            now_epoch = self.clock()
        if body["t"] == "time":
            # Fresh by construction (_answers), whatever our clock says.
            self._answers(body["re"])
        elif not self.synced:
            raise Rejected("no_clock")
        elif self.now(now_epoch) > body["exp"]:
            raise Rejected("expired")
        rx, mask = window(self.rx, self.mask, body["seq"])
        changed = rx != self.rx
        if body["t"] == "time":
            self.offset = body["now"] - int(now_epoch)
            self.synced = True
            self.forget_hellos()  # one answer taken: the others are replays
            if body["rx"] > self.tx:
                # Our seq file was lost: jump past what the cloud already accepted from us.
                self.tx = body["rx"]
                self._tx_limit = self.tx
                changed = True
        if kind == "cmd" and (changed or self._dirty):
            # A command is saved before it runs (and before the window moves: a failed write
            # leaves both as they were), with whatever a reply moved and did not save yet, or its
            # copy could run again after a reset.
            self.seqs.save(rx, self._tx_limit)
            self._dirty = False
        elif changed:
            # A reply or an evtack is saved once acted on (flush), off a shopper's path: a reply's
            # copy replayed after a reset matches no request (ids are random), an evtack's only
            # acknowledges again.
            self._dirty = True
        self.rx = rx
        self.mask = mask
        return body

    def flush(self):
        if self._dirty:
            self.seqs.save(self.rx, self._tx_limit)
            self._dirty = False  # only once written: a failed write is tried again
