# heap: 256k
# lockcase.startup.build() on the sim board when the cloud link cannot be attached for want of
# memory: the case runs offline, says why, and nothing of the half-built link stays behind (issue
# 10: the CloudClient's bus subscription outlived it and made every staff grant a
# "staff_unconfirmed" event).
import json
import sys

from scratch import chdir_scratch

import boards.sim.board as simboard

sys.modules["board"] = simboard  # what start.py installs as `board` on the sim
chdir_scratch("startup")

CFG = {
    "board": "sim",
    "store_id": "s1",
    "case_id": "c1",
    "cloud": {"host": "127.0.0.1", "port": 1, "user": "c1", "password": "pw", "key": "ab" * 32},
}


def _boot_with_bind_failing():
    with open("config.json", "w") as f:
        f.write(json.dumps(CFG))
    from lockcase.uplink import link as L

    def nomem(self, *a):  # the last step of _attach_cloud, after CloudClient.__init__
        raise MemoryError("memory allocation failed, allocating 1868 bytes")

    real = L.Link.bind
    L.Link.bind = nomem
    try:
        from lockcase import startup

        return startup.build()
    finally:
        L.Link.bind = real
        sys.modules.pop("lockcase.startup", None)


def test_a_boot_without_memory_for_the_cloud_leaves_no_subscription_behind():
    app = _boot_with_bind_failing()
    assert app.cloud is None and app.link is None and app.entry.cloud is None
    for name in ("lockcase.uplink.client", "lockcase.uplink.link", "lockcase.uplink.codec"):
        assert name not in sys.modules, name
    seen = []
    app.bus.subscribe(lambda kind, data: seen.append(kind))
    # Offline, a staff grant is an ordinary grant: the client that would have asked the cloud to
    # confirm the staff set is gone, and so is its "staff_unconfirmed" on every staff open.
    app.bus.emit("granted", source="staff", who="demo")
    assert seen == ["granted"], seen
