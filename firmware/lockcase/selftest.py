# On-device self-test, run by `casectl provision` (and `casectl selftest`) at the REPL after the
# firmware has been interrupted: it builds a fresh Board from config.json and works each part once
# (display, NFC reader, lock coil and door sensor, keypad), printing one LCSTEP line per part as it
# finishes and an LCJSON summary at the end. It never leaves the coil on: a hardware one-shot cuts
# it as on every energize in the firmware, and the pulse ends in a finally.
import json
import time

import board

from lockcase.compat import ticks_diff, ticks_ms

PASS = "pass"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"


def _sleep(ms):
    time.sleep_ms(ms)


class _Run:
    def __init__(self):
        self.steps = []
        self.display = None

    def step(self, name, status, detail):
        s = {"step": name, "status": status, "detail": detail}
        self.steps.append(s)
        print("LCSTEP" + json.dumps(s))

    def show(self, a, b=""):
        if self.display is not None:
            try:
                self.display.show(a, b)
            except Exception:
                pass


def _config(run):
    from lockcase import config

    try:
        cfg = config.load()
    except config.NotProvisioned:
        run.step("config", FAIL, "no config.json on the device")
        return None
    except config.ConfigError as exc:
        run.step("config", FAIL, str(exc))
        return None
    if cfg["board"] != board.NAME:
        run.step("config", FAIL, "config is for board %s, this is %s" % (cfg["board"], board.NAME))
        return None
    run.step("config", PASS, "case %s in store %s" % (cfg["case_id"] or "-", cfg["store_id"] or "-"))
    return cfg


def _display(run, b, cfg):
    kind = cfg["display"]
    if kind == "none":
        run.step("display", SKIP, "no display configured")
        return
    from lockcase import VERSION
    from lockcase.display import make_display

    try:
        d = make_display(kind, b.i2c)
        d.show("LockCase test", "fw " + VERSION)
    except Exception as exc:
        run.step("display", FAIL, str(exc))
        return
    run.display = d
    run.step("display", PASS, "%s shows the test screen" % kind)


def _nfc(run, b, cfg):
    ncfg = cfg.get("nfc")
    if not ncfg:
        run.step("nfc", SKIP, "no reader configured")
        return
    import asyncio

    try:
        from lockcase.nfc import make_chip

        chip = make_chip(b, ncfg, asyncio.sleep_ms, b.ticks_ms)
        # The interrupted firmware's tasks are still queued: a fresh loop keeps them from running.
        asyncio.new_event_loop()
        fw = asyncio.run(chip.begin())
    except Exception as exc:
        run.step("nfc", FAIL, "%s reader: %s" % (ncfg.get("driver", "?"), exc))
        return
    run.step("nfc", PASS, "%s firmware %s" % (getattr(chip, "name", ncfg.get("driver")), fw))


def _wait(pred, ms):
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < ms:
        if pred():
            return True
        _sleep(10)
    return pred()


def _coil(run, b, cfg, pulse_ms, door_wait_ms):
    from lockcase.drivers.coil import Coil
    from lockcase.drivers.oneshot import OneShot

    if b.door_open():
        run.show("Close the door", "for the lock test")
        if not _wait(lambda: not b.door_open(), door_wait_ms):
            run.step("lock", FAIL, "the door sensor reads open: close the door, or check the reed switch wiring")
            return
    coil = Coil(b.lock_pin, b.lock_pwm, cfg["hold_duty"])
    cut = OneShot(b.timer())
    pull_in = min(cfg["pull_in_ms"], pulse_ms)
    opened = False
    energized = False
    run.show("Lock test:", "coil pulse")
    t0 = ticks_ms()
    try:
        cut.arm(pulse_ms + 100, lambda _t: coil.off())
        coil.pull_in()
        energized = coil.energized()
        held = False
        while ticks_diff(ticks_ms(), t0) < pulse_ms:
            if not held and ticks_diff(ticks_ms(), t0) >= pull_in:
                coil.hold()
                held = True
            if b.door_open():
                opened = True
            _sleep(5)
    finally:
        coil.off()
        cut.cancel()
    if not energized:
        run.step("lock", FAIL, "the coil output did not switch on")
        return
    if not opened:
        opened = _wait(b.door_open, door_wait_ms)
    if not opened:
        run.step("lock", WARN, "coil pulsed %d ms; the door sensor saw no change (door without a spring, "
                 "or check the lock and the reed switch)" % pulse_ms)
        return
    run.show("Door opened", "close it please")
    closed = _wait(lambda: not b.door_open(), max(door_wait_ms, 5000))
    run.step("lock", PASS if closed else WARN,
             "the door opened on a %d ms pulse%s" % (pulse_ms, "" if closed else "; it has not been closed again"))


def _keypad(run, b, cfg, key_wait_ms):
    from lockcase.drivers.keypad import Keypad, keymap_for

    keymap = keymap_for(cfg["keypad"])
    try:
        kp = Keypad(b.keypad_rows, b.keypad_cols[: len(keymap[0])], keymap)
    except Exception as exc:
        run.step("keypad", FAIL, str(exc))
        return
    stuck = []
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 150:  # several debounce periods with nobody touching it
        stuck += kp.scan(ticks_ms())
        _sleep(5)
    if stuck:
        run.step("keypad", FAIL, "key %s reads pressed with nobody touching it: stuck key or shorted wires" % stuck[0])
        return
    if key_wait_ms <= 0:
        run.step("keypad", PASS, "no stuck keys (press test not asked for)")
        return
    run.show("Self-test: press", "any key (%ds)" % (key_wait_ms // 1000))
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < key_wait_ms:
        keys = kp.scan(ticks_ms())
        if keys:
            run.show("Key " + keys[0], "OK")
            run.step("keypad", PASS, "key %s pressed" % keys[0])
            return
        _sleep(5)
    run.step("keypad", WARN, "no key pressed within %d s" % (key_wait_ms // 1000))


def run(key_wait_ms=0, door_wait_ms=1500, pulse_ms=600):
    """Run every step; prints LCSTEP lines, then LCJSON {"ok", "board", "fw", "steps"}."""
    from lockcase import VERSION

    r = _Run()
    board.lock_safe()
    cfg = _config(r)
    if cfg is not None:
        try:
            b = board.create(cfg)
        except Exception as exc:
            b = None
            r.step("board", FAIL, "board %s: %s" % (board.NAME, exc))
        if b is not None:
            # Not lock_safe() between steps: on the boards it takes the pin back from the PWM the
            # lock step drives. The lock step turns its coil off itself, whatever happens.
            try:
                for name, fn, args in (("display", _display, ()), ("nfc", _nfc, ()),
                                       ("lock", _coil, (pulse_ms, door_wait_ms)), ("keypad", _keypad, (key_wait_ms,))):
                    try:
                        fn(r, b, cfg, *args)
                    except Exception as exc:
                        r.step(name, FAIL, "%s: %s" % (type(exc).__name__, exc))
            finally:
                board.lock_safe()
    ok = not any(s["status"] == FAIL for s in r.steps)
    r.show("Self-test " + ("OK" if ok else "FAILED"), "")
    print("LCJSON" + json.dumps({"ok": ok, "board": board.NAME, "fw": VERSION, "steps": r.steps}))
    return ok
