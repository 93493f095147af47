"""The simulator's room: the LockCase firmware on the MicroPython Unix port, on a developer's machine.

- `sim.process`: one sim case process (`SimCase`, supervised like a chip's reset line) and its
  control socket (`SimClient`, docs/sim.md). The tests, the benches and `make sim` use it.
- `sim.device`: the sim board as a serial device on a pseudo-terminal (`SimDevice`), for
  `casectl deploy`/`provision`/`mpremote` as on a real board (`casectl sim-device`).
- `sim.stack`: the demo cloud of `make sim`: an embedded MQTT broker, the reference cloud's worker
  and HTTP API on SQLite, a demo store with its members. The only module here that imports
  `casecloud` (the `sim` extra).
- `sim.launcher`: `make sim` (`python -m sim`), the case in the terminal.
- `sim.demo`: the demo store's data: the case's config, its staff PIN, the loyalty members.

The board itself, with its emulated parts, is `boards/sim`; its one boot path is
`boards/sim/start.py`, which every sim process here runs. The sim runs a checkout's firmware:
install it with `pip install -e '.[sim]'` in a checkout (README.md, "Installs").
"""
