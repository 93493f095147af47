# The case's resilience layer around the MQTT client: connect with a deadline, Last Will for
# presence, resubscribe, keepalive pings and dead-broker detection, reconnect with exponential
# backoff and jitter. Everything it does is bounded, and it never touches the lock: it only hands
# verified messages to the cloud client and sends what it is given.
import asyncio
import os

from lockcase.compat import const, ticks_diff, ticks_ms

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)


def _ignore2(a, b):
    pass


def _ignore0():
    pass


def _jitter(ms):
    # +-25 %: a store's cases that lost the broker together must not come back in lockstep.
    r = os.urandom(1)[0] / 255
    return int(ms * (0.75 + r * 0.5))


class Link:
    def __init__(self, cfg, topics, subs, net=None, log=print):
        self.host = cfg["host"]
        self.port = cfg.get("port") or (8883 if cfg.get("ca") else 1883)
        self.user = cfg.get("user")
        self.password = cfg.get("password")
        self.client_id = cfg.get("client_id") or "case-" + cfg.get("user", "x")
        self.ca = cfg.get("ca")  # DER bytes of the broker's CA, or None for plain MQTT
        self.keepalive = cfg.get("keepalive", 30)
        self.io_timeout = cfg.get("io_timeout_s", 2)
        self.connect_ms = cfg.get("connect_timeout_ms", 3000)
        self.topics = topics
        self.subs = subs
        self.net = net  # lockcase.drivers.wifi.Wifi, or None where the board is always online
        self.on_message = _ignore2
        self.on_up = _ignore0
        self.log = log
        self.up = False
        self.client = None
        self.backoff = _BACKOFF_MIN_MS
        self.connects = 0
        self.failures = 0
        self._last_rx = 0
        self._last_tx = 0
        self._ping_out = False

    def bind(self, on_message, on_up):
        # The cloud client is built after the link (it sends through it); it plugs in here.
        self.on_message = on_message
        self.on_up = on_up

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
            self._down("publish: %r" % (exc,))
            return False

    # -- the loop -------------------------------------------------------------------------------
    async def run(self):
        while True:
            if self.net is not None and not self.net.check():
                await asyncio.sleep_ms(500)  # no network yet: the broker cannot be reached
                continue
            try:
                await self._connect()
            except Exception as exc:
                self.failures += 1
                self.log("cloud: connect failed (%r), retry in %d ms" % (exc, self.backoff))
                self._close()
                await asyncio.sleep_ms(_jitter(self.backoff))
                self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)
                continue
            self.backoff = _BACKOFF_MIN_MS
            while self.up:
                self._service()
                await asyncio.sleep_ms(10)  # a reply waits at most one loop tick to be read
            await asyncio.sleep_ms(_jitter(_BACKOFF_MIN_MS))

    async def _connect(self):
        from lockcase.cloud import mqtt

        raw, addr = await mqtt.open_connection(self.host, self.port, self.connect_ms)
        sock = raw
        if self.ca:
            sock = mqtt.tls_wrap(raw, self.host, self.ca, self.io_timeout)
        c = mqtt.Client(self.client_id, self.host, self.port, self.user, self.password, self.keepalive)
        c.set_callback(self._deliver)
        c.set_last_will(self.topics["presence"], b"offline", True, 1)
        self.client = c
        c.attach(sock, raw, addr, self.io_timeout)
        for t in self.subs:
            c.subscribe(t, 1)
        c.publish(self.topics["presence"], b"online", True, 1)
        self.up = True
        self.connects += 1
        self._last_rx = self._last_tx = ticks_ms()
        self._ping_out = False
        self.log("cloud: connected to %s:%d" % (self.host, self.port))
        self.on_up()

    def _service(self):
        now = ticks_ms()
        c = self.client
        if c is None:
            self.up = False
            return
        try:
            n = 0
            while self.up and n < 8 and c.pending():
                n += 1
                c.check_msg()
                self._last_rx = now
                self._ping_out = False
            if not self.up:
                return
            idle = ticks_diff(now, self._last_rx)
            if idle > self.keepalive * 1500:
                self._down("broker silent for %d ms" % idle)
            elif not self._ping_out and (idle > self.keepalive * 500 or ticks_diff(now, self._last_tx) > self.keepalive * 500):
                c.ping()
                self._ping_out = True
                self._last_tx = now
        except Exception as exc:
            self._down("read: %r" % (exc,))

    def _deliver(self, topic, msg):
        try:
            self.on_message(topic.decode(), msg)
        except Exception as exc:  # one bad message must not take the link down
            self.log("cloud: handler failed: %r" % (exc,))

    def _down(self, why):
        if self.up:
            self.log("cloud: link down: " + why)
        self.up = False
        self._close()

    def _close(self):
        c = self.client
        self.client = None
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except Exception:
                pass
