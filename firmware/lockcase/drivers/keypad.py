# Matrix keypad scanner. One row is pulled low at a time and the columns (inputs with pull-ups)
# read 0 where a key joins them to that row.
#
# Board wiring: give the rows open-drain outputs (Pin.OPEN_DRAIN) or series diodes. With push-pull
# rows, two keys on one column short a low row to a high one.
#
# Debounce: a key changes state only after its raw reading has held for debounce_ms (20 ms covers
# the bounce of membrane and dome keypads), on press and on release alike.
#
# Ghosting: without diodes, three keys on the corners of a rectangle close a path that makes the
# fourth corner read as pressed, and no reading tells which of the four is the phantom. The
# corners of such a rectangle keep their last debounced state until it clears, so no phantom
# key is ever reported (a real press among them may be lost).

from lockcase.compat import ticks_diff

KEYMAP_4X3 = ("123", "456", "789", "*0#")
KEYMAP_4X4 = ("123A", "456B", "789C", "*0#D")


class Keypad:
    def __init__(self, rows, cols, keymap, debounce_ms=20):
        if len(keymap) != len(rows):
            raise ValueError("keymap rows != row pins")
        for line in keymap:
            if len(line) != len(cols):
                raise ValueError("keymap cols != col pins")
        self._rows = rows
        self._cols = cols
        self._keys = "".join(keymap)  # key of bit r * ncols + c
        self._nc = len(cols)
        self._debounce = debounce_ms
        self._stable = 0  # debounced state, one bit per key
        self._last = 0  # previous raw reading
        self._since = [0] * len(self._keys)  # when each key's raw reading last changed
        for r in rows:
            r.value(1)

    def _read(self):
        raw = 0
        bit = 1
        for r in self._rows:
            r.value(0)
            for c in self._cols:
                if not c.value():
                    raw |= bit
                bit <<= 1
            r.value(1)
        return raw

    def _ambiguous(self, raw):
        # Two rows sharing two or more pressed columns form a rectangle: all its corners are suspect.
        nc = self._nc
        full = (1 << nc) - 1
        lines = [(raw >> (i * nc)) & full for i in range(len(self._rows))]
        amb = 0
        for i in range(len(lines)):
            a = lines[i]
            if not a & (a - 1):
                continue  # fewer than two keys in this row
            for j in range(i + 1, len(lines)):
                common = a & lines[j]
                if common & (common - 1):
                    amb |= (common << (i * nc)) | (common << (j * nc))
        return amb

    def scan(self, now_ms):
        """Read the matrix once; returns the keys whose debounced press happened now."""
        raw = self._read()
        amb = self._ambiguous(raw)
        if amb:
            raw = (raw & ~amb) | (self._stable & amb)
        changed = raw ^ self._last
        self._last = raw
        pending = raw ^ self._stable
        out = []
        if not pending:
            return out
        since = self._since
        i = 0
        bit = 1
        todo = changed | pending
        while bit <= todo:
            if changed & bit:
                since[i] = now_ms
            if pending & bit and ticks_diff(now_ms, since[i]) >= self._debounce:
                self._stable ^= bit
                if raw & bit:
                    out.append(self._keys[i])
            i += 1
            bit <<= 1
        return out

    def held(self):
        """Keys currently down after debouncing, in keymap order."""
        return [self._keys[i] for i in range(len(self._keys)) if self._stable >> i & 1]


def keymap_for(layout):
    # The layout is the case's (config "keypad"); the board only wires rows and columns.
    return KEYMAP_4X4 if layout == "4x4" else KEYMAP_4X3
