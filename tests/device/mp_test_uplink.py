# heap: 256k
# The cloud link and client under MicroPython, with stand-ins for the link and the entry (no
# network): the reconnect schedule (bounded, spread), the greeting repeated until answered, beats
# while unsynced, and a request held briefly while the link is expected.
from lockcase.uplink import codec as P
from lockcase.uplink import link as L
from lockcase.uplink.client import CloudClient
from lockcase.uplink.link import Link

KEY = bytes(range(32))
TOPICS = P.topics("lockcase/v1", "s1", "c1")


def _quiet(*a):
    pass


# -- reconnect schedule ----------------------------------------------------------------------
def test_reconnect_wait_is_capped_so_a_case_is_back_within_30_s():
    for cfg in ({}, {"ca": b"x"}, {"connect_timeout_ms": 8000}, {"ca": b"x", "io_timeout_s": 5}):
        cfg["host"] = "127.0.0.1"
        link = Link(cfg, TOPICS, (), log=_quiet)
        worst = 0
        for attempt in range(40):
            for r in (0, 1, 128, 254, 255):
                link.attempt = attempt
                d = link.next_delay(r)
                assert link.attempt == attempt + 1
                assert 250 <= d <= link.max_delay_ms, (cfg, attempt, r, d)
                worst = d if d > worst else worst
        assert worst == link.max_delay_ms
        # the longest wait, plus one whole attempt (connect, TLS handshake, CONNACK)
        attempt_ms = link.connect_ms + link.io_timeout * 1000 * (2 if link.ca else 1)
        assert link.worst_reconnect_ms == worst + attempt_ms
        assert link.worst_reconnect_ms < 30000, (cfg, link.worst_reconnect_ms)


def test_reconnect_backoff_doubles_from_1_s():
    caps = [L.ceiling(a, 20000) for a in range(8)]
    assert caps == [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000], caps
    assert L.ceiling(10**6, 20000) == 20000  # no overflow, no big int however long it fails


def test_reconnect_waits_spread_over_the_whole_window():
    # Full jitter: cases that lost the broker together draw their waits from [0.25 s, cap], so
    # they do not all come back in the same second (+-25 % around 60 s put them within 30 s of
    # each other, and the first retries within 0.5 s).
    seconds = set()
    for r in range(256):
        d = L.full_jitter(20000, r)
        assert 250 <= d <= 20000
        seconds.add(d // 1000)
    assert len(seconds) == 21, sorted(seconds)  # every second of 0..20 s gets some cases
    first = set(L.full_jitter(1000, r) for r in range(256))
    assert min(first) == 250 and max(first) == 1000 and len(first) > 100


def test_a_dropped_link_retries_soon_and_resets_the_schedule():
    link = Link({"host": "127.0.0.1"}, TOPICS, (), log=_quiet)
    for _ in range(10):
        link.next_delay(255)
    assert link.next_delay(255) == link.max_delay_ms
    link.attempt = 0  # what run() does once connected
    assert link.next_delay(255) == 1000  # after a drop the first wait is at most 1 s


# -- the client --------------------------------------------------------------------------------
class FakeLink:
    def __init__(self):
        self.up = False
        self.connecting = False
        self.sent = []

    def publish(self, topic, payload, retain=False):
        if not self.up:
            return False
        self.sent.append((topic, payload))
        return True


class FakeLock:
    state = "locked"
    why = None
    tamper_alarm = False

    def __init__(self):
        self.grants = []
        self.blocked = False

    def shoppers_blocked(self):
        return self.blocked

    def door_open(self):
        return False

    def grant(self, src, now, who=None):
        self.grants.append((src, who))
        return True


class FakeEntry:
    def __init__(self):
        self.results = []
        self.staff = None

    def cloud_result(self, kind, now, msg=None, left=None):
        self.results.append(kind)
        self.left = left


class FakeBus:
    def __init__(self):
        self.events = []
        self.subs = []

    def emit(self, kind, **data):
        self.events.append((kind, data))
        for fn, kinds in self.subs:
            if kind in kinds:
                fn(kind, data)

    def subscribe(self, fn, kinds):
        self.subs.append((fn, kinds))


class Case:
    """A CloudClient with fakes around it, and the cloud's side (the vectors' key) to answer it."""

    def __init__(self, uptime_ms=0, cfg=None):
        self.up_ms = uptime_ms
        self.epoch = 1000  # the case's unset clock
        self.link = FakeLink()
        self.bus = FakeBus()
        self.lock = FakeLock()
        self.entry = FakeEntry()
        self.codec = P.Codec("c1", KEY, P.MemorySeqs(), clock=lambda: self.epoch, ticks=lambda: self.up_ms)
        self.client = CloudClient(cfg or {"fw": "t"}, self.codec, TOPICS, self.link, self.bus, self.lock, None,
                                  lambda: self.up_ms, log=_quiet)
        self.client.entry = self.entry
        self.cloud_seq = 0

    def bodies(self, t=None):
        out = []
        for topic, payload in self.link.sent:
            kind, body = P.verify(KEY, topic, payload)
            if t is None or body["t"] == t:
                out.append(body)
        return out

    def connect(self):
        self.link.up = True
        self.client.on_up()

    def run(self, t0, t1, step=100):
        # Steps the client from t0 to t1 (ms of uptime, the client's clock here).
        t = t0
        while t <= t1:
            self.up_ms = t
            self.client.step(t)
            t += step

    def cloud_says(self, kind, body):
        # A message signed with the case's key, as the cloud would send it.
        self.cloud_seq += 1
        body["v"] = 1
        body["case"] = "c1"
        body["id"] = P.new_id()
        body["seq"] = self.cloud_seq
        body["exp"] = 5000000 + 30
        topic = TOPICS[kind]
        import json

        self.client.on_message(topic, P.seal(KEY, topic, json.dumps(body)), self.up_ms)

    def answer_hello(self):
        hello = self.bodies("hello")[-1]
        self.cloud_says("cmd", {"t": "time", "re": hello["id"], "now": 5000000, "rx": 0})


def test_hello_is_repeated_with_backoff_until_answered():
    c = Case()
    c.connect()
    assert len(c.bodies("hello")) == 1
    c.run(0, 600000)  # ten minutes, nobody answering
    hellos = len(c.bodies("hello"))
    # 2 s doubling to 60 s, each wait in its upper half: 1+2+4+8+16+32 s then one a minute at most
    assert 8 <= hellos <= 25, hellos
    assert not c.codec.synced and not c.client.available()
    c.answer_hello()
    assert c.codec.synced and c.client.greeted and c.client.available()
    c.run(600100, 1200000)
    assert len(c.bodies("hello")) == hellos  # answered: no more greetings on this connection


def test_a_time_answering_an_earlier_hello_of_the_connection_syncs_once():
    # An overloaded cloud answers the first hello after the case repeated it (issue 15: refused
    # before, the fleet never converged): taken, the greeting stops, and the answer to the newest
    # hello, arriving next, is a replay.
    c = Case()
    c.connect()
    first = c.bodies("hello")[0]
    c.run(0, 10000)
    hellos = c.bodies("hello")
    assert len(hellos) >= 2
    c.cloud_says("cmd", {"t": "time", "re": first["id"], "now": 5000000, "rx": 0})
    assert c.codec.synced and c.client.greeted and c.client.available()
    c.cloud_says("cmd", {"t": "time", "re": hellos[-1]["id"], "now": 5000000, "rx": 0})
    assert c.client.last_reject == "replay"
    c.run(10100, 200000)
    assert len(c.bodies("hello")) == len(hellos)


def test_a_time_answering_a_hello_of_the_previous_connection_is_refused():
    c = Case()
    c.connect()
    old = c.bodies("hello")[0]
    c.link.up = False
    c.run(0, 3000)
    c.connect()  # a new connection: its hello, and only its, may be answered
    c.cloud_says("cmd", {"t": "time", "re": old["id"], "now": 5000000, "rx": 0})
    assert not c.codec.synced and c.client.last_reject == "replay"
    c.answer_hello()
    assert c.codec.synced and c.client.greeted


def test_a_time_delivered_as_the_next_connection_subscribes_is_refused():
    # The link closes the connection (on_down), then the next one's subscribe hands over what
    # arrives before its SUBACK, before on_up: an answer to the old connection's hello.
    c = Case()
    c.connect()
    old = c.bodies("hello")[0]
    c.link.up = False
    c.client.on_down()
    c.cloud_says("cmd", {"t": "time", "re": old["id"], "now": 5000000, "rx": 0})
    assert not c.codec.synced and c.client.last_reject == "replay"


def test_a_closed_link_tells_its_client():
    downs = []
    link = Link({"host": "127.0.0.1"}, TOPICS, (), log=_quiet)
    link.bind(_quiet, _quiet, lambda: downs.append(1))
    link._close()
    assert downs == [1]


def test_a_time_for_a_hello_signed_in_the_future_is_refused():
    # A hello's age below zero: ticks_ms wrapped (2**30 ms on a chip) while its answer was held.
    c = Case(uptime_ms=5000)
    c.connect()
    c.up_ms = 4999
    hello = c.bodies("hello")[-1]
    c.cloud_says("cmd", {"t": "time", "re": hello["id"], "now": 5000000, "rx": 0})
    assert not c.codec.synced and c.client.last_reject == "replay"


def test_a_time_answering_a_hello_no_longer_remembered_is_refused():
    # The first hello is 61 s old and 5-6 hellos back (the codec keeps 4, for 60 s each: its own
    # test pins each bound alone).
    c = Case()
    c.connect()
    first = c.bodies("hello")[0]
    c.run(0, 61000)
    assert len(c.bodies("hello")) >= 6
    c.cloud_says("cmd", {"t": "time", "re": first["id"], "now": 5000000, "rx": 0})
    assert not c.codec.synced and c.client.last_reject == "replay"
    c.answer_hello()
    assert c.codec.synced


def test_beats_go_out_while_unsynced_and_say_so():
    c = Case()
    c.connect()
    c.run(0, 130000)
    beats = c.bodies("beat")
    assert len(beats) >= 2 and all(b["synced"] is False for b in beats), beats
    c.answer_hello()
    c.run(130100, 130200)
    assert c.bodies("beat")[-1]["synced"] is True  # at once after the sync


def test_a_forged_or_replayed_message_still_opens_nothing_while_unsynced():
    c = Case()
    c.connect()
    import json

    # forged: wrong key
    body = {"v": 1, "case": "c1", "id": "a" * 12, "seq": 1, "exp": 9999999999, "t": "unlock", "grant": "g"}
    topic = TOPICS["cmd"]
    c.client.on_message(topic, P.seal(bytes(32), topic, json.dumps(body)), 0)
    assert c.client.last_reject == "bad_sig"
    # well signed, but the case has no clock yet: refused
    c.cloud_says("cmd", {"t": "unlock", "grant": "g"})
    assert c.client.last_reject == "no_clock"
    assert c.lock.grants == []


def test_a_request_at_boot_waits_for_the_link():
    c = Case(uptime_ms=500)
    assert c.client.reachable(500) and not c.client.available()
    c.client.token("04a1b2", "nfc", 500)
    assert c.entry.results == [] and c.bodies("token") == []  # held, not refused
    c.connect()
    c.run(600, 900)
    assert c.bodies("token") == []  # not before the clock is synced
    c.answer_hello()
    c.run(1000, 1100)
    (req,) = c.bodies("token")
    assert req["tok"] == "04a1b2"
    c.cloud_says("rep", {"t": "allow", "re": req["id"], "grant": "g1"})
    assert c.lock.grants == [("nfc", "g1")] and c.entry.results == ["granted"]


def test_a_held_request_is_answered_offline_after_3_s():
    c = Case(uptime_ms=500)
    c.client.token("04a1b2", "nfc", 500)
    c.run(600, 3400)
    assert c.entry.results == []
    c.run(3500, 3600)
    assert c.entry.results == ["offline"]
    assert ("denied", {"source": "nfc", "reason": "offline"}) in c.bus.events
    c.connect()
    c.answer_hello()
    c.run(3700, 4000)
    assert c.bodies("token") == []  # never sent late


def test_one_request_is_held_at_most():
    c = Case(uptime_ms=500)
    c.client.token("aa", "nfc", 500)
    c.client.token("bb", "nfc", 600)
    c.connect()
    c.answer_hello()
    c.run(700, 800)
    assert [b["tok"] for b in c.bodies("token")] == ["bb"]


def test_reachable_only_while_the_link_is_expected():
    c = Case(uptime_ms=20000)  # long after boot, no link
    assert not c.client.reachable(20000)
    c.client.token("aa", "nfc", 20000)
    assert c.entry.results == ["offline"]  # refused at once, as before
    c.link.connecting = True
    assert c.client.reachable(20000)
    c.link.connecting = False
    c.connect()  # greeting in progress
    assert c.client.reachable(20000)
    c.run(20000, 31000)
    assert not c.client.reachable(31000)  # nobody answered for 10 s: offline, not held
    c.answer_hello()
    assert c.client.reachable(31000) and c.client.available()


# -- App.tap: a card tapped at boot waits for the link ----------------------------------------
class FakeStaff:
    def check_badge(self, uid):
        return None


class TapEntry(FakeEntry):
    # The keypad flow's side of App.tap: its own checks (Entry.refused, the real code) over the
    # case's lock, bus and client; what it would show is recorded.
    def __init__(self, case=None):
        FakeEntry.__init__(self)
        self.waits = 0
        if case is not None:
            self.lock, self.bus, self.cloud = case.lock, case.bus, case.client

    def waiting(self, now):
        self.waits += 1

    def refused(self, now, source, last2=None):
        from lockcase.entry import Entry

        return Entry.refused(self, now, source, last2)

    def _message(self, now, l1, l2, after):
        self.results.append("offline" if l1 == "Service offline" else l1)


class TapApp:
    # The attributes App.tap uses, around a real CloudClient (the method itself is App's).
    def __init__(self, case):
        self.cloud = case.client
        self.lock = case.lock
        self.bus = case.bus
        self.staff = FakeStaff()
        self.entry = case.entry
        self.display = _Screen()

    def _tap(self, uid, src, now):
        from lockcase.app import App

        App._tap(self, uid, src, now)


class _Screen:
    defer = False  # as a display is until App.run(): App.tap leaves it to show()


def _tap(app, uid, now):
    from lockcase.app import App

    App.tap(app, uid, "nfc", now)


def test_an_answer_delivered_while_the_request_is_being_published_is_taken():
    # umqtt hands over what arrives while it waits for the request's PUBACK: the answer may come
    # inside publish(), before it returns.
    c = Case()
    c.connect()
    c.answer_hello()
    publish = c.link.publish

    def quick(topic, payload, retain=False):
        ok = publish(topic, payload, retain)
        if topic.endswith("/req"):
            kind, body = P.verify(KEY, topic, payload)
            c.cloud_says("rep", {"t": "allow", "re": body["id"], "grant": "g1"})
        return ok

    c.link.publish = quick
    c.client.token("04a1b2", "nfc", 0)
    assert c.lock.grants == [("nfc", "g1")] and c.entry.results == ["granted"], c.entry.results
    c.run(0, 10000)
    assert c.entry.results == ["granted"]  # no timeout afterwards


def test_a_request_the_link_refuses_is_offline_and_not_in_flight():
    c = Case()
    c.connect()
    c.answer_hello()
    c.link.publish = lambda topic, payload, retain=False: False  # up, but the write failed
    c.client.token("04a1b2", "nfc", 0)
    assert c.entry.results == ["offline"]
    c.run(0, 10000)
    assert c.entry.results == ["offline"]  # no timeout for a request that never left


def test_a_card_tapped_at_boot_waits_for_the_link_and_opens():
    c = Case(uptime_ms=300)
    c.entry = c.client.entry = TapEntry(c)
    app = TapApp(c)
    _tap(app, "04a1b2", 300)
    assert c.entry.results == [] and c.entry.waits == 1  # waiting, not "Service offline"
    c.connect()
    c.answer_hello()
    c.run(400, 500)
    (req,) = c.bodies("token")
    c.cloud_says("rep", {"t": "allow", "re": req["id"], "grant": "g1"})
    assert c.lock.grants == [("nfc", "g1")] and c.entry.results == ["granted"]


def test_a_card_tapped_long_after_boot_without_a_link_is_refused_at_once():
    c = Case(uptime_ms=60000)
    c.entry = c.client.entry = TapEntry(c)
    _tap(TapApp(c), "04a1b2", 60000)
    assert c.entry.results == ["offline"] and c.entry.waits == 0
    assert ("denied", {"source": "nfc", "reason": "offline"}) in c.bus.events


def test_a_request_sent_directly_drops_the_one_held():
    c = Case(uptime_ms=500)
    c.client.token("aa", "nfc", 500)  # held
    c.connect()
    c.answer_hello()
    c.client.token("bb", "nfc", 600)  # available now: sent at once
    c.run(700, 800)
    assert [b["tok"] for b in c.bodies("token")] == ["bb"]


def _synced_case():
    c = Case(uptime_ms=20000)
    c.connect()
    c.answer_hello()
    return c


def test_a_new_number_after_a_texted_code_starts_a_new_session():
    # After a wrong code, a shopper types another number while the old code is still valid: it
    # must not go with the old session (the cloud would answer "Code expired").
    c = _synced_case()
    c.client.phone("+12025550143", 20000)
    (req,) = c.bodies("phone")
    assert "sid" not in req
    c.cloud_says("rep", {"t": "challenge", "re": req["id"], "sid": "s-code", "need": "code", "ttl": 300})
    c.client.code("111111", 21000)
    otp = c.bodies("otp")[-1]
    assert otp["sid"] == "s-code"
    c.cloud_says("rep", {"t": "deny", "re": otp["id"], "why": "bad_code", "left": 2})
    assert c.entry.results[-1] == "denied_code" and c.entry.left == 2  # the cloud's count, to show
    c.client.phone("+12025550188", 22000)
    assert "sid" not in c.bodies("phone")[-1]


def test_a_number_answering_a_card_challenge_keeps_its_session():
    c = _synced_case()
    c.client.token("04a1b2", "card", 20000)
    (tok,) = c.bodies("token")
    c.cloud_says("rep", {"t": "challenge", "re": tok["id"], "sid": "s-card", "need": "phone", "ttl": 300})
    c.client.phone("+12025550102", 21000)
    assert c.bodies("phone")[-1]["sid"] == "s-card"


def test_a_card_tapped_while_the_tamper_alarm_is_latched_is_refused_without_asking():
    c = _synced_case()
    c.entry = c.client.entry = TapEntry(c)
    c.lock.blocked = True
    _tap(TapApp(c), "04a1b2", 20000)
    assert c.bodies("token") == [] and c.lock.grants == []
    assert ("denied", {"source": "nfc", "reason": "tamper"}) in c.bus.events


# -- out of memory: said, journaled once, never fatal (issue 10) --------------------------------
class Starving:
    """Stands in for what allocates (the codec's sign, the TCP connect): fails with MemoryError
    while `left` is 0, as a chip's fragmented heap does."""

    def __init__(self, real, left=0):
        self.real = real
        self.left = left
        self.calls = 0

    def __call__(self, *a, **k):
        self.calls += 1
        if self.left <= 0:
            raise MemoryError("memory allocation failed, allocating 1868 bytes")
        self.left -= 1
        return self.real(*a, **k)


class NomemLink(FakeLink):
    # The real Link's reporting, around FakeLink's publish.
    def __init__(self, bus, logs):
        FakeLink.__init__(self)
        self._real = Link({"host": "127.0.0.1"}, TOPICS, (), log=logs.append, emit=bus.emit)

    def nomem(self, where):
        self._real.nomem(where)


def _starving_case():
    c = Case(uptime_ms=60000)
    logs = []
    c.link = c.client.link = NomemLink(c.bus, logs)
    return c, logs


def test_a_request_that_cannot_be_signed_answers_offline_at_once_and_says_why():
    c, logs = _starving_case()
    c.connect()
    c.answer_hello()
    c.codec.sign = Starving(c.codec.sign)
    c.client.token("04a1b2", "nfc", 60000)  # must not raise into the keypad/NFC path
    assert c.entry.results == ["offline"], c.entry.results
    assert ("fault", {"part": "cloud", "error": "no memory: request"}) in c.bus.events
    assert "cloud: out of memory (request)" in logs


def test_a_step_that_cannot_sign_does_not_end_the_app_loop():
    c, logs = _starving_case()
    c.connect()
    c.answer_hello()
    c.codec.sign = Starving(c.codec.sign)
    c.run(60000, 200000, step=1000)  # beats and hellos fail to sign on every step: none raises
    faults = [e for e in c.bus.events if e[0] == "fault"]
    assert faults == [("fault", {"part": "cloud", "error": "no memory: send"})], faults  # journaled once
    assert c.client.link._real.nomem_count >= 2 and logs.count("cloud: out of memory (send)") >= 2
    # memory back: the next beat goes out
    c.codec.sign = c.codec.sign.real
    n = len(c.bodies("beat"))
    c.run(200000, 270000, step=1000)
    assert len(c.bodies("beat")) > n


def test_a_connect_without_memory_is_a_fault_once_and_a_connection_clears_it():
    import asyncio

    from lockcase.uplink import transport

    bus = FakeBus()
    logs = []
    link = Link({"host": "127.0.0.1", "port": 1}, TOPICS, (), log=logs.append, emit=bus.emit)
    link.next_delay = lambda r=None: 1  # retry at once: the test needs several attempts
    real = transport.open_connection
    transport.open_connection = Starving(real)
    try:
        async def go():
            try:
                await asyncio.wait_for_ms(link.run(), 60)
            except asyncio.TimeoutError:
                pass

        asyncio.run(go())
    finally:
        transport.open_connection = real
    assert transport.open_connection is real
    assert link.failures >= 2 and link.nomem_count == link.failures and not link.up
    assert bus.events == [("fault", {"part": "cloud", "error": "no memory: connect"})], bus.events
    assert "cloud: out of memory (connect)" in logs
    assert any(line.startswith("cloud: connect failed (MemoryError") for line in logs), logs
    link._connected()  # what a connect that got its memory ends with
    assert bus.events[-1] == ("fault_cleared", {"part": "cloud"})
    link._connected()  # cleared once
    assert [e[0] for e in bus.events].count("fault_cleared") == 1


def test_a_message_that_cannot_be_handled_for_memory_keeps_the_link_up():
    bus = FakeBus()
    logs = []
    link = Link({"host": "127.0.0.1"}, TOPICS, (), log=logs.append, emit=bus.emit)
    link.on_message = Starving(None)
    link.up = True
    link._deliver(b"lockcase/v1/s1/c1/cmd", b"{}")
    assert link.up and bus.events == [("fault", {"part": "cloud", "error": "no memory: receive"})]


def test_saying_it_is_out_of_memory_may_fail_too_without_ending_the_loop():
    # The report itself allocates (a line, an event, a journal write): when that fails as well,
    # the guard still holds, and the fault is journaled once memory is back.
    c, logs = _starving_case()
    c.connect()
    c.answer_hello()
    c.codec.sign = Starving(c.codec.sign)
    real_emit = c.bus.emit
    c.client.link._real.emit = Starving(real_emit)  # the bus cannot take the event either
    c.run(60000, 65000, step=1000)  # must not raise
    assert not [e for e in c.bus.events if e[0] == "fault"]
    c.client.link._real.emit = real_emit
    c.run(66000, 125000, step=1000)  # the next beat tries to sign again
    assert [e for e in c.bus.events if e[0] == "fault"] == [("fault", {"part": "cloud", "error": "no memory: send"})]
