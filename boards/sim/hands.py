# The technician's hands on the sim device (sim/device.py): a TCP port that works the case while
# the REPL is busy, when the firmware and its own control socket (boards/sim/control.py) may not
# run at all. One command a line, one answer a line: `door 1`, `key 5 [hold_ms]`, `spring 1` (a
# spring-loaded door that pops open while the coil pulls), `outputs` (JSON).
# Started by boards/sim/start.py --hands PORT, before boot.py runs.
import _thread
import json
import socket
import time


def serve(board, port):
    hw = board.HW
    last = [None]  # the Board the firmware built, for its keypad
    spring = [0]
    create = board.create

    def tracked(cfg):
        b = create(cfg)
        last[0] = b
        return b

    board.create = tracked

    def on_out(t, name, value):
        if name == "lock" and spring[0] and value:
            hw.inputs["door"] = 1

            def close():
                time.sleep_ms(spring[0])
                hw.inputs["door"] = 0

            _thread.start_new_thread(close, ())

    hw.listeners.append(on_out)

    def answer(w):
        if w[0] == "door":
            hw.inputs["door"] = int(w[1])
        elif w[0] == "key":
            if last[0] is None:
                return "error no firmware running"
            last[0].keys.tap(w[1], int(w[2]) if len(w) > 2 else 80)
        elif w[0] == "spring":
            spring[0] = int(w[1]) and 1000
        elif w[0] == "outputs":
            return json.dumps(hw.outputs)
        else:
            return "error unknown"
        return "ok"

    def loop():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        s.listen(2)
        while True:
            c, _ = s.accept()
            while True:
                line = c.readline()
                if not line:
                    break
                try:
                    r = answer(line.decode().split())
                except Exception as e:
                    r = "error %r" % (e,)
                c.write((r + "\n").encode())
            c.close()

    _thread.start_new_thread(loop, ())
