# I2C bus emulation with the machine.I2C subset the drivers use (no more: every name a sim module
# holds is interned in the heap the harness measures). Each transaction is handed whole
# to the device attached at that address (write(buf) / read(n)), so emulators see the same byte
# stream a real peripheral would, framed the same way.

from lockcase.compat import const

_ENODEV = const(19)  # what ESP32 and the Unix port's errno use for a missing device


class SimI2C:
    def __init__(self):
        self._devs = {}
        self.writes = 0  # write transactions, all addresses: tests count these
        self.bytes_written = 0
        self.log = None  # set to a list to record (addr, bytes) of every write

    def attach(self, addr, device):
        self._devs[addr] = device
        return device

    def detach(self, addr):
        self._devs.pop(addr, None)

    def scan(self):
        return sorted(self._devs)

    def _dev(self, addr):
        d = self._devs.get(addr)
        if d is None:
            # A real bus sees no ACK to the address byte and raises before any data moves.
            raise OSError(_ENODEV)
        return d

    def _write(self, addr, data):
        d = self._dev(addr)
        self.writes += 1
        self.bytes_written += len(data)
        if self.log is not None:
            self.log.append((addr, bytes(data)))
        d.write(data)
        return len(data)

    def writeto(self, addr, buf, stop=True):
        # No copy: a chip's I2C writes from the caller's buffer, and the sim's heap is measured
        # as a chip's (a copy per LCD byte fragmented the heap the firmware boots in).
        return self._write(addr, buf)

    def writevto(self, addr, vector, stop=True):
        return self._write(addr, b"".join(bytes(b) for b in vector))

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]
