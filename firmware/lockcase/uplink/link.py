# The case's resilience layer around the MQTT client: connect with a deadline, Last Will for
# presence, resubscribe, keepalive pings and dead-broker detection, reconnect with capped
# exponential backoff and full jitter. Everything it does is bounded, and it never touches the
# lock: it only hands verified messages to the cloud client and sends what it is given.
import asyncio
import os

from lockcase.compat import const, ticks_diff, ticks_ms

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(20000)
# From the broker's return to connected again: the longest wait between attempts plus one attempt
# (TCP connect, TLS handshake, CONNACK) stays under this, so a case is back within 30 s.
_RECONNECT_BOUND_MS = const(29000)
_FLOOR_MS = const(250)  # never retry in a tight loop, even when the dice say 0
_WAIT_MAX_MS = const(1000)  # the reader re-checks keepalive and link state at least this often


def _ignore(*args, **data):  # what the link calls before bind(), and emit when none is given
    pass


def tls_context(ca):
    # Made once and kept by the link for every connection: its mbedTLS state (about 1.9 KB in
    # one block, the parsed CA, the seeded random generator) is not asked of a heap that a day's
    # running has broken into small pieces each time the broker comes back (docs/memory.md).
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue]
    ctx.load_verify_locations(ca)  # the CA's DER
    return ctx


def ceiling(attempt, cap):
    """The upper bound of the wait before reconnect attempt `attempt` (0, 1, ...): 1 s doubling,
    at most `cap`. Counted by doubling, not 2**attempt, so it stays a small int on any port."""
    c = _BACKOFF_MIN_MS
    while attempt > 0 and c < cap:
        c *= 2
        attempt -= 1
    return c if c < cap else cap


def full_jitter(ceil, r):
    """A wait uniform over [_FLOOR_MS, ceil] for a random byte r (0..255): "full jitter", so a
    store's cases that lost the broker together spread over the whole window instead of arriving
    in the same second (+-25 % around a shared schedule kept them in lockstep)."""
    if ceil <= _FLOOR_MS:
        return _FLOOR_MS
    return _FLOOR_MS + (ceil - _FLOOR_MS) * r // 255  # < 2**23: a small int even on 32-bit ports


def _readable(sock):
    # Returns once `sock` is readable: asyncio's own I/O wait (what its StreamReader does), so the
    # loop sleeps in poll() until the broker sends, instead of waking every few ms to look.
    yield asyncio.core._io_queue.queue_read(sock)  # pyright: ignore


class Link:
    def __init__(self, cfg, topics, subs, net=None, log=print, emit=_ignore):
        self.host = cfg["host"]
        self.port = cfg.get("port") or (8883 if cfg.get("ca") else 1883)
        self.user = cfg.get("user")
        self.password = cfg.get("password")
        self.client_id = cfg.get("client_id") or "case-" + cfg.get("user", "x")
        self.ca = cfg.get("ca")  # DER bytes of the broker's CA, or None for plain MQTT
        self.tls = None  # the TLS context (tls_context), kept for every connection
        if self.ca:
            try:  # made now, on a heap not yet broken up by the running case
                self.tls = tls_context(self.ca)
            except Exception:  # noqa: S110  (made again at the first connect, which reports why)
                pass
        self.keepalive = cfg.get("keepalive", 30)
        self.io_timeout = cfg.get("io_timeout_s", 2)
        self.connect_ms = cfg.get("connect_timeout_ms", 3000)
        self.topics = topics
        self.subs = subs
        self.net = net  # lockcase.drivers.wifi.Wifi, or None where the board is always online
        self.on_message = _ignore
        self.on_up = _ignore
        self.on_down = _ignore
        self.log = log
        self.emit = emit  # the app's bus: what the store must see about the link (fault events)
        self.up = False
        self.client = None
        # Reconnect schedule: the cap leaves room for one whole attempt inside the 30 s bound.
        attempt_ms = self.connect_ms + self.io_timeout * 1000 * (2 if self.ca else 1)
        self.max_delay_ms = max(_BACKOFF_MIN_MS, min(_BACKOFF_MAX_MS, _RECONNECT_BOUND_MS - attempt_ms))
        self.worst_reconnect_ms = self.max_delay_ms + attempt_ms
        self.attempt = 0  # failed attempts since the last connection (0 after a drop)
        self.connecting = False  # a connect attempt is under way (CloudClient.reachable)
        self.up_at = 0  # ticks_ms() when the link last came up
        self.connects = 0
        self.failures = 0
        self.nomem_count = 0  # allocations the link or the client could not get (status, tests)
        self._starved = False  # a "no memory" fault is open: cleared by the next connection
        self._last_rx = 0
        self._last_tx = 0
        self._ping_out = False

    def bind(self, on_message, on_up, on_down=_ignore):
        # The cloud client is built after the link (it sends through it); it plugs in here.
        # on_down: the connection is closed (before any other is opened).
        self.on_message = on_message
        self.on_up = on_up
        self.on_down = on_down

    # -- sending --------------------------------------------------------------------------------
    def publish(self, topic, payload, retain=False):
        """Send now if connected. Returns False (never raises) when the link is down."""
        c = self.client
        if not self.up or c is None:
            return False
        try:
            c.publish(topic, payload, retain, 1)
            self._last_tx = ticks_ms()
            return True
        except Exception as exc:
            self._failed("publish", exc)
            return False

    def next_delay(self, r=None):
        """The wait before the next connect attempt (ms); counts the attempt. r: a random byte,
        given by tests; urandom otherwise."""
        if r is None:
            r = os.urandom(1)[0]
        d = full_jitter(ceiling(self.attempt, self.max_delay_ms), r)
        self.attempt += 1
        return d

    # -- the loop -------------------------------------------------------------------------------
    async def run(self):
        while True:
            if self.net is not None and not self.net.check():
                await asyncio.sleep_ms(500)  # no network yet: the broker cannot be reached
                continue
            self.connecting = True
            try:
                await self._connect()
            except Exception as exc:
                self.connecting = False
                self.failures += 1
                delay = self.next_delay()
                self._close()  # first: what the attempt holds is garbage before anything is said
                if isinstance(exc, MemoryError):
                    self.nomem("connect")
                try:
                    self.log("cloud: connect failed (%r), retry in %d ms" % (exc, delay))
                except MemoryError:  # the link must go on retrying whatever the heap says
                    pass
                await asyncio.sleep_ms(delay)
                continue
            self.connecting = False
            self.attempt = 0
            await self._serve()
            # Dropped: the broker may be restarting, so wait a little (spread over the store's
            # cases) before the first attempt; later ones back off from there.
            await asyncio.sleep_ms(self.next_delay())

    async def _serve(self):
        # Event-driven: sleep until the broker sends something or the keepalive needs attention.
        # The socket waited on is the one umqtt reads (the TLS socket when there is one, never the
        # raw TCP one under it): a TLS socket may hold decrypted bytes the TCP socket no longer
        # shows, and its poll reports them (as its pending() does).
        while self.up:
            more = self._service()
            c = self.client
            if not self.up or c is None:
                break
            if more:
                await asyncio.sleep_ms(0)  # more queued: let the app loop and the watchdog run first
                continue
            try:
                await asyncio.wait_for_ms(_readable(c.rsock), self._wait_ms())  # pyright: ignore
            except asyncio.TimeoutError:
                pass  # nothing arrived: time for the keepalive checks in _service

    def _wait_ms(self):
        # Until the next keepalive deadline (ping due, broker declared dead), at most _WAIT_MAX_MS
        # (the link may also be taken down from elsewhere, by a failed publish).
        now = ticks_ms()
        half = self.keepalive * 500
        if self._ping_out:
            d = self.keepalive * 1500 - ticks_diff(now, self._last_rx)
        else:
            d = half - max(ticks_diff(now, self._last_rx), ticks_diff(now, self._last_tx))
        d += 1  # the checks use strict "more than"
        return 1 if d < 1 else d if d < _WAIT_MAX_MS else _WAIT_MAX_MS

    async def _connect(self):
        import gc

        # The running case's garbage goes first, so the transport's code and the connection's
        # objects are placed in the holes it leaves, not between it: measured on the 32-bit
        # port, the production case then completes at 136k, where it failed without
        # (docs/memory.md). One collection per attempt: a few ms, once in seconds at most.
        gc.collect()
        from lockcase.uplink import transport

        raw, addr = await transport.open_connection(self.host, self.port, self.connect_ms)
        sock = raw
        if self.ca:
            if self.tls is None:
                self.tls = tls_context(self.ca)
            sock = transport.tls_wrap(self.tls, raw, self.host, self.io_timeout)
        c = transport.Client(self.client_id, self.host, self.port, self.user, self.password, self.keepalive)
        c.set_callback(self._deliver)
        c.set_last_will(self.topics["presence"], b"offline", True, 1)
        self.client = c
        c.attach(sock, raw, addr, self.io_timeout)
        for t in self.subs:
            c.subscribe(t, 1)
        c.publish(self.topics["presence"], b"online", True, 1)
        self._connected()

    def _connected(self):
        self.up = True
        self.up_at = ticks_ms()
        self.connects += 1
        self._last_rx = self._last_tx = ticks_ms()
        self._ping_out = False
        self.log("cloud: connected to %s:%d" % (self.host, self.port))
        if self._starved:
            self._starved = False
            self.emit("fault_cleared", part="cloud")
        self.on_up()

    def _service(self):
        """Reads what the broker sent (at most 8 packets: the app loop must not starve), then the
        keepalive. Returns True when more may be waiting."""
        now = ticks_ms()
        c = self.client
        if c is None:
            self.up = False
            return False
        more = False
        try:
            n = 0
            while self.up and c.pending():
                if n == 8:
                    more = True
                    break
                n += 1
                c.check_msg()
                self._last_rx = now
                self._ping_out = False
            if not self.up:
                return False
            idle = ticks_diff(now, self._last_rx)
            if idle > self.keepalive * 1500:
                self._down("broker silent for %d ms" % idle)
            elif not self._ping_out and (idle > self.keepalive * 500 or ticks_diff(now, self._last_tx) > self.keepalive * 500):
                c.ping()
                self._ping_out = True
                self._last_tx = now
        except Exception as exc:
            self._failed("read", exc)
        return more

    def _deliver(self, topic, msg):
        try:
            self.on_message(topic.decode(), msg)
        except MemoryError:  # the message is lost (the sender repeats it), the link stays up
            self.nomem("receive")
        except Exception as exc:  # one bad message must not take the link down
            self.log("cloud: handler failed: %r" % (exc,))

    def nomem(self, where):
        """An allocation for the cloud failed (a fragmented heap, a TLS handshake's buffers):
        never silent. Said on the console every time and journaled as a fault once until the link
        works again; the case goes on offline (staff PIN and badge open it on the device)."""
        self.nomem_count += 1
        # Saying so allocates too (the line, the event, the journal's write): if that fails as
        # well, the caller's guard must still hold, so nothing here may raise MemoryError.
        try:
            self.log("cloud: out of memory (" + where + ")")
            if not self._starved:
                self.emit("fault", part="cloud", error="no memory: " + where)
                self._starved = True  # only once it is said: a failed say is tried again
        except MemoryError:
            pass

    def _failed(self, where, exc):
        if isinstance(exc, MemoryError):
            self.nomem(where)
        try:
            why = "%s: %r" % (where, exc)
        except MemoryError:  # the link still goes down, said or not
            why = where
        self._down(why)

    def _down(self, why):
        if self.up:
            try:
                self.log("cloud: link down: " + why)
            except MemoryError:
                pass
        self.up = False
        self._close()

    def _close(self):
        c = self.client
        self.client = None
        self.on_down()  # first: the next connection's subscribe may deliver before its on_up
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except Exception:
                pass
