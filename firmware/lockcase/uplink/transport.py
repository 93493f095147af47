# umqtt.simple (fetched at build time) is the MQTT protocol layer. It blocks on its socket and
# connects by itself; this module is where that is made safe for a case whose keypad and lock
# share one asyncio loop with it (the platform quirks live here, in one place):
# - the TCP connect is done here, non-blocking, polled from the loop with a deadline;
# - umqtt gets the connected socket through a stand-in for its `socket` module;
# - every "blocking" read or write umqtt does is bounded by a timeout, so a broker that stops
#   mid-packet costs at most io_timeout, never a freeze (the watchdog would reset us).
import asyncio
import select
import socket

from umqtt import simple

from lockcase.compat import const, ticks_diff, ticks_ms

_EINPROGRESS = const((115, 119, 11))  # Linux, lwIP, EAGAIN: all mean "connect under way"


class _Bounded:
    """A socket whose blocking mode waits at most `timeout` seconds.

    sock is what umqtt reads and writes (the TLS socket when there is one); raw is the TCP socket
    under it, which carries the timeout (MicroPython's TLS socket has no settimeout).
    """

    def __init__(self, sock, raw, timeout):
        self.s = sock
        self.raw = raw
        self.timeout = timeout

    def setblocking(self, value):
        if value:
            self.s.setblocking(True)
            self.raw.settimeout(self.timeout)
        else:
            self.s.setblocking(False)

    def read(self, n):
        return self.s.read(n)

    def write(self, buf, n=None):
        if n is not None:
            buf = memoryview(buf)[:n]
        return self.s.write(buf)

    def connect(self, addr):
        pass  # already connected by open_connection()

    def close(self):
        self.s.close()


class _SocketModule:
    # What umqtt.simple sees as `socket` during connect(): hands over our connected socket.
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr

    def socket(self, *args):
        return self.sock

    def getaddrinfo(self, host, port, *args):
        return [(None, None, None, None, self.addr)]


async def open_connection(host, port, timeout_ms):
    # getaddrinfo on a name blocks for DNS; a broker given by IP address never does.
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        # umqtt writes a packet in several small writes; without this, Nagle's algorithm and the
        # broker's delayed ACK hold every request back by tens of milliseconds.
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: same numbers on Linux and lwIP
    except (OSError, AttributeError):
        pass
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as exc:
        if exc.args[0] not in _EINPROGRESS:
            s.close()
            raise
    p = select.poll()
    p.register(s, select.POLLOUT)
    t0 = ticks_ms()
    while True:
        ev = p.poll(0)
        if ev:
            if ev[0][1] & (select.POLLERR | select.POLLHUP):
                s.close()
                raise OSError(111, "connection refused")
            return s, ai[-1]
        if ticks_diff(ticks_ms(), t0) > timeout_ms:
            s.close()
            raise OSError(110, "connect timed out")
        await asyncio.sleep_ms(20)


def tls_wrap(ctx, sock, host, timeout):
    # The handshake is CPU-bound on a microcontroller (about a second on an ESP32-S3); it runs
    # once per connect, bounded by the socket timeout.
    sock.settimeout(timeout)
    return ctx.wrap_socket(sock, server_hostname=host)  # handshakes now, bounded by the timeout


class Client(simple.MQTTClient):
    """umqtt.simple's client, connected over a socket we opened, with bounded blocking."""

    def attach(self, sock, raw, addr, timeout, clean_session=True):
        bounded = self.bounded = _Bounded(sock, raw, timeout)  # umqtt's sock once connected
        bounded.setblocking(True)
        # What the link waits on for readability: the socket umqtt reads (TLS when there is one:
        # its poll also reports decrypted bytes it holds, which the TCP socket under it does not).
        self.rsock = sock
        self.poll = select.poll()
        self.poll.register(sock, select.POLLIN)
        # umqtt.simple imports its socket module under the name `socket`.
        real = getattr(simple, "socket")
        setattr(simple, "socket", _SocketModule(bounded, addr))
        try:
            return self.connect(clean_session)
        finally:
            setattr(simple, "socket", real)

    def publish(self, topic, msg, retain=False, qos=0):
        """umqtt.simple's PUBLISH, framed here: in two writes, not its five (with TCP_NODELAY each
        was a TCP segment of its own, on a chip a Wi-Fi frame, over TLS a record with its own
        ~30 bytes and encryption, and the broker woke for each), and at QoS 1 without waiting for
        the broker's PUBACK: umqtt's wait blocked the case's whole loop (keypad, reader, lock) for
        a broker round trip at every request, event batch and beat, up to the socket timeout (2 s)
        on a poor link. wait_msg() reads the PUBACK when it comes. Nothing here needed it:
        requests have their answers and timeouts, events their evtack, and umqtt never sent
        anything again for a missing PUBACK anyway."""
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        if isinstance(topic, str):
            topic = topic.encode()
        t = len(topic)
        n = 2 + t + 2 * qos + len(msg)
        head = bytearray(4 + 2 + t + 2)  # the fixed header (at most 4 length bytes), topic, id
        head[0] = 0x30 | qos << 1 | retain
        i = 1
        while n > 0x7F:
            head[i] = (n & 0x7F) | 0x80
            n >>= 7
            i += 1
        head[i] = n
        head[i + 1] = t >> 8
        head[i + 2] = t & 0xFF
        i += 3
        head[i : i + t] = topic
        i += t
        if qos:
            # 1..65535: umqtt's own count never wraps, and id 0 after 65,535 publishes is a
            # protocol error that ends the connection
            self.pid = pid = self.pid % 65535 + 1
            head[i] = pid >> 8
            head[i + 1] = pid & 0xFF
            i += 2
        b = self.bounded
        b.write(head, i)
        b.write(msg)

    def wait_msg(self):
        op = simple.MQTTClient.wait_msg(self)
        if op == 0x40:
            # A PUBACK (of a publish above, which did not wait): umqtt read its first byte only;
            # its length byte and packet id follow (the socket is blocking again, with a timeout).
            if self.bounded.read(1) != b"\x02":  # a PUBACK's remaining length: anything else is
                raise OSError(71, "bad PUBACK")  # out of step with the broker (EPROTO: link down)
            self.bounded.read(2)
        return op

    def pending(self):
        # True when the broker has sent something; check_msg() then reads one packet.
        return bool(self.poll.poll(0))
