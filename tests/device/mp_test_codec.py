# The firmware codec (lockcase.uplink.codec) under the real MicroPython, against the shared
# vectors in tests/vectors/protocol_v1.json, which tests/host/test_codec_vectors.py checks against the
# cloud codec under CPython.
import json

from lockcase.uplink import codec as P

VECTORS = "tests/vectors/protocol_v1.json"
T = "lockcase/v1/s1/c1/"
KEY = bytes(range(32))


def _vectors(section):
    # One vector per line: read them one at a time so the whole file never sits in the heap.
    inside = False
    with open(VECTORS) as f:
        for line in f:
            line = line.strip()
            if line.startswith('"' + section + '"'):
                inside = True
                continue
            if inside:
                if line.startswith("]"):
                    return
                yield json.loads(line.rstrip(","))


def _unhex(s):
    import binascii

    return binascii.unhexlify(s)


def _codec(v):
    c = P.Codec("c1", _unhex(v["key"]), P.MemorySeqs(v["rx"], 0), clock=lambda: v["now"])
    c.mask = v["mask"]
    c.synced = v.get("synced", True)
    if v.get("hello"):
        c.sign(T + "status", {"t": "hello", "fw": "0.1.0", "id": v["hello"]})  # the hello it answers
    return c


def test_sign_vectors():
    n = 0
    for v in _vectors("sign"):
        env = json.loads(P.seal(_unhex(v["key"]), v["topic"], v["p"]))
        assert env["s"] == v["s"], v["name"]
        assert env["p"] == v["p"], v["name"]
        n += 1
    assert n >= 4


def test_open_vectors():
    n = 0
    for v in _vectors("open"):
        if v["side"] not in ("both", "case"):
            continue
        n += 1
        c = _codec(v)
        try:
            body = c.open(v["topic"], v["payload"].encode(), v["now"])
        except P.Rejected as e:
            assert e.reason == v["reason"], "%s: got %s" % (v["name"], e.reason)
            continue
        assert v["reason"] is None, "%s: accepted, expected %s" % (v["name"], v["reason"])
        assert body["case"] == "c1"
        assert [c.rx, c.mask] == v["after"], "%s: state %s" % (v["name"], [c.rx, c.mask])
    assert n >= 40, n


def test_time_sets_clock_and_resyncs_tx():
    seqs = P.MemorySeqs(0, 0)
    local = [946684800]  # an unset RTC: 2000-01-01
    c = P.Codec("c1", KEY, seqs, clock=lambda: local[0])
    hello = {"t": "hello", "fw": "0.1.0"}
    c.sign(T + "status", hello)
    assert hello["seq"] == 1
    cloud_now = 1750000000
    t = P.seal(KEY, T + "cmd", json.dumps({"v": 1, "case": "c1", "id": "k", "seq": 3, "exp": cloud_now + 30,
                                           "t": "time", "re": hello["id"], "now": cloud_now, "rx": 500}))
    c.open(T + "cmd", t)
    assert c.synced and c.now() == cloud_now
    m = {"t": "phone", "num": "5551234567"}
    c.sign(T + "req", m)
    assert m["seq"] == 501 and m["exp"] == cloud_now + P.TTL
    # the same time cmd again: old seq and no pending hello
    try:
        c.open(T + "cmd", t)
        assert False, "replayed time accepted"
    except P.Rejected as e:
        assert e.reason == "replay"
    # a reboot keeps both counters
    c2 = P.Codec("c1", KEY, seqs, clock=lambda: local[0])
    assert c2.rx == 3 and c2.tx >= 501


_NOW = 1750000000


def msg(kind, seq, **body):
    # A message from the cloud, signed, fresh at _NOW.
    body.update(v=1, case="c1", id="m%d" % seq, seq=seq, exp=_NOW + 30)
    return P.seal(KEY, T + kind, json.dumps(body))


def _synced(seqs):
    # A codec whose hello the cloud answered with seq 3.
    c = P.Codec("c1", KEY, seqs, clock=lambda: _NOW)
    hello = {"t": "hello", "fw": "0.1.0"}
    c.sign(T + "status", hello)
    c.open(T + "cmd", msg("cmd", 3, t="time", re=hello["id"], now=_NOW, rx=0))
    return c


def test_rx_saved_before_a_command_runs_and_after_a_reply_is_acted_on():
    # A command's copy replayed after a reset must be a replay, so its seq is on flash before it
    # runs; a reply's or an evtack's write waits for flush(), after the coil (issue 8's tap path).
    seqs = P.MemorySeqs(0, 0)
    c = _synced(seqs)
    assert seqs.rx == 3  # a command (the time): saved at once
    c.open(T + "rep", msg("rep", 4, t="allow", re="r1", grant="g"))
    assert c.rx == 4 and seqs.rx == 3
    c.open(T + "evtack", msg("evtack", 5, t="evtack", re="e1", ids=[]))
    assert seqs.rx == 3
    c.flush()
    assert seqs.rx == 5
    saves = seqs.saves
    c.flush()
    assert seqs.saves == saves  # nothing new: no write
    c.open(T + "cmd", msg("cmd", 6, t="relock"))
    assert seqs.rx == 6 and seqs.saves == saves + 1
    # what was never flushed counts as seen anyway up to the saved rx after a reboot
    c.open(T + "rep", msg("rep", 7, t="allow", re="r2", grant="g"))
    c2 = P.Codec("c1", KEY, seqs, clock=lambda: _NOW)
    assert c2.rx == 6


def test_a_failed_seq_write_never_lets_a_command_run_twice():
    # The write fails (flash error, no heap): the window stays where flash has it, and a later
    # command, one a reply moved the window past in RAM included, is saved before it runs.
    class Flaky(P.MemorySeqs):
        fail = 0

        def save(self, rx, tx):
            if self.fail:
                self.fail -= 1
                raise OSError(5)
            P.MemorySeqs.save(self, rx, tx)

    seqs = Flaky(0, 0)
    c = _synced(seqs)
    unlock = msg("cmd", 5, t="unlock", grant="g")
    seqs.fail = 1
    try:
        c.open(T + "cmd", unlock)
        assert False, "a command whose seq could not be saved was handed out"
    except OSError:
        pass
    assert c.rx == 3 and seqs.rx == 3  # not moved: the command did not run, its copy may
    c.open(T + "rep", msg("rep", 10, t="allow", re="r1", grant="g"))  # moves rx in RAM only
    seqs.fail = 1
    try:
        c.flush()
    except OSError:
        pass
    assert seqs.rx == 3
    c.open(T + "cmd", unlock)  # reordered below rx: accepted once, and everything saved first
    assert seqs.rx == 10
    c2 = P.Codec("c1", KEY, seqs, clock=lambda: _NOW)  # a reboot: its copy is a replay
    assert c2.rx == 10
    try:
        P.window(c2.rx, c2.mask, 5)
        assert False, "replayed command accepted after a reboot"
    except P.Rejected as e:
        assert e.reason == "replay", e.reason


def test_tx_reserved_in_blocks():
    seqs = P.MemorySeqs(0, 0)
    c = P.Codec("c1", KEY, seqs, clock=lambda: 1750000000)
    for _ in range(130):
        c.sign(T + "evt", {"t": "evts", "evts": []})
    assert seqs.saves == 3, seqs.saves
    c2 = P.Codec("c1", KEY, seqs, clock=lambda: 1750000000)
    m = {"t": "beat", "up": 1}
    c2.sign(T + "status", m)
    assert m["seq"] > 130


def test_file_seqs_survive_and_tolerate_corruption():
    import os

    path = "/tmp/lockcase_mp_seq_test.json"
    s = P.FileSeqs(path)
    s.save(7, 128)
    assert P.FileSeqs(path).load() == (7, 128)
    with open(path, "w") as f:
        f.write("[7,")
    assert P.FileSeqs(path).load() == (0, 0)
    os.remove(path)
    assert P.FileSeqs(path).load() == (0, 0)


def test_file_seqs_rewritten_in_place_never_leave_old_bytes_behind():
    import os

    path = "/tmp/lockcase_mp_seq_inplace.json"
    s = P.FileSeqs(path)
    s.load()
    s.save(1234567, 7654321)
    s.save(5, 64)  # shorter numbers: a record of fixed width, nothing of the last one trails
    assert P.FileSeqs(path).load() == (5, 64)
    with open(path, "w") as f:
        f.write("[7,128]" + "x" * 60)  # corrupt and longer than a record
    s = P.FileSeqs(path)
    assert s.load() == (0, 0)
    s.save(3, 4)
    assert P.FileSeqs(path).load() == (3, 4)
    os.remove(path)


def test_sign_refuses_unknown_type_and_oversize():
    c = P.Codec("c1", KEY, P.MemorySeqs(), clock=lambda: 1750000000)
    for topic, body in ((T + "req", {"t": "unlock"}), (T + "req", {"t": "phone", "num": "1" * 1100})):
        try:
            c.sign(topic, body)
            assert False, "signed %s" % body["t"]
        except ValueError:
            pass


def test_roundtrip_small_heap():
    import gc

    c = P.Codec("c1", KEY, P.MemorySeqs(), clock=lambda: 1750000000)
    c.synced = True
    gc.collect()
    before = gc.mem_free()
    for i in range(50):
        body = {"v": 1, "case": "c1", "id": "x%d" % i, "seq": i + 1, "exp": 1750000030, "t": "unlock", "grant": "g"}
        c.open(T + "cmd", P.seal(KEY, T + "cmd", json.dumps(body)))
    gc.collect()
    assert before - gc.mem_free() < 2048, before - gc.mem_free()


def test_topics():
    t = P.topics("lockcase/v1", "s1", "c1")
    assert t["req"] == T + "req" and t["presence"] == T + "presence"
    assert P.subscriptions("lockcase/v1", "s1", "c1") == (T + "rep", T + "cmd", T + "evtack")


def _sync(c, seq, now):
    # The time handshake a case does after every boot: our hello, the cloud's signed time reply.
    hello = {"t": "hello", "fw": "0.1.0"}
    c.sign(T + "status", hello)
    c.open(T + "cmd", _cmd(seq, now, "time", {"re": hello["id"], "now": now, "rx": 0}))


def _cmd(seq, at, t, extra=None):
    body = {"v": 1, "case": "c1", "id": "m%d" % seq, "seq": seq, "exp": at + 30, "t": t}
    if extra:
        body.update(extra)
    return P.seal(KEY, T + "cmd", json.dumps(body))


def _replay(c, msg):
    try:
        c.open(T + "cmd", msg)
    except P.Rejected as e:
        return e.reason
    return None


def test_replay_window_survives_a_reboot():
    import os

    path = "/tmp/lockcase_mp_seq_reboot.json"
    try:
        os.remove(path)
    except OSError:
        pass
    now = 1750000000
    c = P.Codec("c1", KEY, P.FileSeqs(path), clock=lambda: now)
    _sync(c, 1, now)
    # Out of order within the window (the cloud publishes from several connections): 10, then 7.
    m10 = _cmd(10, now, "relock")
    m7 = _cmd(7, now, "relock")
    assert c.open(T + "cmd", m10)["seq"] == 10
    assert c.open(T + "cmd", m7)["seq"] == 7
    assert _replay(c, m7) == "replay" and _replay(c, m10) == "replay"
    m8 = _cmd(8, now, "relock")  # never delivered before the reboot
    # Reboot: a new codec over the same file. Both messages are still within their TTL and within
    # the window of the next seq, so only the restored state can refuse them.
    c = P.Codec("c1", KEY, P.FileSeqs(path), clock=lambda: now)
    _sync(c, 12, now)
    assert c.rx == 12
    assert _replay(c, m7) == "replay", "seq 7, seen before the reboot, accepted again"
    assert _replay(c, m10) == "replay", "seq 10, seen before the reboot, accepted again"
    # What the case cannot know it saw before the reboot counts as seen: refused, never doubled.
    assert _replay(c, m8) == "replay"
    assert c.open(T + "cmd", _cmd(13, now, "relock"))["seq"] == 13
    os.remove(path)


# -- which hellos a time may answer (docs/protocol.md "Clock and resynchronization", issue 15) ------
_CLOUD = 1750000000


def _greeter():
    # A codec with an unset RTC (local seconds) and its own ms ticks, both moved by the test.
    local = [1000]
    ticks = [0]
    c = P.Codec("c1", KEY, P.MemorySeqs(0, 0), clock=lambda: local[0], ticks=lambda: ticks[0])
    return c, local, ticks


def _hello_id(c):
    hello = {"t": "hello", "fw": "0.1.0"}
    c.sign(T + "status", hello)
    return hello["id"]


def _time(seq, re):
    return _cmd(seq, _CLOUD, "time", {"re": re, "now": _CLOUD, "rx": 0})


def test_a_time_answering_an_earlier_hello_of_the_connection_syncs_from_its_arrival():
    # An overloaded cloud answers the first hello after the case repeated it twice: taken (it was
    # stamped after that hello was signed, 40 s before it arrived), the offset from the arrival.
    c, local, ticks = _greeter()
    first = _hello_id(c)
    ticks[0] = 1500
    _hello_id(c)
    ticks[0] = 4500
    last = _hello_id(c)
    ticks[0] = 40000
    local[0] = 1040
    c.open(T + "cmd", _time(1, first))
    assert c.synced
    assert c.offset == _CLOUD - 1040 and c.now() == _CLOUD
    # Once one is taken, the answers to the others (and that one again) are replays.
    local[0] = 1041
    ticks[0] = 41000
    assert _replay(c, _time(2, last)) == "replay"
    assert _replay(c, _time(3, first)) == "replay"
    assert c.offset == _CLOUD - 1040  # the clock did not move
    assert c.rx == 1


def test_a_time_answering_a_hello_signed_more_than_60_s_ago_is_refused():
    c, local, ticks = _greeter()
    old = _hello_id(c)
    ticks[0] = 30000
    newer = _hello_id(c)
    ticks[0] = 60001  # the first hello's answer could be up to 60.001 s stale: refused
    assert _replay(c, _time(1, old)) == "replay" and not c.synced
    c.open(T + "cmd", _time(2, newer))  # 30.001 s: taken
    assert c.synced
    # the bound itself, 60 s, is still taken
    c, local, ticks = _greeter()
    h = _hello_id(c)
    ticks[0] = 60000
    c.open(T + "cmd", _time(1, h))
    assert c.synced


def test_a_time_answering_a_hello_of_a_previous_connection_is_refused():
    c, local, ticks = _greeter()
    before = _hello_id(c)
    ticks[0] = 2000
    c.forget_hellos()  # a new connection (the client's on_up)
    now = _hello_id(c)
    assert _replay(c, _time(1, before)) == "replay" and not c.synced
    c.open(T + "cmd", _time(2, now))
    assert c.synced


def test_only_the_last_four_hellos_are_remembered():
    c, local, ticks = _greeter()
    ids = []
    for i in range(5):
        ticks[0] = i * 1000
        ids.append(_hello_id(c))
    assert _replay(c, _time(1, ids[0])) == "replay" and not c.synced  # overwritten by the fifth
    c.open(T + "cmd", _time(2, ids[1]))
    assert c.synced


def test_a_time_answering_a_remembered_hello_still_passes_the_seq_window():
    # A copy of an earlier time (its seq seen) that answers a hello still remembered is a replay
    # and forgets nothing: a fresh answer to the same hello then syncs.
    c, local, ticks = _greeter()
    a = _hello_id(c)
    b = _hello_id(c)
    c.rx, c.mask = 7, 1  # the cloud's seq 7 already seen
    assert _replay(c, _time(7, a)) == "replay" and not c.synced
    c.open(T + "cmd", _time(8, a))
    assert c.synced and c.rx == 8
    assert _replay(c, _time(9, b)) == "replay"


def test_a_hello_s_age_is_measured_across_ticks_ms_wrap():
    # Signed 30 s before ticks_ms wraps (every 12.4 days on a chip), answered after it.
    import time

    c, local, ticks = _greeter()
    ticks[0] = time.ticks_add(0, -30000)
    h = _hello_id(c)
    ticks[0] = time.ticks_add(ticks[0], 61000)  # 61 s later, past the wrap: too old
    assert ticks[0] < 60000
    assert _replay(c, _time(1, h)) == "replay" and not c.synced
    c, local, ticks = _greeter()
    ticks[0] = time.ticks_add(0, -30000)
    h = _hello_id(c)
    ticks[0] = time.ticks_add(ticks[0], 59000)  # 59 s: taken
    c.open(T + "cmd", _time(1, h))
    assert c.synced
