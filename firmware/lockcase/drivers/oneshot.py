# One-shot hardware timer for the coil cut-off, over a machine.Timer-like object. The callback
# runs in interrupt (or scheduler) context on the boards, so it must only write an output.


class OneShot:
    def __init__(self, timer):
        self._timer = timer

    def arm(self, ms, callback):
        self._timer.init(mode=self._timer.ONE_SHOT, period=ms, callback=callback)

    def cancel(self):
        self._timer.deinit()
