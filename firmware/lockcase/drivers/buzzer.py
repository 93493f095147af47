# Piezo tones on a PWM channel. Steps are (freq_hz, ms); freq 0 is a rest. Playing waits with
# asyncio between steps, so the keypad and lock loops keep running during a tone.

import asyncio

from lockcase.compat import const

TONES = {
    "key": ((2400, 15),),
    "success": ((1300, 90), (0, 25), (2000, 150)),
    "failure": ((330, 600),),
    # Forced entry and tamper, repeated: a two-tone siren nobody mistakes for a key beep.
    "alarm": ((2800, 220), (1900, 220)),
    # Door held open: a reminder, one chirp a second, urgent without being a siren.
    "reminder": ((2600, 120), (0, 880)),
}

_HALF = const(32768)  # 50 % duty: loudest on a piezo


class Buzzer:
    def __init__(self, pwm, duty=_HALF):
        self._pwm = pwm
        self._duty = duty
        self._gen = 0  # bumped by every play/stop: older plays see it and give up the PWM
        self._next = ("key", 1)  # (tone, repeat) for the player task
        self._wake = None  # made on the first beep: asyncio.Event loads a module of its own
        self._task = None
        if pwm is not None:
            pwm.duty_u16(0)

    async def play(self, name, repeat=1):
        """Play a tone; repeat=0 loops until stop() or another play()."""
        steps = TONES.get(name)
        if steps is None:
            raise ValueError("unknown tone: %s" % name)
        self._gen += 1
        gen = self._gen
        pwm = self._pwm
        if pwm is None:
            return
        n = 0
        while repeat == 0 or n < repeat:
            n += 1
            for freq, ms in steps:
                if freq:
                    pwm.freq(freq)
                    pwm.duty_u16(self._duty)
                else:
                    pwm.duty_u16(0)
                await asyncio.sleep_ms(ms)
                if gen != self._gen:
                    return  # overridden: the newer play owns the PWM now
        pwm.duty_u16(0)

    def repeats(self, name, ms):
        """How many times the tone fits in ms (0 when it does not fit once): a cap in time."""
        total = 0
        for _, step_ms in TONES[name]:
            total += step_ms
        return ms // total

    def start(self, name, repeat=1):
        # Fire and forget, for callers that are not coroutines. One player task serves every
        # start(), so a key press allocates no task: on a chip's small heap beeps are not churn.
        if name not in TONES:
            raise ValueError("unknown tone: %s" % name)
        self._next = (name, repeat)
        self._gen += 1  # a tone playing now gives way at its next step
        wake = self._wake
        if wake is None:
            wake = self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._player(wake))
        wake.set()
        return self._task

    async def _player(self, wake):
        while True:
            await wake.wait()
            wake.clear()
            name, repeat = self._next
            try:
                await self.play(name, repeat)
            except Exception as exc:  # a PWM fault must not silence every later beep
                print("buzzer:", repr(exc))

    def stop(self):
        self._gen += 1
        if self._pwm is not None:
            self._pwm.duty_u16(0)
