# The sim's control socket: line-delimited JSON over TCP (see docs/sim.md). One request per line,
# one JSON answer per line; after {"cmd": "watch"} the connection also streams output changes
# and events as they happen.
import asyncio
import json

from lockcase.compat import const
from lockcase.events import JOURNALED

_QUEUE_MAX = const(256)


class _Watcher:
    def __init__(self):
        # (Names that are interned anyway, here and below: each new one is heap the firmware's
        # figure would carry, and a chip has no control socket: docs/memory.md.)
        self.items = []
        self.dropped = 0

    def put(self, value):
        # May run on the timer thread: append only, never block.
        if len(self.items) < _QUEUE_MAX:
            self.items.append(value)
        else:
            self.dropped += 1


async def _until(pred, min_ms, max_ms=2000):
    # At least min_ms, then until pred() or max_ms in all (an app whose keypad is not being
    # scanned, a fault: the key is let go all the same).
    await asyncio.sleep_ms(min_ms)
    n = (max_ms - min_ms) // 5
    while n > 0 and not pred():
        await asyncio.sleep_ms(5)
        n -= 1


class Control:
    def __init__(self, board, app):
        self.board = board
        self.app = app
        self.hw = board.hw
        self.watchers = []
        self.hw.listeners.append(self._on_output)
        app.bus.subscribe(self._on_event, JOURNALED)

    def _on_output(self, t, name, value):
        for w in self.watchers:
            w.put({"ev": "out", "t": t, "name": name, "value": value})

    def _on_event(self, kind, data):
        t = self.hw.uptime_ms()
        for w in self.watchers:
            w.put({"ev": "event", "t": t, "type": kind, "data": data})

    def state(self):
        # Built here, not by the app: only the sim is asked, and on a chip the app's bytecode is
        # heap (docs/memory.md).
        app = self.app
        lk = app.lock
        st = {
            "lock": lk.state,
            "energized": lk.coil.energized(),
            "door_open": lk.door_open(),
            "alarms": lk.alarms(),
            "entry": app.entry.state,
            "display": app.display.lines(),
            "ready": app.ready,
            "cloud": None,
        }
        link, cloud = app.link, app.cloud
        if link is not None and cloud is not None:
            st["cloud"] = {"up": link.up, "synced": cloud.codec.synced, "connects": link.connects,
                           "rejected": cloud.rejected, "last_reject": cloud.last_reject,
                           "nomem": link.nomem_count}
        st["outputs"] = dict(self.hw.outputs)
        st["uptime_ms"] = self.hw.uptime_ms()
        st["inputs"] = dict(self.hw.inputs)
        nfc = getattr(self.app, "nfc", None)
        if nfc is not None:
            st["nfc"] = nfc.status()
        return st

    async def do(self, req, w):
        cmd = req.get("cmd")
        keys = self.board.keys
        if cmd == "key":
            keys.tap(str(req["key"]), int(req.get("hold_ms", 60)))
            return {"ok": True}
        if cmd == "keys":
            hold = int(req.get("hold_ms", 60))
            gap = int(req.get("gap_ms", 60))
            held = self.app.keypad.held
            for k in str(req["keys"]):
                # Typed as a person types: the key stays down at least hold_ms and until the
                # keypad has it, then up at least gap_ms and until it is seen up. A timed 60 ms
                # contact ("key") is lost whole when a loaded host stalls the app's loop past it
                # (the scan never reads it twice 20 ms apart), where a finger on a chip's keypad,
                # its loop never so stalled, is not.
                keys.press(k)
                await _until(lambda k=k: k in held(), hold)
                keys.release(k)
                await _until(lambda k=k: k not in held(), gap)
            return {"ok": True}
        if cmd == "tap":
            # Until the NFC reader is emulated: a credential read off a card or a phone.
            t = self.hw.uptime_ms()
            self.app.tap(str(req["uid"]).lower(), str(req.get("src", "nfc")), self.hw.ticks_ms())
            return {"ok": True, "t": t}
        if cmd in ("card", "phone", "ndef", "remove", "nfc_fault"):
            return self._nfc(cmd, req)
        if cmd == "door":
            self.hw.inputs["door"] = 1 if req.get("open") else 0
            return {"ok": True}
        if cmd == "tamper":
            self.hw.inputs["tamper"] = 1 if req.get("on") else 0
            return {"ok": True}
        if cmd == "advance":
            self.hw.advance(int(req["ms"]), running=True)
            return {"ok": True, "uptime_ms": self.hw.uptime_ms()}
        if cmd == "state":
            return {"ok": True, "state": self.state()}
        if cmd == "events":
            j = self.app.journal
            recs = list(j.records(int(req.get("after", 0)), int(req.get("limit", 50)))) if j else []
            return {"ok": True, "events": recs}
        if cmd == "watch":
            self.watchers.append(w)
            return {"ok": True, "state": self.state()}
        if cmd == "hang":
            # Stall the firmware's loop the way a driver stuck in a blocking call would.
            import time

            while True:
                time.sleep_ms(1000)
        if cmd == "crash":
            # The next step raises in the firmware's own loop, so main.py's crash path runs.
            def step(now):
                raise RuntimeError("crash requested over the control socket")

            self.app.step = step
            return {"ok": True}
        if cmd == "reset":
            self.hw.reset(str(req.get("cause", "hard")))
            return {"ok": True}
        return {"ok": False, "error": "unknown cmd %r" % (cmd,)}

    def _nfc(self, cmd, req):
        # What the emulated PN532 has on its antenna, and how it misbehaves (docs/sim.md).
        chip = self.board.nfc_chip
        if chip is None:
            return {"ok": False, "error": "this case has no NFC reader (config.json nfc)"}
        from binascii import unhexlify

        from boards.sim import pn532

        t = self.hw.uptime_ms()
        if cmd == "card":
            chip.present(pn532.UidCard(unhexlify(str(req["uid"])), req.get("atqa"), req.get("sak")))
        elif cmd == "phone":
            tok = req.get("token")
            chip.present(pn532.Phone(None if tok is None else str(tok), bool(req.get("app", True))))
        elif cmd == "ndef":
            text = req.get("text")
            if text is None:
                text = "lockcase:" + str(req["token"])
            chip.present(pn532.Ntag(unhexlify(str(req.get("uid", "04a1b2c3d4e5f6"))), str(text).encode()))
        elif cmd == "remove":
            chip.remove()
        else:
            chip.set_fault(str(req.get("kind", "ok")), int(req.get("count", -1)))
        return {"ok": True, "t": t}

    async def client(self, reader, out):
        w = _Watcher()
        pump = asyncio.create_task(self._pump(w, out))
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                req = None
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("request must be a JSON object")
                    resp = await self.do(req, w)
                except Exception as exc:
                    resp = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
                if isinstance(req, dict) and "id" in req:
                    resp["id"] = req["id"]
                if w in self.watchers:
                    w.put(resp)  # keep answers in order with the streamed items
                else:
                    await _send(out, resp)
        except OSError:
            pass
        finally:
            pump.cancel()
            if w in self.watchers:
                self.watchers.remove(w)
            out.close()

    async def _pump(self, w, out):
        while True:
            await asyncio.sleep_ms(10)
            if w.items:
                items = w.items
                w.items = []
                for m in items:
                    await _send(out, m)


async def _send(out, value):
    out.write(json.dumps(value).encode() + b"\n")
    await out.drain()


async def serve(board, app, addr):
    host, port = addr.rsplit(":", 1)
    ctl = Control(board, app)
    await asyncio.start_server(ctl.client, host, int(port))
    print("CONTROL", addr)
