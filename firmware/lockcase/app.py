# The case application: builds the drivers from the board, wires them to the bus, and steps
# everything from one loop that also feeds the watchdog. step() is synchronous so tests can drive
# it with a virtual clock; run() is the asyncio loop used on boards and in the sim.
import asyncio

from lockcase.compat import const, ticks_add, ticks_diff
from lockcase.creds import StaffCreds
from lockcase.display import make_display
from lockcase.drivers.buzzer import Buzzer
from lockcase.drivers.coil import Coil
from lockcase.drivers.keypad import Keypad, keymap_for
from lockcase.drivers.led import StatusLed
from lockcase.drivers.oneshot import OneShot
from lockcase.entry import OFFLINE, Entry
from lockcase.events import JOURNALED, Bus
from lockcase.lock import FORCED, LOCKED, OPEN, RELEASED, Lock
from lockcase.safestate import PF, SF, TP, U

_TICK_MS = const(10)
_MAX_KEYS_PER_STEP = const(4)

_TONES = {"granted": "success", "denied": "failure", "lockout": "failure"}
# Alarms sound a pattern of their own, repeated for at most alarm_s, until the cause ends.
_ALARMS = {"forced": "alarm", "tamper": "alarm", "held_open": "reminder"}
_ALARM_ENDS = const(("closed", "tamper_cleared", "tamper_reset"))


class App:
    def __init__(self, board, cfg, journal, reset_cause="unknown", config_error=None):
        self.board = board
        self.cfg = cfg
        self.bus = bus = Bus()
        self.journal = journal
        self.ready = False
        self.faults = []
        now = self._t0 = board.ticks_ms()
        # What a reset must not undo; unreadable, it reads as the worst case (lockcase.safestate).
        from lockcase import recover  # boot-time only: lockcase.startup drops it after boot

        self.safe = safe = recover.load(worst=((U, cfg["duty_budget_ms"]), (SF, cfg["lockout_after"] - 1),
                                              (PF, cfg["phone_lockout_after"] - 1), (TP, 1)))
        if safe.error:
            self.faults.append(("safety_state", safe.error))
        if journal is not None:
            journal.attach(bus, safe.journaled)
        bus.subscribe(self._log, JOURNALED)
        self.display = self._make_display(cfg)
        self._screen_at = None  # set while the display fails: when to try it again
        self.coil = Coil(board.lock_pin, board.lock_pwm, cfg["hold_duty"])
        self.lock = Lock(self.coil, board.door_open, board.tamper, OneShot(board.timer()), bus, cfg, now,
                         store=safe, clock=board.ticks_ms)
        keymap = keymap_for(cfg["keypad"])
        # A 4x3 keypad on a board wired for 4x4 uses the first three columns.
        self.keypad = Keypad(board.keypad_rows, board.keypad_cols[: len(keymap[0])], keymap)
        self.staff = StaffCreds(cfg["staff"])
        self.buzzer = Buzzer(board.buzzer_pwm)
        self.led = StatusLed(board.led)
        self.led.mode("idle")
        # The cloud link and the NFC reader, when configured, are attached by lockcase.startup
        # after this, from code that is dropped after boot (a chip's heap holds bytecode too).
        self.cloud = self.link = self.nfc = None
        self.entry = Entry(bus, cfg, self.staff, self.lock, self.display, now, store=self.safe)
        if config_error:
            self.entry.state = OFFLINE
            self.entry.offline_text = ("Config error", config_error[-16:])
            self.entry._render(now)
        bus.subscribe(self._feedback)
        bus.emit("boot", reset=reset_cause, provisioned=bool(cfg.get("provisioned")), fw=_version())
        if config_error:
            bus.emit("config_error", error=config_error)
        for f in self.faults:
            bus.emit("fault", part=f[0], error=f[1])

    def _make_display(self, cfg):
        try:
            return make_display(cfg["display"], self.board.i2c)
        except Exception as exc:  # a dead display must not keep the lock from working
            self.faults.append(("display", str(exc)))
            return make_display("none", None)

    def _log(self, kind, data):
        print("event:", kind, data)

    def _feedback(self, kind, data):
        alarm = _ALARMS.get(kind)
        if alarm is not None:
            # Distinct from every other beep, and capped so a store is not deafened by a case
            # nobody has reached yet (the alarm itself stays open in the cloud and on the LED).
            self._tone(alarm, self.buzzer.repeats(alarm, self.cfg["alarm_s"] * 1000))
            return
        if kind in _ALARM_ENDS:
            lk = self.lock
            if lk.state != FORCED and not lk.held_alarm and not lk.tamper_alarm:
                self.buzzer.stop()
            return
        tone = _TONES.get(kind)
        if tone:
            self._tone(tone)

    def _tone(self, name, repeat=1):
        # Tones need the event loop; when stepped by a test without one they are skipped.
        if self.ready and repeat > 0:
            self.buzzer.start(name, repeat)

    # -- stepping -------------------------------------------------------------------------------
    def step(self, now):
        keys = self.keypad.scan(now)
        for k in keys[:_MAX_KEYS_PER_STEP]:
            self._tone("key")
            self.entry.key(k, now)
        self.lock.step(now)
        self.entry.step(now)
        if self.cloud is not None:
            self.cloud.step(now)
        self._led(now)
        if self.display.defer:
            self._show(now)

    def _show(self, now):
        # The screen, sent once the step's logic is done (TextDisplay.defer). A bus error must not
        # stop the loop (the lock and the cloud work without a screen): said once as a fault,
        # cleared when the display works again, retried once a second meanwhile. Only the bus's
        # errors: a bug in the display's code still ends the step (and fails an update on trial).
        at = self._screen_at
        failing = at is not None
        if at is not None and ticks_diff(now, at) < 0:
            return
        d = self.display
        try:
            if failing:
                d.reinit()  # it may have lost power: set up again, every row sent
            d.flush()
        except OSError as exc:
            if self._screen_at is None:
                self.bus.emit("fault", part="display", error=repr(exc))
            self._screen_at = ticks_add(now, 1000)
            return
        if self._screen_at is not None:
            self._screen_at = None
            self.bus.emit("fault_cleared", part="display")

    def _led(self, now):
        st = self.lock.state
        if self.lock.alarms():
            mode = "alarm"
        elif st in (RELEASED, OPEN):
            mode = "ok"
        elif self.entry.state == OFFLINE:
            mode = "error"
        elif st == LOCKED and self.entry.state not in ("idle", "message"):
            mode = "busy"
        else:
            mode = "idle"
        self.led.mode(mode)
        self.led.step(now)

    def tap(self, uid, src, now):
        """A credential presented on the reader: a staff badge opens here, anything else asks
        the cloud (loyalty card UID or an app token). uid: hex string."""
        self._tap(uid, src, now)
        if self.display.defer:
            # What the tap shows, sent once its request has left (or the coil is on), while the
            # answer is on its way, rather than in a later step that the answer may have to wait for.
            self._show(now)

    def _tap(self, uid, src, now):
        who = self.staff.check_badge(uid) if src in ("nfc", "card") else None
        if who is not None:
            self.entry.open_for_staff(now, who)
            return
        # The keypad's own checks: a latched tamper alarm, no cloud to ask (a card tapped while
        # the link is coming up is held a few seconds instead, see CloudClient.reachable).
        cloud = self.cloud
        if self.entry.refused(now, src) or cloud is None:  # (refused covers no cloud too)
            return
        self.entry.waiting(now)
        cloud.token(uid, src, now)

    async def run(self):
        board = self.board
        wdt = board.wdt(self.cfg["wdt_ms"])
        for coro in board.extras(self):
            asyncio.create_task(coro)
        if self.link is not None:
            asyncio.create_task(self.link.run())
        if self.nfc is not None:
            asyncio.create_task(self.nfc.run())
        self.display.defer = True  # from now on sent at the end of each step (_show)
        self.ready = True
        self.bus.emit("ready")
        print("READY")
        while True:
            self.step(board.ticks_ms())
            wdt.feed()
            await asyncio.sleep_ms(_TICK_MS)


def _version():
    from lockcase import VERSION

    return VERSION
