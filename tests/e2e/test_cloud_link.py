"""The firmware's Link (under the MicroPython Unix port) against a real Mosquitto: it reads when
the broker sends, not by looking at the socket every few milliseconds. Count-bounded, not timed:
an idle link wakes for its keepalive checks (at most once a second), where polling woke it about a
hundred times a second; a slower machine only makes the count smaller."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sim.process import REPO, micropython
from tests.cloud.conftest import start_mosquitto

CASE = """
import asyncio, json, sys
from lockcase.uplink.link import Link
cfg = json.loads(sys.argv[1])
link = Link(cfg, {"presence": "lockcase/v1/s1/c1/presence"}, ("lockcase/v1/s1/c1/cmd",), log=print)
calls = [0]
got = []
_service = link._service
def counted():
    calls[0] += 1
    return _service()
link._service = counted
link.bind(lambda t, m: got.append(m), lambda: None)
async def app():  # the case's app loop beside the link: a step every 10 ms
    while True:
        await asyncio.sleep_ms(10)
async def main():
    asyncio.create_task(app())
    asyncio.create_task(link.run())
    while not link.up:
        await asyncio.sleep_ms(10)
    await asyncio.sleep_ms(100)
    n = calls[0]
    await asyncio.sleep_ms(1500)
    print("IDLE", calls[0] - n)
    while not got:
        await asyncio.sleep_ms(10)
    print("GOT", got[0].decode(), link.up)
asyncio.run(main())
"""


def test_link_sleeps_until_the_broker_sends(tmp_path: Path) -> None:
    with start_mosquitto(tmp_path / "broker") as (host, port):
        script = tmp_path / "case.py"
        script.write_text(CASE)
        cfg = {"host": host, "port": port, "user": "c1", "password": "x", "keepalive": 30}
        env = dict(os.environ, MICROPYPATH=":".join([".frozen", str(REPO / "firmware"), str(REPO),
                                                     str(REPO / "build" / "device-lib")]))
        proc = subprocess.Popen([micropython(), "-X", "heapsize=256k", str(script), json.dumps(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.strip())

        threading.Thread(target=read, daemon=True).start()

        def expect(prefix: str) -> str:
            seen = []
            while True:
                try:
                    line = lines.get(timeout=20)
                except queue.Empty:
                    raise AssertionError(f"no {prefix!r} line; saw {seen}") from None
                if line.startswith(prefix):
                    return line
                seen.append(line)

        try:
            idle = int(expect("IDLE").split()[1])
            # 1.5 s idle: one or two keepalive checks; polling every 10 ms made it ~150.
            assert idle <= 5, f"the link woke {idle} times in 1.5 s with nothing to read"
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud", protocol=mqtt.MQTTv311)
            pub.connect(host, port)
            pub.loop_start()
            try:
                pub.publish("lockcase/v1/s1/c1/cmd", b"hi", qos=1).wait_for_publish(5)
            finally:
                pub.loop_stop()
                pub.disconnect()
            assert expect("GOT") == "GOT hi True"  # woken by the message, link still up
        finally:
            proc.terminate()
            proc.wait(10)
