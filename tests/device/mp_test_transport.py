# The case's MQTT transport over a recording socket: a PUBLISH leaves in two writes (its header,
# then its payload), not umqtt.simple's five, and the bytes are the same MQTT packet.
from lockcase.uplink.transport import Client, _Bounded


class Sock:
    def __init__(self, incoming=b""):
        self.writes = []
        self.incoming = bytearray(incoming)

    def write(self, buf):
        self.writes.append(bytes(buf))
        return len(buf)

    def read(self, n):
        out = bytes(self.incoming[:n])
        self.incoming = self.incoming[n:]
        return out

    def setblocking(self, flag):
        pass

    def settimeout(self, t):
        pass


def _client(sock):
    c = Client("case-c1", "127.0.0.1", 1883)
    c.sock = c.bounded = _Bounded(sock, sock, 5)  # what attach() does once connected
    return c


def _packet(topic, payload, qos, pid=0):
    var = bytes([len(topic) >> 8, len(topic) & 0xFF]) + topic + (bytes([pid >> 8, pid & 0xFF]) if qos else b"")
    n = len(var) + len(payload)
    size = bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        size.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1]) + bytes(size) + var + payload


def test_a_qos1_publish_is_two_writes_and_does_not_wait_for_its_puback():
    s = Sock()  # nothing from the broker: umqtt's publish would block here until its timeout
    c = _client(s)
    body = b"x" * 300  # a two-byte remaining length
    c.publish(b"lockcase/v1/s1/c1/req", body, False, 1)
    assert len(s.writes) == 2, [len(w) for w in s.writes]
    assert s.writes[1] == body
    assert b"".join(s.writes) == _packet(b"lockcase/v1/s1/c1/req", body, 1, 1)
    c.publish(b"a/b", b"y", True, 1)
    pkt = _packet(b"a/b", b"y", 1, 2)
    assert b"".join(s.writes[2:]) == bytes([pkt[0] | 1]) + pkt[1:]  # retained, the next packet id


def test_the_puback_is_read_whole_when_it_comes_and_what_follows_is_delivered():
    got = []
    s = Sock(b"\x40\x02\x00\x01" + _packet(b"lockcase/v1/s1/c1/rep", b"answer", 0))
    c = _client(s)
    c.set_callback(lambda topic, msg: got.append((topic, msg)))
    c.publish(b"lockcase/v1/s1/c1/req", b"q", False, 1)
    assert c.check_msg() == 0x40 and got == []
    c.check_msg()
    assert got == [(b"lockcase/v1/s1/c1/rep", b"answer")] and not s.incoming


def test_packet_ids_wrap_within_1_to_65535():
    s = Sock()
    c = _client(s)
    c.pid = 65535
    c.publish(b"a/b", b"p", False, 1)
    assert b"".join(s.writes) == _packet(b"a/b", b"p", 1, 1)  # not 65536, nor 0


def test_a_qos0_publish_and_a_str_topic():
    s = Sock()
    c = _client(s)
    c.publish("lockcase/v1/s1/c1/presence", b"online", True, 0)
    assert len(s.writes) == 2
    pkt = _packet(b"lockcase/v1/s1/c1/presence", b"online", 0)
    assert b"".join(s.writes) == bytes([pkt[0] | 1]) + pkt[1:]  # the retain flag


def test_a_long_topic_is_written_as_it_comes_and_the_packet_is_whole():
    s = Sock()
    c = _client(s)
    topic = b"t/" + b"y" * 200  # longer than the gathered head's room
    c.publish(topic, b"p", False, 0)
    assert b"".join(s.writes) == _packet(topic, b"p", 0)


def test_writes_after_a_publish_are_not_held():
    s = Sock()
    c = _client(s)
    c.publish(b"a/b", b"p", False, 0)
    n = len(s.writes)
    c.ping()
    assert len(s.writes) == n + 1 and s.writes[-1] == b"\xc0\x00"


def test_a_publish_that_fails_half_way_keeps_nothing_for_the_next():
    class Broken(Sock):
        def write(self, buf):
            if len(buf) > 10:
                raise OSError(104)
            return Sock.write(self, buf)

    s = Broken()
    c = _client(s)
    try:
        c.publish(b"a/b", b"p" * 50, False, 0)
    except OSError:
        pass
    c.bounded.s = ok = Sock()
    c.publish(b"a/b", b"q", False, 0)
    assert b"".join(ok.writes) == _packet(b"a/b", b"q", 0)


def test_a_publish_that_fails_before_its_payload_holds_nothing_back():
    # (e.g. a MemoryError on a chip while the header is built): the writes that follow go out.
    class NoBuffer:
        def __len__(self):
            return 3

    s = Sock()
    c = _client(s)
    try:
        c.publish(NoBuffer(), b"p", False, 0)
    except Exception:
        pass
    c.ping()
    assert s.writes and s.writes[-1] == b"\xc0\x00", s.writes


def test_a_malformed_puback_takes_the_link_down_instead_of_misreading_what_follows():
    s = Sock(b"\x40\x05\x00\x01\x00\x00\x00")  # a PUBACK claiming 5 bytes
    c = _client(s)
    try:
        c.check_msg()
    except OSError as e:
        assert e.args[0] == 71, e.args
    else:
        raise AssertionError("a malformed PUBACK was read as a good one")
