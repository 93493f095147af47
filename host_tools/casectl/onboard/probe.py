# What answers on the port, and keeping its watchdog fed: the first code casectl runs on a device
# (device.Device.connect), before it knows which MicroPython that is. Each function prints its
# answer as one line after a marker, so stray console output before it (the interrupted
# firmware's last log lines) cannot be mistaken for the answer. Nothing newer than the oldest
# MicroPython casectl must still recognise in order to refuse it: no f-strings.
import sys


def _lc_probe():
    # [name, version, .mpy format, platform, machine, firmware running]: the .mpy format is None
    # on a MicroPython that cannot import .mpy files; the firmware was running if its app is loaded.
    import json

    impl = sys.implementation
    print('LCPROBE' + json.dumps([impl.name, list(impl.version[:3]), getattr(impl, '_mpy', None),
                                  sys.platform, getattr(impl, '_machine', ''),
                                  'lockcase.app' in sys.modules]))


def _lc_hold():
    # The interrupted firmware may have started its watchdog. Nothing feeds it at the REPL, and the
    # board would reset under the technician in a few seconds (an ESP32's cannot be stopped), so a
    # periodic timer feeds it for the rest of the session; the next reset starts the firmware
    # afresh. The sim board keeps its watchdog and timers on board.HW, a chip's board module its
    # watchdog in board._wdt.
    import board

    w = getattr(board, '_wdt', None)
    hw = getattr(board, 'HW', None)
    if hw is not None:
        w = hw.wdt
    if w is None:
        print('LCHOLDnone')
        return

    def feed(_t):
        w.feed()

    if hw is not None:
        from boards.sim.hw import Timer  # the sim's timers run on its Hardware

        t = Timer(hw)
    else:
        import machine

        try:
            t = machine.Timer(-1)  # a virtual timer where the port has them (ESP32)
        except Exception:
            t = machine.Timer(3)
    t.init(mode=1, period=500, callback=feed)
    w.feed()
    globals()['_lc_holder'] = t  # the timer lives as long as the session
    print('LCHOLDfed')
