# heap: 512k
# lockcase.startup.build() on the sim board with the over-the-air update's files on the flash
# (docs/ota.md): a normal boot loads none of lockcase.ota and says which release runs; a boot on
# trial or after a roll back loads it; a release on trial that cannot attach its cloud link goes
# back to the previous firmware at once. The heap is raised: each test boots a whole case from
# source (a chip's heap with the .mpy build is bench/ota_bench.py's).
import json
import os
import sys

from scratch import chdir_scratch

import boards.sim.board as simboard

sys.modules["board"] = simboard  # what start.py installs as `board` on the sim
chdir_scratch("ota-boot")

CFG = {
    "board": "sim",
    "store_id": "s1",
    "case_id": "c1",
    "ota_key": "ab" * 32,
    "cloud": {"host": "127.0.0.1", "port": 1, "user": "c1", "password": "pw", "key": "ab" * 32},
}


def _files(pointer, cfg=CFG):
    for name in ("ota.json", "ota_dl.json", "ota.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    with open("config.json", "w") as f:
        f.write(json.dumps(cfg))
    if pointer is not None:
        with open("ota.json", "w") as f:
            f.write(json.dumps(pointer))


def _boot():
    for name in list(sys.modules):
        if name.startswith("lockcase.ota"):
            sys.modules.pop(name)
    simboard.power_on()
    from lockcase import startup

    try:
        return startup.build()
    finally:
        sys.modules.pop("lockcase.startup", None)


def _pointer():
    with open("ota.json") as f:
        return json.loads(f.read())


def test_a_normal_boot_loads_nothing_of_the_update_and_says_which_release_runs():
    _files({"run": "fw_a", "rel": "r2", "ver": "0.2.0", "floor": "0.1.0"})
    app = _boot()
    assert app.cloud is not None and app.cloud.rel == "r2" and app.cloud.ota is None
    assert not [m for m in sys.modules if m.startswith("lockcase.ota")], list(sys.modules)
    _files(None)
    app = _boot()
    assert app.cloud.rel == "" and app.cloud.ota is None


def test_a_boot_on_trial_loads_the_update_to_confirm_it():
    _files({"run": "fw_a", "rel": "r2", "prev": "", "prel": "", "try": 2, "n": 3, "t": 600})
    app = _boot()
    assert app.cloud.ota is not None and app.cloud.app is app
    assert app.cloud.rel == "r2"


def test_a_boot_after_a_roll_back_reports_it_once():
    _files({"run": "", "rel": "", "rb": {"rel": "r2", "why": "not confirmed in 3 boots", "dir": "fw_a"}})
    app = _boot()
    assert app.cloud.ota is not None  # it reported, and goes at the client's next step
    p = _pointer()
    assert "rb" not in p and p["bad"] == ["r2"], p
    assert app.cloud.ota.step(0) is False
    fw = [r for r in app.journal.records(0, 500) if r["type"] == "fw"]
    assert fw and fw[-1]["st"] == "rolled_back" and fw[-1]["rel"] == "r2", fw  # journaled: it reaches the cloud


def test_a_release_on_trial_that_cannot_attach_its_cloud_goes_back_at_once():
    cfg = dict(CFG)
    cfg["unknown_key_a_release_refuses"] = 1  # its validator refuses the config: Config error
    _files({"run": "fw_a", "rel": "r2", "prev": "", "prel": "", "pfloor": "", "try": 2, "n": 3, "t": 600}, cfg)
    resets = []
    simboard.power_on()
    real = simboard.reset
    simboard.reset = lambda why: resets.append(why)
    try:
        app = _boot()
    finally:
        simboard.reset = real
    assert app.cloud is None and resets == ["ota"], resets
    p = _pointer()
    assert p["run"] == "" and p["rb"]["why"] == "no cloud link", p
    assert not [m for m in sys.modules if m.startswith("lockcase.ota")]
