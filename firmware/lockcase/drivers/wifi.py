# Station-mode Wi-Fi over a network.WLAN-like object the board hands in. connect() returns at
# once on both ports; the cloud link asks isconnected() before each attempt and, when the network
# has been gone a while, asks for a fresh association (neither port retries forever by itself).
from lockcase.compat import const, ticks_diff, ticks_ms

_RETRY_MS = const(30000)


class Wifi:
    def __init__(self, wlan, ssid, password):
        self.wlan = wlan
        self.ssid = ssid
        self.password = password
        self._asked = None
        wlan.active(True)
        self.reconnect()

    def isconnected(self):
        return bool(self.wlan.isconnected())

    def reconnect(self):
        self._asked = ticks_ms()
        try:
            self.wlan.connect(self.ssid, self.password)
        except OSError as exc:  # e.g. "already connecting": the next check tells
            print("wifi: connect:", exc)

    def check(self):
        """True when the network is up; otherwise re-asks now and then and returns False."""
        if self.isconnected():
            return True
        if self._asked is None or ticks_diff(ticks_ms(), self._asked) > _RETRY_MS:
            self.reconnect()
        return False
