# The simulated board's "silicon": a clock (real or virtual), output latches recorded with
# timestamps, and the timers and watchdog that on a real chip run beside the CPU.
#
# In real-time mode a thread plays the part of the timer peripheral and the watchdog, so the coil
# cut-off and a watchdog reset still happen when the firmware's main loop is stuck. In virtual
# mode (tests) nothing runs by itself: advance() moves the clock and fires what is due.
import sys
import time

try:
    import _thread
except ImportError:  # a port built without threads: real-time mode polls from the control task
    _thread = None

# The ticks period is 2**30 on 32-bit ports and larger on 64-bit Unix: use this port's own.
PERIOD = time.ticks_add(0, -1) + 1


class Hardware:
    def __init__(self, virtual=False, start_ms=0, epoch_s=0):
        self.virtual = virtual
        self.epoch0 = epoch_s  # the virtual RTC's seconds at power-on
        # Start near the wrap so every test crosses a ticks_ms wrap-around.
        self._v = start_ms % PERIOD
        self._offset = 0
        self.outputs = {}
        self.inputs = {"door": 0, "tamper": 0}
        self.listeners = []  # fn(t_ms, name, value), called on every output change
        self.timers = []
        self.wdt = None
        self.reset_cause = None  # set when the watchdog (or a command) resets the chip
        self.on_reset = None  # fn(cause): what a reset means for this run (exit, restart, ...)
        self._lock = _thread.allocate_lock() if _thread else None
        self._thread_running = False
        self._main = _thread.get_ident() if _thread else None
        self._uart = None  # a poll on stdin while it is the board's USB serial (watch_console)
        self._kbd = False  # a Ctrl-C came in: raised in the main thread at its next clock read
        self.t0 = self.ticks_ms()

    # -- clock ----------------------------------------------------------------------------------
    def ticks_ms(self):
        if self._kbd and _thread.get_ident() == self._main:
            self._kbd = False
            raise KeyboardInterrupt
        if self.virtual:
            return self._v
        return time.ticks_add(time.ticks_ms(), self._offset)

    def epoch(self):
        # Wall-clock seconds. Virtual: from the virtual clock, so a run's journal (and with it
        # every CRC and timestamp the firmware allocates for) is the same on every replay.
        if self.virtual:
            return self.epoch0 + self.uptime_ms() // 1000
        return int(time.time())

    def uptime_ms(self):
        return time.ticks_diff(self.ticks_ms(), self.t0)

    def advance(self, ms, running=False):
        # Step in small increments so timers fire at their own time, not at the end of the jump.
        # running=True: the firmware is taken to have run meanwhile, so the watchdog was fed.
        while ms > 0:
            step = 5 if ms > 5 else ms
            if self.virtual:
                self._v = (self._v + step) % PERIOD
            else:
                self._offset += step
            ms -= step
            if running and self.wdt is not None:
                self.wdt.fed = self.ticks_ms()
            self.poll()
            if self.reset_cause:
                return

    # -- outputs --------------------------------------------------------------------------------
    def set_output(self, name, value):
        lk = self._lock
        if lk:
            lk.acquire()
        try:
            if self.outputs.get(name) == value:
                return
            self.outputs[name] = value
            t = self.uptime_ms()
            for fn in self.listeners:
                fn(t, name, value)
        finally:
            if lk:
                lk.release()

    # -- timer peripheral and watchdog ----------------------------------------------------------
    def poll(self):
        now = self.ticks_ms()
        for tm in self.timers:
            tm._due(now)
        w = self.wdt
        if w is not None and not self.reset_cause and time.ticks_diff(now, w.fed) > w.timeout:
            self.reset("watchdog")

    def reset(self, cause):
        # A reset takes every output back to its power-on level before the firmware runs again.
        self.reset_cause = cause
        for tm in self.timers:
            tm.deinit()
        for name in list(self.outputs):
            self.set_output(name, 0)
        if self.on_reset:
            self.on_reset(cause)

    def start_thread(self):
        if self.virtual or _thread is None or self._thread_running:
            return
        self._thread_running = True
        _thread.start_new_thread(self._run, ())

    def watch_console(self):
        """stdin is the board's USB serial (the sim device's pty): a Ctrl-C byte on it interrupts the
        firmware, as a board's UART receive interrupt does (KeyboardInterrupt in the main thread, at
        its next read of the clock, which its loop does every step). Not the Unix port's SIGINT: with
        this board's timer thread running, the port raised the signal's KeyboardInterrupt in either
        thread, and about 1 interrupt in 10 was lost, killed the timer thread, came twice or
        crashed the process ("FATAL: uncaught NLR"), so the pty is opened without isig."""
        if self.virtual or _thread is None:
            return
        import select

        self._uart = select.poll()
        self._uart.register(sys.stdin, select.POLLIN)
        self.start_thread()

    def _console(self):
        # Byte by byte: what follows the Ctrl-C (mpremote's Ctrl-A, at once) is the REPL's to read.
        u = self._uart
        while u.poll(0):
            b = sys.stdin.buffer.read(1)
            if b == b"\x03" or not b:  # not b: the console is gone (the port closed)
                self._uart = None  # the REPL reads the console from now on
                self._kbd = bool(b)
                return

    def _run(self):
        while self._thread_running and not self.reset_cause:
            self.poll()
            if self._uart is not None:
                self._console()
            time.sleep_ms(2)


try:
    from machine import PinBase
except ImportError:  # CPython: a stand-in so the sim imports for docs and linting
    PinBase = object


class OutPin(PinBase):
    def __init__(self, hw, name, value=0):
        self.hw = hw
        self.name = name
        self.v = value
        hw.set_output(name, value)

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0
        self.hw.set_output(self.name, self.v)


class InPin(PinBase):
    def __init__(self, hw, name):
        self.hw = hw
        self.name = name

    def value(self, v=None):
        if v is None:
            return self.hw.inputs.get(self.name, 0)


class PWM:
    # machine.PWM subset. The recorded output is the duty as a fraction for the lock, and the
    # frequency while sounding for the buzzer, which is what an observer of the real pin sees.
    def __init__(self, hw, name, freq=1000, report="duty"):
        self.hw = hw
        self.name = name
        self._freq = freq
        self._duty = 0
        self.report = report
        hw.set_output(name, 0)

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._publish()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self._duty = max(0, min(65535, int(d)))
        self._publish()

    def deinit(self):
        self.duty_u16(0)

    def _publish(self):
        if self.report == "freq":
            self.hw.set_output(self.name, self._freq if self._duty else 0)
        else:
            self.hw.set_output(self.name, round(self._duty / 65535, 3))


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, hw):
        self.hw = hw
        self._cb = None
        self._deadline = 0
        self._period = 0
        self._mode = 0
        hw.timers.append(self)

    def init(self, mode=ONE_SHOT, period=1000, callback=None):
        self._mode = mode
        self._period = period
        self._deadline = time.ticks_add(self.hw.ticks_ms(), period)
        self._cb = callback

    def deinit(self):
        self._cb = None

    def _due(self, now):
        cb = self._cb
        if cb is not None and time.ticks_diff(now, self._deadline) >= 0:
            if self._mode == self.ONE_SHOT:
                self._cb = None
            else:
                self._deadline = time.ticks_add(self._deadline, self._period)
            cb(self)


class WDT:
    def __init__(self, hw, timeout):
        self.hw = hw
        self.timeout = timeout
        self.fed = hw.ticks_ms()
        hw.wdt = self

    def feed(self):
        self.fed = self.hw.ticks_ms()
