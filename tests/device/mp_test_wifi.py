# Wi-Fi bring-up and its config, under MicroPython, with a stand-in for network.WLAN.
import asyncio

from lockcase import config
from lockcase.drivers import wifi as wifimod
from lockcase.drivers.wifi import Wifi
from lockcase.uplink.link import Link


class FakeWLAN:
    def __init__(self):
        self.up = False
        self.active_set = None
        self.connects = []

    def active(self, on=None):
        self.active_set = on

    def connect(self, ssid, pw):
        self.connects.append((ssid, pw))

    def isconnected(self):
        return self.up


def test_wifi_joins_and_reports():
    w = FakeWLAN()
    net = Wifi(w, "shop", "secret123")
    assert w.active_set is True and w.connects == [("shop", "secret123")]
    assert not net.check()
    w.up = True
    assert net.check()


def test_wifi_asks_again_after_a_while():
    w = FakeWLAN()
    net = Wifi(w, "shop", "secret123")
    net.check()
    assert len(w.connects) == 1  # not hammering the radio
    net._asked -= 31000
    net.check()
    assert len(w.connects) == 2


def test_wifi_config_is_validated():
    base = {"case_id": "c1"}
    ok = config.validate(dict(base, wifi={"ssid": "shop", "password": "secret123"}))
    assert ok["wifi"] == {"ssid": "shop", "password": "secret123"}
    assert config.validate(dict(base, wifi={"ssid": "open"}))["wifi"]["password"] == ""
    for bad in ({"ssid": ""}, {"ssid": "x" * 33}, {"ssid": "a", "password": "short"}, "shop"):
        try:
            config.validate(dict(base, wifi=bad))
        except config.ConfigError as exc:
            assert "wifi" in str(exc)
        else:
            raise AssertionError("accepted %r" % (bad,))


def test_link_waits_for_the_network_before_connecting():
    w = FakeWLAN()
    net = Wifi(w, "shop", "secret123")
    topics = {"presence": "p"}
    link = Link({"host": "127.0.0.1", "port": 9}, topics, (), net, log=lambda *a: None)

    async def go():
        t = asyncio.create_task(link.run())
        await asyncio.sleep_ms(300)
        t.cancel()

    asyncio.run(go())
    assert link.failures == 0 and link.connects == 0  # never tried: the network was down
    assert wifimod is not None
