# MicroPython that casectl runs on a device in the raw REPL: host_tools/casectl/device.py reads
# these files and sends them, so they are linted against the boards' MicroPython stubs
# (pyrightconfig.esp32.json, pyrightconfig.rp2.json) and tested under the Unix port
# (tests/device/mp_test_onboard.py), not kept in string literals. Never imported on the host.
