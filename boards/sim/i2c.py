# I2C bus emulation with the machine.I2C subset the drivers use. Each transaction is handed whole
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

    def device(self, addr):
        return self._devs.get(addr)

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

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._dev(addr).read(nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def _memaddr(self, memaddr, addrsize):
        if addrsize == 16:
            return bytes(((memaddr >> 8) & 0xFF, memaddr & 0xFF))
        return bytes((memaddr & 0xFF,))

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._write(addr, self._memaddr(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self._write(addr, self._memaddr(memaddr, addrsize))
        return bytes(self._dev(addr).read(nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf), addrsize)
        for i in range(len(buf)):
            buf[i] = data[i]
