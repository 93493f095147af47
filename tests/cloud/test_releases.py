"""Over-the-air releases, the cloud's side (casecloud/releases/, api/releases.py; docs/ota.md):
uploads verified against the fleet's release key (a tampered file, a wrong signature, an unknown
board or ABI refused), rollouts in waves that halt by themselves, each case's state from its acks
and `fw` events, and the chunk server (ranges, no_release for a case not targeted, nothing counted
as a shopper request). Driven through `Handler.handle` with a case signing with the firmware codec
(no broker), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, func, select

from casecloud import codec
from casecloud.api import create_app
from casecloud.batch import Handler
from casecloud.models import Event, RateCount, Rollout, RolloutCase
from casecloud.releases import chunks, jobs
from casecloud.runtime import Runtime
from casectl import release as casectl_release
from tests.cloud.conftest import FakeClock
from tests.cloud.helpers import seed_hq
from tests.cloud.test_desired import Device, register

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

H = {"Authorization": "Bearer test-admin-token"}
KEY = Ed25519PrivateKey.generate()
PUB = casectl_release.public_hex(KEY)
# three files, one over several chunks and one empty, in path order as a manifest lists them
FILES = {"lockcase/app.mpy": bytes(range(256)) * 5 + b"end", "main.py": b"import lockcase.app\n",
         "other/empty.mpy": b""}


def make(rel: str = "sim-1.1.0", *, board: str = "sim", mpy: int = 6 | (3 << 8), key: Ed25519PrivateKey = KEY,
         files: dict[str, bytes] = FILES, version: str = "1.1.0", floor: str = "1.0.0", raw: bool = False
         ) -> tuple[bytes, str, list[bytes]]:
    entries = [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    if board in casectl_release.BOARDS and not raw:
        m = casectl_release.manifest_bytes(rel, version, board, mpy, "1.0.0", floor, entries)
    else:  # casectl would not write it: made by hand, as a forger or a stray tool would
        m = (b'{"v":1,"rel":"%s","version":"%s","board":"%s","mpy":%d,"min":"1.0.0","floor":"%s","files":[%s]}'
             % (rel.encode(), version.encode(), board.encode(), mpy, floor.encode(),
                b",".join(b'["%s",%d,"%s"]' % (p.encode(), n, h.encode()) for p, n, h in entries)))
    return m, key.sign(m).hex(), list(files.values())


def upload(api: TestClient, m: bytes, sig: str, files: list[bytes]) -> dict[str, Any]:
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert r.status_code == 201, r.text
    rel = r.json()["id"]
    for i, data in enumerate(files):
        r = api.put(f"/v1/admin/releases/{rel}/files/{i}", json={"data": base64.b64encode(data).decode()}, headers=H)
        assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    rt.settings.release_keys = [PUB]
    with TestClient(create_app(rt)) as c:
        yield c


@pytest.fixture
def ready(api: TestClient, shop: dict[str, Any]) -> dict[str, Any]:
    return upload(api, *make())


def hello(h: Handler, dev: Device, rel: str = "") -> list[dict[str, Any]]:
    return dev.read(h.handle(*dev.msg("status", {"t": "hello", "fw": "1.0.0", "rel": rel})))


def beat(h: Handler, dev: Device) -> list[dict[str, Any]]:
    return dev.read(h.handle(*dev.msg("status", {"t": "beat", "up": 5, "synced": True, "rel": ""})))


def fw_events(h: Handler, dev: Device, clock: FakeClock, *steps: dict[str, Any]) -> None:
    evts = [{"i": f"e{int(clock.t)}-{n}-{codec.new_id()}", "k": "fw", "ts": int(clock.t), "d": d}
            for n, d in enumerate(steps)]
    out = dev.read(h.handle(*dev.msg("evt", {"t": "evts", "evts": evts})))
    assert out[0]["t"] == "evtack"


def states(rt: Runtime, rid: str) -> dict[str, tuple[str, int, str]]:
    with rt.sessions() as s:
        return {r.case_id: (r.state, r.pct, r.why)
                for r in s.scalars(select(RolloutCase).where(RolloutCase.rollout_id == rid))}


# -- upload --------------------------------------------------------------------------------------------

def test_a_signed_release_is_ready_once_every_file_matches(api: TestClient, shop: dict[str, Any]) -> None:
    m, sig, files = make()
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert r.status_code == 201, r.text
    assert (r.json()["ready"], r.json()["missing"], r.json()["key"]) == (False, [0, 1, 2], PUB)
    bad = api.put("/v1/admin/releases/sim-1.1.0/files/0", json={"data": base64.b64encode(files[0][:-1] + b"X").decode()},
                  headers=H)
    assert bad.status_code == 422 and "does not match" in bad.json()["detail"]
    short = api.put("/v1/admin/releases/sim-1.1.0/files/1", json={"data": base64.b64encode(files[1][:-1]).decode()},
                    headers=H)
    assert short.status_code == 422
    assert api.put("/v1/admin/releases/sim-1.1.0/files/9", json={"data": ""}, headers=H).status_code == 404
    answers = [api.put(f"/v1/admin/releases/sim-1.1.0/files/{i}", json={"data": base64.b64encode(d).decode()},
                       headers=H) for i, d in enumerate(files)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    got = answers[-1]
    assert got.json()["ready"] is True and got.json()["missing"] == []
    again = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert again.status_code == 409
    listed = api.get("/v1/admin/releases", headers=H).json()
    assert [(x["id"], x["board"], x["version"], x["ready"]) for x in listed] == [("sim-1.1.0", "sim", "1.1.0", True)]
    one = api.get("/v1/admin/releases/sim-1.1.0", headers=H).json()
    assert base64.b64decode(one["manifest"]) == m and one["sig"] == sig  # the bytes as signed


@pytest.mark.parametrize(("what", "change", "says"), [
    ("another key's signature", {"key": Ed25519PrivateKey.generate()}, "does not verify"),
    ("an unknown board", {"board": "esp8266"}, "unknown board"),
    ("an unknown .mpy ABI", {"mpy": 5}, "ABI"),
    ("native code's arch bits", {"mpy": 6 | (3 << 8) | (10 << 10)}, "ABI"),
    ("a floor above its version", {"floor": "1.2.0", "raw": True}, "floor is above"),
    ("boot.py", {"files": {"boot.py": b"x", "main.py": b"y"}, "raw": True}, "bad file entry"),
    ("a path out of the firmware root", {"files": {"../x.py": b"x", "main.py": b"y"}, "raw": True}, "bad file entry"),
    ("no main.py", {"files": {"lockcase/app.mpy": b"x"}, "raw": True}, "no main.py"),
    ("a path longer than a case takes", {"files": {"a/" * 48 + "x.mpy": b"x", "main.py": b"y"}, "raw": True},
     "bad file entry"),
])
def test_an_upload_is_refused_with_the_reason(api: TestClient, shop: dict[str, Any], what: str,
                                              change: dict[str, Any], says: str) -> None:
    m, sig, _ = make(**change)
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert r.status_code == 422, what
    assert says in r.json()["detail"], (what, r.json())
    assert api.get("/v1/admin/releases", headers=H).json() == []
    audit = api.get("/v1/audit", headers=H).json()
    assert any(e["action"] == "release.upload" and e["result"] == "refused" for e in audit), audit


def test_a_release_may_not_lower_the_boards_published_floor(api: TestClient, shop: dict[str, Any],
                                                              ready: dict[str, Any]) -> None:
    assert api.get("/v1/admin/releases/floor", params={"board": "sim"}, headers=H).json() == {
        "board": "sim", "floor": "1.0.0", "release": "sim-1.1.0"}
    assert api.get("/v1/admin/releases/floor", params={"board": "picow"}, headers=H).json()["floor"] is None
    for rel, version, floor, says in (("sim-1.2.0", "1.2.0", "0.0.0", "floor 0.0.0 is below 1.0.0"),
                                      ("sim-0.9.0", "0.9.0", "0.9.0", "floor 0.9.0 is below 1.0.0")):
        m, sig, _ = make(rel, version=version, floor=floor)
        r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
        assert r.status_code == 422 and says in r.json()["detail"], r.json()
    m, sig, files = make("sim-1.3.0", version="1.3.0", floor="1.3.0")  # raising it is the point
    assert upload(api, m, sig, files)["ready"] is True
    assert api.get("/v1/admin/releases/floor", params={"board": "sim"}, headers=H).json()["floor"] == "1.3.0"
    m, sig, _ = make("sim-1.2.1", version="1.2.1", floor="1.2.1")  # below the floor it keeps
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert r.status_code == 422 and "floor 1.2.1 is below 1.3.0" in r.json()["detail"]
    m, sig, _ = make("picow-0.1.0", board="picow", version="0.1.0", floor="0.0.0")  # another board's floor
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    assert r.status_code == 201, r.text


def test_a_signature_over_other_bytes_is_refused(api: TestClient, shop: dict[str, Any]) -> None:
    m, sig, _ = make()
    tampered = m.replace(b'"floor":"1.0.0"', b'"floor":"0.0.0"')  # a forger lowering the floor
    r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(tampered).decode(), "sig": sig}, headers=H)
    assert r.status_code == 422 and "does not verify" in r.json()["detail"]


def test_without_a_release_key_nothing_is_taken(rt: Runtime, shop: dict[str, Any]) -> None:
    with TestClient(create_app(rt)) as api:
        m, sig, _ = make()
        r = api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
        assert r.status_code == 422 and "release_keys" in r.json()["detail"]
        assert api.get("/v1/admin/releases/key", headers=H).json() == {"key": None, "keys": []}


def test_releases_and_rollouts_are_hq_only(rt: Runtime, api: TestClient, shop: dict[str, Any]) -> None:
    from casecloud.accounts import tokens
    from casecloud.models import ApiToken

    with rt.sessions.begin() as s:
        uid = seed_hq(rt, "another-hq-token")
        s.add(ApiToken(id="t_mgr", token_hash=tokens.digest("manager-token"), hint="manager-", name="m",
                       created_by=uid, role="manager", store_id="s1", created_at=rt.now()))
    mh = {"Authorization": "Bearer manager-token"}
    m, sig, _ = make()
    assert api.get("/v1/admin/releases", headers=mh).status_code == 403
    assert api.get("/v1/admin/releases/key", headers=mh).status_code == 403
    assert api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig},
                    headers=mh).status_code == 403
    assert api.post("/v1/admin/rollouts", json={"release": "x", "store": "s1"}, headers=mh).status_code == 403
    assert api.get("/v1/admin/releases/key", headers=H).json() == {"key": PUB, "keys": [PUB]}


# -- the chunk server ----------------------------------------------------------------------------------

def fwget(h: Handler, dev: Device, rel: str, f: int, off: int) -> dict[str, Any]:
    out = dev.read(h.handle(*dev.msg("req", {"t": "fwget", "rel": rel, "f": f, "off": off})))
    assert len(out) == 1
    return out[0]


def fetch(h: Handler, dev: Device, rel: str, f: int) -> bytes:
    got, off = b"", 0
    while True:
        rep = fwget(h, dev, rel, f, off)
        assert rep["t"] == "fwdata", rep
        d = base64.b64decode(rep["d"])
        if not d:
            return got
        assert len(d) <= chunks.CHUNK
        got += d
        off += len(d)


def test_chunks_serve_the_release_to_a_targeted_case_only(rt: Runtime, api: TestClient, shop: dict[str, Any],
                                                          ready: dict[str, Any], clock: FakeClock) -> None:
    key2 = register(rt, "s1", "c2")
    h, dev, other = Handler(rt), Device(shop["key"], clock), Device(key2, clock, "c2")
    hello(h, dev)
    hello(h, other)
    first = fwget(h, dev, "sim-1.1.0", -1, 0)
    assert (first["t"], first["why"]) == ("deny", "no_release")  # no rollout yet
    r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H)
    assert r.status_code == 201, r.text
    m, _, files = make()
    assert fetch(h, dev, "sim-1.1.0", -1) == m
    for i, data in enumerate(files):
        assert fetch(h, dev, "sim-1.1.0", i) == data
    mid = fwget(h, dev, "sim-1.1.0", 0, 700)
    assert base64.b64decode(mid["d"]) == files[0][700:700 + chunks.CHUNK]
    assert fwget(h, dev, "sim-1.1.0", 0, 10**12)["d"] == ""  # far past the end: empty, not an error
    for f, off in ((3, 0), (-2, 0), (0, -1)):
        assert fwget(h, dev, "sim-1.1.0", f, off)["why"] == "bad_range", (f, off)
    assert fwget(h, dev, "nope", 0, 0)["why"] == "no_release"
    assert fwget(h, other, "sim-1.1.0", 0, 0)["why"] == "no_release"  # registered, but not targeted
    with rt.sessions() as s:  # none of it was a shopper's request: no rate count, no decision journaled
        assert s.scalar(select(func.count()).select_from(RateCount)) == 0
        assert s.scalar(select(func.count()).select_from(Event).where(Event.source == "cloud")) == 0


def test_a_full_chunk_fits_the_protocols_1024_bytes_for_the_longest_ids(rt: Runtime, shop: dict[str, Any]) -> None:
    body = {"t": "fwdata", "re": "f" * 12, "d": base64.b64encode(bytes(chunks.CHUNK)).decode()}
    _, payload = codec.encode(bytes(32), f"lockcase/v1/{'s' * 32}/{'c' * 32}/rep", body, case="c" * 32,
                              seq=2**53, now=2**40)
    assert len(payload) <= codec.MAX_BYTES


# -- rollouts ------------------------------------------------------------------------------------------

def test_a_hello_gets_the_release_after_the_time_and_acks_and_events_move_the_case(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    h, dev = Handler(rt), Device(shop["key"], clock)
    rid = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H).json()["id"]
    got = hello(h, dev)
    assert [m["t"] for m in got] == ["time", "fw"]
    m, sig, _ = make()
    assert (got[1]["rel"], got[1]["size"], got[1]["sig"]) == ("sim-1.1.0", len(m), sig)
    assert beat(h, dev) == []  # told already: not again within RESEND_S
    clock.advance(61)
    again = beat(h, dev)
    assert [x["t"] for x in again] == ["fw"] and again[0]["id"] != got[1]["id"]
    # busy: stays pending, told again later
    h.handle(*dev.msg("ack", {"t": "ack", "re": again[0]["id"], "ok": False, "err": "busy"}))
    assert states(rt, rid)["c1"] == ("pending", 0, "busy")
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "downloading", "pct": 0})
    clock.advance(5)
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "downloading", "pct": 40})
    assert states(rt, rid)["c1"] == ("downloading", 40, "")
    clock.advance(5)
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "staged"})
    # the release on trial greets before its journal says it switched: that is not a confirmation
    assert [x["t"] for x in hello(h, dev, rel="sim-1.1.0")] == ["time"]
    assert states(rt, rid)["c1"][0] == "staged"
    assert jobs.step_all(rt) == []  # nor is the rollout done
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "switching"})
    assert states(rt, rid)["c1"][0] == "switching"
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "downloading", "pct": 90})  # resent, same second
    assert states(rt, rid)["c1"][0] == "switching"
    clock.advance(30)
    assert [x["t"] for x in hello(h, dev, rel="sim-1.1.0")] == ["time"]  # booted it: nothing to send
    fw_events(h, dev, clock, {"rel": "sim-1.1.0", "st": "confirmed"})
    assert states(rt, rid)["c1"] == ("confirmed", 100, "")
    assert jobs.step_all(rt) == [(rid, "done")]
    detail = api.get(f"/v1/admin/rollouts/{rid}", headers=H).json()
    assert detail["state"] == "done" and detail["cases"][0]["running"] == "sim-1.1.0"


def test_a_batch_asks_once_whether_a_rollout_is_open_and_the_next_sees_one_opened_since(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    """With no rollout open, a batch of greetings and heartbeats asks once whether one is, not a
    query (and the flush of the case rows before it) per message; a rollout the API opens after
    that batch reaches the case at its next heartbeat."""
    h, dev = Handler(rt), Device(shop["key"], clock)
    assert [m["t"] for m in hello(h, dev)] == ["time"]
    asked: list[str] = []

    def seen(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "rollout" in statement.lower():
            asked.append(statement.split(None, 1)[0].upper())

    engine = rt.batch_sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        beats = [dev.msg("status", {"t": "beat", "up": n, "synced": True, "rel": ""}) for n in range(3)]
        out = h.handle_batch([*beats, dev.msg("status", {"t": "hello", "fw": "1.0.0", "rel": ""})])
        assert [[m["t"] for m in dev.read(o)] for o in out] == [[], [], [], ["time"]]
        assert asked == ["SELECT"]  # before: one query a message
        r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H)
        assert r.status_code == 201, r.text
        assert beat(h, dev) == []  # the API sent it to the online case as it opened the rollout
        clock.advance(61)  # past RESEND_S: told again at its next heartbeat
        assert [m["t"] for m in beat(h, dev)] == ["fw"]
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_refusal_in_the_ack_is_the_cases_state(rt: Runtime, api: TestClient, shop: dict[str, Any],
                                                 ready: dict[str, Any], clock: FakeClock) -> None:
    h, dev = Handler(rt), Device(shop["key"], clock)
    rid = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H).json()["id"]
    fw = hello(h, dev)[1]
    h.handle(*dev.msg("ack", {"t": "ack", "re": "000000000000", "ok": False, "err": "bad_key"}))  # not ours
    assert states(rt, rid)["c1"][0] == "pending"
    h.handle(*dev.msg("ack", {"t": "ack", "re": fw["id"], "ok": False, "err": "refused: board"}))
    assert states(rt, rid)["c1"] == ("refused", 0, "board")
    clock.advance(600)
    assert beat(h, dev) == []  # refused is final


def test_waves_open_as_the_previous_confirms_and_a_failing_share_halts_the_rollout(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    keys = {"c1": shop["key"], **{f"c{i}": register(rt, "s1", f"c{i}") for i in range(2, 11)}}
    devs = {c: Device(k, clock, c) for c, k in keys.items()}
    h = Handler(rt)
    r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "store": "s1", "waves": [20, 60, 100],
                                              "max_fail_pct": 25}, headers=H)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    with rt.sessions() as s:
        waves = {x.case_id: x.wave for x in s.scalars(select(RolloutCase).where(RolloutCase.rollout_id == rid))}
    assert sorted(waves.values()) == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]

    def told(cid: str) -> bool:
        return any(m["t"] == "fw" for m in hello(h, devs[cid]))

    first = sorted(c for c, w in waves.items() if w == 0)
    assert [c for c in sorted(devs) if told(c)] == first  # only the opened wave is told
    assert jobs.step_all(rt) == []  # not confirmed yet, no timer: the wave stays
    for c in first:
        fw_events(h, devs[c], clock, {"rel": "sim-1.1.0", "st": "confirmed"})
    assert jobs.step_all(rt) == [(rid, "wave")]
    second = sorted(c for c, w in waves.items() if w == 1)
    assert [c for c in sorted(devs) if told(c)] == second
    # one of six updated cases rolls back: 17 %, under 25 %: goes on
    fw_events(h, devs[second[0]], clock, {"rel": "sim-1.1.0", "st": "rolled_back", "why": "no cloud in 10 min"})
    assert jobs.step_all(rt) == []
    fw_events(h, devs[second[1]], clock, {"rel": "sim-1.1.0", "st": "downloading", "pct": 30})
    # a second fails: 2 of 6 = 33 % > 25 %: the rollout halts at once, from the event itself
    fw_events(h, devs[second[2]], clock, {"rel": "sim-1.1.0", "st": "failed", "why": "self-test: keypad"})
    detail = api.get(f"/v1/admin/rollouts/{rid}", headers=H).json()
    assert detail["state"] == "halted" and "2 of 6" in detail["halt_reason"]
    st = states(rt, rid)
    assert st[second[0]] == ("rolled_back", 0, "no cloud in 10 min") and st[second[2]][2] == "self-test: keypad"
    # the case still downloading is told to cancel at its next beat; the next wave never opens
    clock.advance(1)
    cancel = beat(h, devs[second[1]])
    assert [(x["t"], x["rel"]) for x in cancel] == [("fw", "")]
    assert states(rt, rid)[second[1]][0] == "cancelled"
    assert jobs.step_all(rt) == []
    assert not any(told(c) for c in sorted(c for c, w in waves.items() if w == 2))
    third = sorted(c for c, w in waves.items() if w == 2)
    assert fwget(h, devs[second[1]], "sim-1.1.0", 0, 0)["why"] == "no_release"  # halted: nothing served
    # resumed by hand: the cancelled case is told again
    res = api.post(f"/v1/admin/rollouts/{rid}/resume", headers=H)
    assert res.status_code == 200 and res.json()["state"] == "active"
    assert told(second[1]) and not told(third[0])
    assert api.post(f"/v1/admin/rollouts/{rid}/resume", headers=H).status_code == 409


def test_the_next_wave_opens_after_its_time_and_a_halt_by_hand_cancels(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    for i in range(2, 5):
        register(rt, "s1", f"c{i}")
    r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "pct": 100, "stores": ["s1"],
                                              "waves": [50, 100], "wave_after_s": 600}, headers=H).json()
    assert r["total"] == 4 and r["target"]["pct"] == 100
    clock.advance(599)
    assert jobs.step_all(rt) == []
    clock.advance(1)
    assert jobs.step_all(rt) == [(r["id"], "wave")]
    halted = api.post(f"/v1/admin/rollouts/{r['id']}/halt", json={"reason": "field reports"}, headers=H).json()
    assert halted["state"] == "halted" and halted["halt_reason"].startswith("field reports")
    # nobody had been told (all offline): every case is simply cancelled
    assert {v[0] for v in states(rt, r["id"]).values()} == {"cancelled"}
    # a case in a halted rollout can go into a new one; a case in an active one cannot
    again = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H)
    assert again.status_code == 201
    assert api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H).status_code == 409


def test_a_cohort_percentage_takes_that_share_in_a_stable_order(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any]) -> None:
    for i in range(2, 21):
        register(rt, "s2" if i > 10 else "s1", f"c{i}")
    r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "pct": 25}, headers=H).json()
    assert r["total"] == 5  # 25 % of 20, rounded up
    with rt.sessions() as s:
        firsts = set(s.scalars(select(RolloutCase.case_id).where(RolloutCase.rollout_id == r["id"])))
    free = 10 - sum(int(c[1:]) > 10 for c in firsts)  # s2's cases not in the first rollout
    only = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "pct": 50, "stores": ["s2"]}, headers=H).json()
    assert only["total"] == -(-free // 2) and only["target"]["skipped"] == 10 - free  # half of those free
    with rt.sessions() as s:
        seconds = set(s.scalars(select(RolloutCase.case_id).where(RolloutCase.rollout_id == only["id"])))
        assert not firsts & seconds
        assert all(int(c[1:]) > 10 for c in seconds)
        assert s.scalar(select(func.count()).select_from(Rollout)) == 2
    for bad in ({"pct": 0}, {"case": "c1", "store": "s1"}, {"store": "s1", "waves": [50, 40, 100]},
                {"store": "s1", "waves": [50]}, {"store": "s1", "max_fail_pct": 101}):
        got = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", **bad}, headers=H)
        assert got.status_code == 422, (bad, got.text)
    assert api.post("/v1/admin/rollouts", json={"release": "nope", "store": "s1"}, headers=H).status_code == 404


def test_an_incomplete_release_cannot_be_rolled_out(rt: Runtime, api: TestClient, shop: dict[str, Any]) -> None:
    m, sig, _ = make()
    api.post("/v1/admin/releases", json={"manifest": base64.b64encode(m).decode(), "sig": sig}, headers=H)
    r = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H)
    assert r.status_code == 409 and "not complete" in r.json()["detail"]


def test_a_case_running_the_release_before_it_was_told_is_confirmed(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    h, dev = Handler(rt), Device(shop["key"], clock)
    rid = api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H).json()["id"]
    assert [x["t"] for x in hello(h, dev, rel="sim-1.1.0")] == ["time"]  # nothing to send
    assert states(rt, rid)["c1"] == ("confirmed", 100, "already running")


def test_the_rollout_step_runs_with_the_worker_sides_tasks(rt: Runtime) -> None:
    from casecloud.tasks import supervised

    assert "rollouts" in [t.name for t in supervised(rt, worker=True)]


def test_a_chunk_request_past_its_deadline_is_dropped_without_a_journal_entry(
        rt: Runtime, api: TestClient, shop: dict[str, Any], ready: dict[str, Any], clock: FakeClock) -> None:
    h, dev = Handler(rt), Device(shop["key"], clock)
    hello(h, dev)
    api.post("/v1/admin/rollouts", json={"release": "sim-1.1.0", "case": "c1"}, headers=H)
    late = h.decide([dev.msg("req", {"t": "fwget", "rel": "sim-1.1.0", "f": 0, "off": 0})], [clock() - 1])
    assert late.ready == [[]]  # unanswered: the case asks again
    with rt.sessions() as s:  # and not journaled as a shopper's late request
        assert s.scalar(select(func.count()).select_from(Event).where(Event.source == "cloud")) == 0
