# An emulated MFRC522 on the sim's SPI, with the cards of boards/sim/pn532.py on its antenna.
# Register level (FIFO, CommandReg, ComIrqReg, BitFramingReg, ErrorReg, the timer), and the card
# side of ISO/IEC 14443-3 (REQA, anticollision and SELECT over cascade levels, READ, HLTA) and
# -4 (RATS, I-blocks with chaining, a waiting-time extension from phones), with its own CRC_A
# code, so the firmware's MFRC522 driver runs against it unmodified.
import time

from boards.sim.pn532 import Phone, SimChip

_SEL = (0x93, 0x95, 0x97)
_FSD = (16, 24, 32, 40, 48, 64, 96, 128, 256)


def _crc(data):
    # Bit by bit (the driver uses the byte-wise form): ITU-T V.41 reflected, preset 0x6363.
    crc = 0x6363
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


class SimMFRC522(SimChip):
    def __init__(self, clock, version=0x92):
        self.clock = clock
        self.version = version
        self.card = None
        self.fault = "ok"
        self.fault_count = 0
        self.frames = []  # (bytes, last bits) the reader sent, recent ones, for tests
        self._power_on()

    def _power_on(self):
        self.regs = bytearray(64)
        self.regs[0x01] = 0x20  # CommandReg: RcvOff, Idle
        self.fifo = bytearray()
        self.irq = 0
        self.err = 0
        self.rx_bits = 0
        self.cmd = 0
        self.field = False
        self.in_reset = False
        self._pending = None  # (answer or None, bits, ready_at)
        self._card_reset()

    def _card_reset(self):
        self.state = "idle"
        self.level = 0
        self.uid = b""
        self.fsd = 16
        self._chain = b""
        self._held = None  # an I-block answer held back behind S(WTX)

    # -- the control socket's side (the same calls as SimPN532) ---------------------------------
    def set_fault(self, kind, count=1):
        if kind not in ("ok", "corrupt", "garbage", "timeout", "dead", "hang"):
            raise ValueError("unknown nfc fault %r" % (kind,))
        self.fault = kind
        self.fault_count = count

    def present(self, card):
        self.card = card
        self._card_reset()

    def remove(self):
        self.card = None
        self._card_reset()

    # -- registers ------------------------------------------------------------------------------
    def read(self, reg):
        if reg == 0x01:
            return self.cmd
        if reg == 0x04:
            self._due()
            return self.irq
        if reg == 0x06:
            return self.err
        if reg == 0x09:
            if not self.fifo:
                return 0
            v = self.fifo[0]
            self.fifo = self.fifo[1:]
            return v
        if reg == 0x0A:
            return len(self.fifo)
        if reg == 0x0C:
            return self.rx_bits
        if reg == 0x37:
            return self.version
        return self.regs[reg]

    def write(self, reg, v):
        if reg == 0x01:
            self.cmd = v & 0x0F
            if self.cmd == 0x0F:  # SoftReset: registers to their reset values, antenna off
                self._power_on()
            elif self.cmd == 0x00:
                self._pending = None
        elif reg == 0x04:
            if v & 0x80:
                self.irq |= v & 0x7F
            else:
                self.irq &= ~v & 0x7F
        elif reg == 0x09:
            if len(self.fifo) < 64:
                self.fifo.append(v)
            else:
                self.err |= 0x10
        elif reg == 0x0A:
            if v & 0x80:
                self.fifo = bytearray()
                self.err &= ~0x10
        elif reg == 0x0D:
            self.regs[0x0D] = v & 0x7F
            if v & 0x80 and self.cmd == 0x0C:
                self._transceive()
        elif reg == 0x14:
            self.regs[0x14] = v
            on = bool(v & 0x03)
            if self.field and not on:
                self._card_reset()
            self.field = on
        else:
            self.regs[reg] = v

    def _timer_ms(self):
        reload = (self.regs[0x2C] << 8) | self.regs[0x2D]
        return max(1, reload * 25 // 1000)

    def _transceive(self):
        data = bytes(self.fifo)
        bits = self.regs[0x0D] & 0x07
        self.fifo = bytearray()
        self.err = 0
        if len(self.frames) >= 64:
            del self.frames[:32]
        self.frames.append((data, bits))
        iso = self.state == "iso"
        ans = self._card(data, bits)
        if self.fault == "timeout" and self.fault_count:
            if self.fault_count > 0:
                self.fault_count -= 1
            ans = None
        if ans is None:
            ms = self._timer_ms()
            self._pending = (None, 0, time.ticks_add(self.clock(), ms))
            return
        out, last = ans
        ms = 1 + (self.card.latency(data) if iso and self.card is not None else 0)
        if self.fault == "corrupt" and self.fault_count and len(out) > 2:
            if self.fault_count > 0:
                self.fault_count -= 1
            out = out[:-1] + bytes((out[-1] ^ 0x5A,))
        self._pending = (out, last, time.ticks_add(self.clock(), ms))

    def _due(self):
        p = self._pending
        if p is None or time.ticks_diff(self.clock(), p[2]) < 0:
            return
        self._pending = None
        out, last, _ = p
        if out is None:
            self.irq |= 0x01  # TimerIRq: nobody answered
            return
        if self.fault == "garbage":
            import os

            out = os.urandom(os.urandom(1)[0] % 20 + 1)
            self.err = os.urandom(1)[0] & 0x1F
        self.fifo = bytearray(out)
        self.rx_bits = last
        self.irq |= 0x20 | 0x10  # RxIRq, IdleIRq

    # -- the card ---------------------------------------------------------------------------------
    def _card(self, d, bits):
        """The card's answer to a frame: (bytes, valid bits of the last byte or 0), or None."""
        c = self.card
        if c is None or not self.field:
            return None
        st = self.state
        if bits == 7 and len(d) == 1 and d[0] in (0x26, 0x52):  # REQA, WUPA
            if st == "halt" and d[0] == 0x26:
                return None
            self._card_reset()
            self.uid = c.activate()
            self.state = "ready"
            return bytes((c.atqa & 0xFF, c.atqa >> 8)), 0
        if bits:
            return None
        if st == "ready" and len(d) >= 2 and d[0] in _SEL:
            lvl = _SEL.index(d[0])
            part = self._cascade(lvl)
            if part is None:
                return None
            if d[1] == 0x20:
                return part, 0
            if d[1] == 0x70 and len(d) == 9 and d[7:] == _crc(d[:7]) and d[2:7] == part:
                last = lvl == {4: 0, 7: 1, 10: 2}[len(self.uid)]
                sak = c.sak if last else 0x04
                if last:
                    self.state = "active"
                return bytes((sak,)) + _crc(bytes((sak,))), 0
            return None
        if len(d) < 3 or d[-2:] != _crc(d[:-2]):
            return None  # a card ignores a frame with a bad CRC
        body = d[:-2]
        if st == "active":
            if body[0] == 0x30 and len(body) == 2:
                r = c.read(body[1])
                if r is None:
                    return b"\x00", 4  # NAK
                return r + _crc(r), 0
            if body[0] == 0x50:
                self.state = "halt"
                return None
            if body[0] == 0xE0 and c.sak & 0x20 and len(body) == 2:
                self.fsd = _FSD[min(body[1] >> 4, 8)]
                self.state = "iso"
                ats = c.ats or b"\x05\x78\x80\x70\x02"
                return ats + _crc(ats), 0
            return None
        if st == "iso":
            return self._iso(c, body)
        return None

    def _cascade(self, lvl):
        u = self.uid
        n = len(u)
        if n == 4:
            parts = [u]
        elif n == 7:
            parts = [b"\x88" + u[:3], u[3:]]
        else:
            parts = [b"\x88" + u[:3], b"\x88" + u[3:6], u[6:]]
        if lvl >= len(parts):
            return None
        p = parts[lvl]
        return p + bytes((p[0] ^ p[1] ^ p[2] ^ p[3],))

    def _block(self, pcb, inf=b""):
        f = bytes((pcb,)) + inf
        return f + _crc(f), 0

    def _iso(self, c, b):
        pcb = b[0]
        if pcb & 0xE2 == 0x02:  # I-block
            bn = pcb & 1
            ans = c.apdu(b[1:])
            if isinstance(c, Phone) and b[1:2] == b"\x80":  # a phone app takes its time
                self._held = (bn, ans)
                return self._block(0xF2, b"\x01")
            return self._send(bn, ans)
        if pcb & 0xF7 == 0xF2 and self._held is not None:  # our S(WTX), answered
            bn, ans = self._held
            self._held = None
            return self._send(bn, ans)
        if pcb & 0xF6 == 0xA2:  # R(ACK): the next part of a chained answer
            return self._send(pcb & 1, self._chain)
        if pcb == 0xC2:  # S(DESELECT)
            self.state = "halt"
            return self._block(0xC2)
        return None

    def _send(self, bn, ans):
        room = self.fsd - 3
        if len(ans) > room:
            self._chain = ans[room:]
            return self._block(0x12 | bn, ans[:room])
        self._chain = b""
        return self._block(0x02 | bn, ans)


class SimMfrcSPI:
    """machine.SPI subset (mode 0, MSB first) in front of the MFRC522: the first byte after CS
    falls is an address (bit 7 read, bits 6..1 the register); a read answers on the next byte."""

    def __init__(self, chip):
        self.chip = chip
        self._sel = False
        self._first = True
        self._reg = 0
        self._rd = False

    def select(self, on):
        if on and not self._sel:
            self._first = True
        self._sel = on

    def _byte(self, b):
        chip = self.chip
        if not self._sel or chip.silent():
            return 0xFF if chip.silent() else 0
        if self._first:
            self._first = False
            self._rd = bool(b & 0x80)
            self._reg = (b >> 1) & 0x3F
            return 0
        if self._rd:
            out = chip.read(self._reg)
            self._reg = (b >> 1) & 0x3F
            return out
        chip.write(self._reg, b)
        return 0

    def write(self, buf):
        for b in buf:
            self._byte(b)

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = self._byte(write)

    def write_readinto(self, wbuf, rbuf):
        for i in range(len(wbuf)):
            rbuf[i] = self._byte(wbuf[i])
