# heap: 256k
# The cloud's desired state on the case (docs/protocol.md, `state`): the whole staff set and the
# config overrides arrive in parts, are applied in one save once every part of a version is in
# (whatever their order), replace the cloud's credentials but keep the provisioned ones, and the
# applied version is reported in hello and beat; a refused state changes nothing. Staff uses the
# cloud has not confirmed are journaled as staff_unconfirmed (docs/safety.md).
import json
import os

from mp_test_uplink import Case

from lockcase import config, creds

SALT = "00112233445566778899aabbccddeeff"
IT = 10


def _h(pin):
    return creds.hash_pin(pin, SALT, IT)


def _setup(cfg=None):
    # A directory of its own, as the case's flash root: the case unloads the config module after
    # each command (lockcase.compat.forget), so a path set on the module would not last.
    d = "/tmp/lc-desired-%s" % "".join("%02x" % b for b in os.urandom(6))
    os.mkdir(d)
    os.chdir(d)
    raw = {"case_id": "c1", "store_id": "s1", "unlock_ms": 5000,
           "staff": {"salt": SALT, "iter": IT, "pins": [{"id": "alice", "hash": _h("1111")},
                                                      {"id": "s_old", "hash": _h("2222")}]}}
    with open(config.PATH, "w") as f:
        f.write(json.dumps(raw))
    assert config.PATH == "config.json"
    c = Case(cfg=cfg)
    c.entry.staff = creds.StaffCreds(config.validate(raw)["staff"])
    c.connect()
    c.answer_hello()
    return c


def _stored():
    with open(config.PATH) as f:
        return json.loads(f.read())


def _acks(c):
    return [(b["ok"], b.get("err")) for b in c.bodies("ack")]


def test_every_ack_of_a_state_names_its_version():
    c = _setup()
    c.cloud_says("cmd", {"t": "state", "sv": 5, "i": 0, "n": 1, "set": {"unlock_ms": 1}, "staff": []})
    c.cloud_says("cmd", {"t": "state", "sv": 6, "i": 0, "n": 1, "staff": []})
    assert [(b["ok"], b["sv"]) for b in c.bodies("ack")] == [(False, 5), (True, 6)]


def test_a_full_set_applies_once_every_part_is_in_and_is_reported():
    c = _setup()
    before = _stored()
    staff = c.entry.staff
    # parts out of order: nothing changes until the last one is in
    c.cloud_says("cmd", {"t": "state", "sv": 3, "i": 1, "n": 2, "staff": [["badge", "s_b", _h("x")]]})
    assert _stored() == before and staff.v == 0 and staff.check_pin("2222") == "s_old"
    c.cloud_says("cmd", {"t": "state", "sv": 3, "i": 0, "n": 2, "set": {"unlock_ms": 4000},
                         "staff": [["pin", "s_new", _h("3333")]]})
    assert _acks(c) == [(True, None), (True, None)]
    raw = _stored()
    assert [e["id"] for e in raw["staff"]["pins"]] == ["alice", "s_new"]  # s_old revoked, alice kept
    assert [e["id"] for e in raw["staff"]["badges"]] == ["s_b"]
    assert raw["staff"]["v"] == 3 and raw["unlock_ms"] == 4000
    assert staff.v == 3 and staff.check_pin("2222") is None and staff.check_pin("3333") == "s_new"
    assert staff.check_pin("1111") == "alice"
    assert not any(e[0].endswith(".tmp") for e in os.ilistdir("/tmp") if e[0].startswith("lc-desired"))  # lazily: /tmp may be big
    # reported at once in a beat, and in every hello
    c.run(c.up_ms, c.up_ms)
    assert c.bodies("beat")[-1]["sv"] == 3
    c.connect()
    assert c.bodies("hello")[-1]["sv"] == 3
    # the same state again (a re-send) is applied again, idempotently
    for i in (0, 1):
        c.cloud_says("cmd", {"t": "state", "sv": 3, "i": i, "n": 2, "staff": []})
    assert _stored()["staff"]["v"] == 3


def test_a_refused_state_changes_nothing():
    c = _setup()
    before = _stored()
    many = [["pin", "s_%d" % k, _h("9999")] for k in range(33)]
    for i in range(6):  # six parts that each fit a message, 33 credentials in all
        c.cloud_says("cmd", {"t": "state", "sv": 4, "i": i, "n": 6, "staff": many[i * 6:i * 6 + 6]})
    assert _acks(c) == [(True, None)] * 5 + [(False, "bad_config: more than 32 staff credentials")]
    c.link.sent = []
    c.cloud_says("cmd", {"t": "state", "sv": 5, "i": 0, "n": 1, "set": {"unlock_ms": 1}, "staff": []})
    c.cloud_says("cmd", {"t": "state", "sv": 6, "i": 0, "n": 1, "set": {"cloud": {}}, "staff": []})
    c.cloud_says("cmd", {"t": "state", "sv": 7, "i": 0, "n": 1, "staff": [["pin", "s_x"]]})
    c.cloud_says("cmd", {"t": "state", "sv": 8, "i": 3, "n": 2, "staff": []})
    acks = _acks(c)
    assert [ok for ok, _ in acks] == [False] * 4, acks
    assert "unlock_ms" in acks[0][1] and "cloud cannot be changed" in acks[1][1], acks
    assert _stored() == before and c.entry.staff.v == 0 and c.entry.staff.check_pin("2222") == "s_old"


def test_a_part_of_a_newer_version_starts_over():
    c = _setup()
    c.cloud_says("cmd", {"t": "state", "sv": 2, "i": 0, "n": 2, "staff": [["pin", "s_a", _h("4444")]]})
    c.cloud_says("cmd", {"t": "state", "sv": 3, "i": 1, "n": 2, "staff": []})
    assert c.entry.staff.v == 0  # v2's part 0 never joins v3's part 1
    c.cloud_says("cmd", {"t": "state", "sv": 3, "i": 0, "n": 2, "staff": []})
    assert c.entry.staff.v == 3 and c.entry.staff.check_pin("4444") is None


def _staff_grant(c):
    c.bus.emit("granted", source="staff", who="alice")
    return [d for k, d in c.bus.events if k == "staff_unconfirmed"]


def test_staff_uses_are_journaled_while_the_set_is_unconfirmed():
    c = _setup(cfg={"fw": "t", "staff_confirm_s": 60})
    # the cloud wants version 0 = ours: confirmed while connected
    c.run(c.up_ms, c.up_ms + 1000)
    assert _staff_grant(c) == []
    # offline: honoured (nothing here refuses), but journaled once the 60 s have passed
    c.link.up = False
    c.run(c.up_ms, c.up_ms + 59000)
    assert _staff_grant(c) == []
    c.run(c.up_ms + 1000, c.up_ms + 2000)
    assert _staff_grant(c) == [{"who": "alice"}]
    # back, and the cloud wants a newer version than ours: still unconfirmed until it is applied
    c.link.up = True
    c.client.on_up()
    hello = c.bodies("hello")[-1]
    c.cloud_says("cmd", {"t": "time", "re": hello["id"], "now": 5000000, "rx": 0, "sv": 9})
    c.run(c.up_ms, c.up_ms + 1000)
    assert len(_staff_grant(c)) == 2
    c.cloud_says("cmd", {"t": "state", "sv": 9, "i": 0, "n": 1, "staff": []})
    c.run(c.up_ms, c.up_ms + 1000)
    assert len(_staff_grant(c)) == 2  # confirmed: not journaled


def test_a_boot_without_the_cloud_starts_unconfirmed():
    c = Case(cfg={"fw": "t", "staff_confirm_s": 60})
    c.run(0, 1000)
    assert _staff_grant(c) == [{"who": "alice"}]


def test_staff_confirm_s_is_bounded_to_what_the_tick_clock_reaches():
    cloud = {"host": "h", "user": "u", "password": "p", "key": "ab" * 32}
    for v, ok in ((60, True), (432000, True), (59, False), (432001, False), (True, False), ("1", False)):
        cloud["staff_confirm_s"] = v
        try:
            config.validate({"cloud": cloud})
            got = True
        except config.ConfigError as exc:
            got = False
            assert "staff_confirm_s" in str(exc)
        assert got == ok, v


def test_the_config_code_is_unloaded_between_commands_but_kept_while_a_state_arrives():
    import sys

    c = _setup()
    c.cloud_says("cmd", {"t": "state", "sv": 7, "i": 0, "n": 2, "staff": []})
    assert "lockcase.remote_config" in sys.modules  # part 2 of 2 still to come: kept
    c.cloud_says("cmd", {"t": "state", "sv": 7, "i": 1, "n": 2, "staff": [["pin", "s_n", _h("4444")]]})
    assert "lockcase.remote_config" not in sys.modules and "lockcase.config" not in sys.modules
    assert c.entry.staff.check_pin("4444") == "s_n" and _stored()["staff"]["v"] == 7
    c.cloud_says("cmd", {"t": "staff", "op": "del", "kind": "pin", "sid": "s_n"})  # loaded again
    assert c.entry.staff.check_pin("4444") is None and "lockcase.config" not in sys.modules
    assert [ok for ok, _ in _acks(c)] == [True, True, True]


def test_a_staff_or_config_command_between_a_states_parts_keeps_the_parts_received():
    # The config code is unloaded after a command only when no state is being received: a
    # `config` arriving between two parts must not drop part 0 (and its `set`) with the module.
    c = _setup()
    c.cloud_says("cmd", {"t": "state", "sv": 8, "i": 0, "n": 2, "set": {"unlock_ms": 4000},
                         "staff": [["pin", "s_a", _h("5555")]]})
    c.cloud_says("cmd", {"t": "config", "set": {"held_open_s": 25}})
    c.cloud_says("cmd", {"t": "state", "sv": 8, "i": 1, "n": 2, "staff": [["pin", "s_b", _h("6666")]]})
    stored = _stored()
    assert stored["staff"]["v"] == 8 and stored["unlock_ms"] == 4000, stored
    assert c.entry.staff.check_pin("5555") == "s_a" and c.entry.staff.check_pin("6666") == "s_b"
    assert [ok for ok, _ in _acks(c)] == [True, True, True]
