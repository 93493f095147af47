"""The sim board's console (boards/sim/hw.py, watch_console): a Ctrl-C byte on the sim device's
serial interrupts the firmware in its main thread, as a board's UART interrupt does, and leaves
what follows it for the REPL. It replaced the pty's SIGINT, which the Unix port raised in either of
the board's two threads (lost, doubled, or a crashed process in about 1 interrupt in 10)."""

from __future__ import annotations

from collections.abc import Callable

_PROGRAM = """
import sys, time, _thread
from boards.sim.hw import Hardware, Timer
hw = Hardware()
ticks = [0]
def tick(_t):
    ticks[0] += 1
t = Timer(hw)
t.init(mode=Timer.PERIODIC, period=5, callback=tick)
hw.watch_console()
start = time.ticks_ms()
caught = None
try:
    # until the console has seen the Ctrl-C, or read everything up to the end of its input
    while hw._uart is not None and time.ticks_diff(time.ticks_ms(), start) < 5000:
        hw.ticks_ms()  # the firmware's loop reads the board's clock every step
        time.sleep_ms(1)
    hw.ticks_ms()
except KeyboardInterrupt:
    caught = _thread.get_ident()
before = ticks[0]
while ticks[0] == before and time.ticks_diff(time.ticks_ms(), start) < 10000:
    time.sleep_ms(5)
print("caught", caught is not None and caught == hw._main)
print("console read to its end", hw._uart is None)
print("timer thread alive", ticks[0] > before)
print("left", repr(sys.stdin.buffer.read()))
"""


def test_ctrl_c_interrupts_the_main_thread_and_leaves_the_rest_to_the_repl(mpy: Callable[..., str]) -> None:
    out = mpy(_PROGRAM, input="junk\r\x03\r\x01print(1)\x04")
    assert "caught True" in out, out
    assert "timer thread alive True" in out, out  # the board's timers still run at the REPL
    assert "left b'\\r\\x01print(1)\\x04'" in out, out  # mpremote's Ctrl-A is the REPL's


def test_other_bytes_do_not_interrupt(mpy: Callable[..., str]) -> None:
    out = mpy(_PROGRAM, input="\r\x01abc")
    assert "caught False" in out and "console read to its end True" in out, out
    assert "left b''" in out, out
    # read byte by byte while the firmware runs, as a UART's receive interrupt drops them
    assert "timer thread alive True" in out, out
