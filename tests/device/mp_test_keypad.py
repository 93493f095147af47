# The keypad driver scanning the simulated electrical matrix, on virtual time, under MicroPython.
from boards.sim.keymatrix import SimKeyMatrix
from lockcase.compat import ticks_add, ticks_diff
from lockcase.drivers.keypad import KEYMAP_4X3, KEYMAP_4X4, Keypad


class Rig:
    def __init__(self, keymap=KEYMAP_4X3, start=0, debounce_ms=20):
        self.t = start
        self.m = SimKeyMatrix(keymap, lambda: self.t)
        self.kp = Keypad(self.m.rows, self.m.cols, keymap, debounce_ms)

    def run(self, ms, step=5):
        """Scan every step ms for ms; the keys reported, in order."""
        out = []
        end = ticks_add(self.t, ms)
        while ticks_diff(end, self.t) > 0:
            self.t = ticks_add(self.t, step)
            out += self.kp.scan(self.t)
        return out

    def first_report(self, ms, step=1):
        """ms after now at which the first key is reported, or None."""
        t0 = self.t
        end = ticks_add(self.t, ms)
        while ticks_diff(end, self.t) > 0:
            self.t = ticks_add(self.t, step)
            if self.kp.scan(self.t):
                return ticks_diff(self.t, t0)
        return None


def _every_key(keymap):
    r = Rig(keymap)
    for line in keymap:
        for key in line:
            r.m.press(key)
            assert r.run(40) == [key], key
            assert r.kp.held() == [key]
            r.m.release(key)
            assert r.run(40) == [], key
            assert r.kp.held() == []


def test_every_key_4x3():
    _every_key(KEYMAP_4X3)


def test_every_key_4x4():
    _every_key(KEYMAP_4X4)


def test_sim_electrical_levels():
    m = SimKeyMatrix(KEYMAP_4X3, lambda: 0)
    assert [c.value() for c in m.cols] == [1, 1, 1]
    m.press("5")  # row 1, col 1
    assert [c.value() for c in m.cols] == [1, 1, 1]  # no row driven low yet
    m.rows[1].value(0)
    assert [c.value() for c in m.cols] == [1, 0, 1]
    m.rows[1].value(1)
    m.rows[0].value(0)
    assert [c.value() for c in m.cols] == [1, 1, 1]  # row 0 low: 5 is not on it
    m.cols[1].value(0)  # an input: writing does nothing
    assert m.cols[1].value() == 1
    assert m.keys_down() == ["5"]


def test_sim_rectangle_makes_a_phantom():
    # The electrical fact the ghost handling exists for: 1, 2 and 4 down make 5 read as down.
    m = SimKeyMatrix(KEYMAP_4X3, lambda: 0)
    for k in "124":
        m.press(k)
    m.rows[1].value(0)  # the row of 4 and 5
    assert [c.value() for c in m.cols] == [0, 0, 1]


def test_press_needs_debounce_time():
    # Scanning every 1 ms, the press is first seen at 1 ms and must then hold for debounce_ms.
    r = Rig()
    r.m.press("7")
    assert r.first_report(100) == 21
    r.m.release("7")
    r.run(40)
    r = Rig(debounce_ms=50)
    r.m.press("7")
    assert r.first_report(100) == 51


def test_rows_idle_high_between_scans():
    r = Rig()
    r.m.press("1")
    r.run(30)
    assert [p.value() for p in r.m.rows] == [1, 1, 1, 1]


def test_press_bounce_reports_once():
    r = Rig()
    r.m.bounce("5", 9)  # closed at even ms, open at odd ms, closed for good from 8 ms
    assert r.first_report(100) == 8 + 20  # settled contact plus the debounce time
    assert r.run(100, step=1) == []
    assert r.kp.held() == ["5"]


def test_release_bounce_does_not_repeat():
    r = Rig()
    r.m.press("5")
    assert r.run(40) == ["5"]
    r.m.bounce("5", 11)  # let go, chattering
    assert r.run(100, step=1) == []
    assert r.kp.held() == []
    assert r.m.keys_down() == []
    # the next press of the same key is a new one
    r.m.bounce("5", 7)
    assert r.run(100, step=1) == ["5"]


def test_open_glitch_while_held_does_not_repeat():
    # Release is debounced too: a held key that opens for a few ms is not a second press.
    r = Rig()
    r.m.press("6")
    assert r.run(40, step=1) == ["6"]
    r.m.release("6")
    assert r.run(3, step=1) == []
    r.m.press("6")
    assert r.run(100, step=1) == []
    assert r.kp.held() == ["6"]


def test_short_glitch_is_ignored():
    r = Rig()
    r.m.tap("3", hold_ms=8)
    assert r.run(100, step=1) == []
    assert r.kp.held() == []


def test_held_key_does_not_repeat():
    r = Rig()
    r.m.press("0")
    assert r.run(3000) == ["0"]
    r.m.release("0")
    assert r.run(50) == []
    r.m.press("0")
    assert r.run(50) == ["0"]


def test_two_keys():
    for a, b in (("1", "9"), ("1", "2"), ("1", "4")):  # apart, same row, same column
        r = Rig()
        r.m.press(a)
        assert r.run(40) == [a]
        r.m.press(b)
        assert r.run(40) == [b], (a, b)
        assert r.kp.held() == [a, b]
        r.m.release(a)
        r.m.release(b)
        assert r.run(40) == []
        assert r.kp.held() == []


def test_two_keys_at_once():
    r = Rig(KEYMAP_4X4)
    r.m.press("D")
    r.m.press("2")
    assert r.run(40) == ["2", "D"]


def test_ghost_rectangle_is_ignored():
    r = Rig()
    r.m.press("1")
    assert r.run(40) == ["1"]
    r.m.press("2")
    assert r.run(40) == ["2"]
    r.m.press("4")  # 1, 2, 4 down: 5 reads as down too, and so might any of the four
    assert r.run(200) == []
    assert r.kp.held() == ["1", "2"]
    r.m.release("2")  # no rectangle any more: 4 is unambiguous and now counts
    assert r.run(40) == ["4"]
    r.m.release("1")
    r.m.release("4")
    assert r.run(40) == []
    assert r.kp.held() == []


def test_ghost_rectangle_pressed_at_once_reports_nothing():
    r = Rig(KEYMAP_4X4)
    for k in "69CB":  # all four corners of rows 1-2 x cols 2-3
        r.m.press(k)
    assert r.run(200) == []
    for k in "69C":
        r.m.press(k)
    r.m.release("B")  # three real keys still form the rectangle with the phantom B
    assert r.run(200) == []
    for k in "69C":
        r.m.release(k)
    assert r.run(40) == []
    r.m.press("A")
    assert r.run(40) == ["A"]  # the scanner is not stuck


def test_three_keys_without_rectangle():
    r = Rig()
    for k in "159":  # a diagonal: no shared rows or columns
        r.m.press(k)
    assert r.run(40) == ["1", "5", "9"]


def test_tap_sequence_staff_entry():
    r = Rig()
    got = []
    for key in "**1234#":
        r.m.tap(key, hold_ms=60)
        got += r.run(120)
    assert "".join(got) == "**1234#"
    assert r.m.keys_down() == []


def test_fast_typing_same_key():
    r = Rig()
    got = []
    for _ in range(4):
        r.m.tap("8", hold_ms=40)
        got += r.run(70)
    assert got == ["8"] * 4


def test_tick_wraparound():
    start = ticks_add(0, -30)  # the ticks counter wraps during the press
    r = Rig(start=start)
    r.m.press("#")
    assert r.run(60) == ["#"]
    r.m.release("#")
    assert r.run(60) == []
    r.m.tap("*", hold_ms=60)
    assert r.run(120) == ["*"]


def test_sim_tap_releases_lazily():
    t = [1000]
    m = SimKeyMatrix(KEYMAP_4X3, lambda: t[0])
    m.tap("2", hold_ms=60)
    assert m.keys_down() == ["2"]
    t[0] = 1059
    assert m.keys_down() == ["2"]
    t[0] = 1060
    m.rows[0].value(0)
    assert m.cols[1].value() == 1  # reading the column applies the release
    assert m.keys_down() == []


def test_sim_bounce_pattern():
    t = [0]
    m = SimKeyMatrix(KEYMAP_4X3, lambda: t[0])
    m.bounce("1", 4)
    seen = []
    for ms in range(7):
        t[0] = ms
        seen.append(m.keys_down() == ["1"])
    assert seen == [True, False, True, False, True, True, True]


def test_unknown_key_and_bad_keymap():
    m = SimKeyMatrix(KEYMAP_4X3, lambda: 0)
    try:
        m.press("A")
    except ValueError:
        pass
    else:
        raise AssertionError("pressed a key the 4x3 pad does not have")
    try:
        Keypad(m.rows, m.cols, KEYMAP_4X4)
    except ValueError:
        return
    raise AssertionError("4x4 keymap accepted on 3 columns")
