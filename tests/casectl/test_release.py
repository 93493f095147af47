"""casectl release: keygen, build, publish, rollout, status, halt, resume against the real cloud
API (docs/ota.md, "Releases and rollouts"). The release verifies with the public key, holds what
`casectl build` makes for the board (boot.py aside), and the private key never reaches the cloud,
the screen or a log; provisioning writes the fleet's public key into the case's config."""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
import time
from pathlib import Path

import pytest

from casecloud import registry
from casecloud.models import Release, ReleaseFile
from casectl import release
from casectl.build import compile_board
from sim.device import SimDevice
from tests.casectl.conftest import CloudServer, cli
from tests.casectl.test_provision import device_config, provision


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    d = tmp_path_factory.mktemp("keys")
    r = cli("release", "keygen", "--out", d, "--json")
    assert r.code == 0, r.all
    doc = r.json()
    priv, pub = Path(doc["private_key"]), Path(doc["public_key_file"])
    assert "PRIVATE" not in r.all and priv.read_text() not in r.all
    assert doc["fingerprint"] == release.fingerprint(doc["public_key"])[:16]
    return priv, pub, doc["public_key"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path, str], fw_snapshot: Path) -> Path:
    out = tmp_path_factory.mktemp("rel") / "sim-9.9.9.tar"
    r = cli("release", "build", "--board", "sim", "--key", keys[0], "--archive", out, "--fw-version", "9.9.9",
            "--min", "0.1.0", "--floor", "0.1.0", "--src", fw_snapshot, "--json", timeout=300)
    assert r.code == 0, r.all
    assert r.json()["rel"] == "sim-9.9.9"
    return out


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path, str], tmp_path: Path) -> None:
    priv, pub, hexkey = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert pub.read_text().strip() == hexkey and len(hexkey) == 64
    assert release.public_hex(release.load_private(priv)) == hexkey
    again = cli("release", "keygen", "--out", priv.parent)
    assert again.code == 2 and "exists already" in again.err  # never overwritten by accident
    priv.chmod(0o644)
    try:
        with pytest.raises(Exception, match="readable by others"):
            release.load_private(priv)
    finally:
        priv.chmod(0o600)


def test_keygen_prints_the_keys_whole_on_a_narrow_terminal(tmp_path: Path) -> None:
    # what the technician copies (the public key, the cloud's setting) must not be broken across
    # lines by the terminal's width
    r = cli("release", "keygen", "--out", tmp_path, env={"COLUMNS": "60"})
    assert r.code == 0, r.all
    pub = (tmp_path / "release.pub").read_text().strip()
    fp = release.fingerprint(pub)[:16]
    assert f"CASECLOUD_RELEASE_KEYS='[\"{pub}\"]'" in r.out, r.out
    assert f"{tmp_path / 'release.pub'}: {pub}" in r.out and f"--ota-key-fingerprint {fp}" in r.out, r.out


def test_build_signs_the_deploy_build_of_the_board(built: Path, keys: tuple[Path, Path, str], fw_snapshot: Path,
                                                   tmp_path: Path) -> None:
    r = release.read(built)
    r.check(keys[2])  # every file's size and sha256, and the signature with the public key
    doc = r.doc
    assert r.manifest == json.dumps(doc, separators=(",", ":")).encode()  # compact, as signed
    assert (doc["v"], doc["rel"], doc["version"], doc["board"], doc["min"], doc["floor"]) == (
        1, "sim-9.9.9", "9.9.9", "sim", "0.1.0", "0.1.0")
    assert doc["mpy"] & 0xFF == 6 and doc["mpy"] >> 10 == 0  # bytecode only
    # exactly what deploy puts on the board, boot.py aside
    ref = tmp_path / "ref"
    deployed = {b.path: b.sha256 for b in compile_board("sim", ref, firmware=fw_snapshot, version="9.9.9")}
    assert {p: h for p, _, h in doc["files"]} == {p: h for p, h in deployed.items() if p != "boot.py"}
    assert "main.py" in r.files and "lockcase/app.mpy" in r.files
    assert not release.verify(keys[2], r.manifest.replace(b"9.9.9", b"9.9.8"), r.sig)
    # the archive holds no key
    priv = keys[0].read_bytes()
    with tarfile.open(built) as tar:
        names = tar.getnames()
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None and priv not in f.read(), m.name
    assert names[:2] == ["manifest.json", "manifest.sig"]


def test_build_into_a_folder_reads_back_the_same(keys: tuple[Path, Path, str], fw_snapshot: Path,
                                                 tmp_path: Path, built: Path) -> None:
    r = release.read(built)
    out = release.write_dir(r, tmp_path / "dir")
    back = release.read(out)
    assert (back.manifest, back.sig, back.files) == (r.manifest, r.sig, r.files)
    (out / "files" / "main.py").write_bytes(b"import os; os.remove('config.json')\n")  # tampered
    with pytest.raises(release.ReleaseError, match="main.py"):
        release.read(out).check()
    p = cli("release", "publish", out, "--cloud", "http://127.0.0.1:9")  # refused before any network
    assert p.code == 13 and "main.py" in p.err


def test_publish_rollout_status_halt(cloud: CloudServer, keys: tuple[Path, Path, str], built: Path,
                                     tmp_path: Path, fw_snapshot: Path) -> None:
    cloud.rt.settings.release_keys = [keys[2]]  # the operator's setting: the public half only
    with cloud.rt.sessions.begin() as s:
        registry.register_case(s, "s1", "c1", cloud.rt.now())
        registry.register_case(s, "s1", "c2", cloud.rt.now())
    r = cli("release", "publish", built, "--cloud", cloud.url, "--json")
    assert r.code == 0, r.all
    got = r.json()["release"]
    assert (got["id"], got["ready"], got["key"]) == ("sim-9.9.9", True, keys[2])
    rel = release.read(built)
    with cloud.rt.sessions() as s:
        row = s.get(Release, "sim-9.9.9")
        assert row is not None and row.manifest == rel.manifest and row.sig == rel.sig
        for f in s.query(ReleaseFile).filter_by(release_id="sim-9.9.9"):
            assert f.data is not None and hashlib.sha256(f.data).hexdigest() == f.sha256
    again = cli("release", "publish", built, "--cloud", cloud.url)  # the same release again: nothing to do
    assert again.code == 0, again.all

    # signed with another key: the cloud refuses it
    other = tmp_path / "other"
    cli("release", "keygen", "--out", other)
    forged = release.Release(rel.manifest.replace(b'"sim-9.9.9"', b'"sim-forged"'), "", rel.files)
    forged.sig = release.load_private(other / "release.key").sign(forged.manifest).hex()
    release.write_archive(forged, tmp_path / "forged.tar")
    f = cli("release", "publish", tmp_path / "forged.tar", "--cloud", cloud.url)
    assert f.code == 7 and "does not verify" in f.err
    # and the technician is told which key the cloud wants
    assert f"trusts key {release.fingerprint(keys[2])[:16]}" in f.err and "--key" in f.err, f.err
    with cloud.rt.sessions() as s:
        assert s.get(Release, "sim-forged") is None

    ro = cli("release", "rollout", "sim-9.9.9", "--store", "s1", "--waves", "50,100", "--max-fail", "10",
             "--cloud", cloud.url, "--json")
    assert ro.code == 0, ro.all
    rid = ro.json()["rollout"]["id"]
    assert ro.json()["rollout"]["total"] == 2
    st = cli("release", "status", rid, "--cloud", cloud.url)
    assert st.code == 0 and "wave 1 of 2" in st.out and "pending" in st.out and "waiting" in st.out, st.all
    listed = cli("release", "status", "--cloud", cloud.url, "--json").json()["rollouts"]
    assert [x["id"] for x in listed] == [rid]
    h = cli("release", "halt", rid, "--reason", "bad batch", "--cloud", cloud.url, "--json")
    assert h.code == 0 and h.json()["rollout"]["state"] == "halted"
    assert cli("release", "halt", rid, "--cloud", cloud.url).code == 7  # not active any more
    assert cli("release", "resume", rid, "--cloud", cloud.url).code == 0
    assert "sim-9.9.9" in cli("release", "list", "--cloud", cloud.url).out

    # a build without --floor takes the board's highest published floor from the cloud ...
    nxt = cli("release", "build", "--board", "sim", "--key", keys[0], "--archive", tmp_path / "next.tar",
              "--fw-version", "9.9.10", "--src", fw_snapshot, "--cloud", cloud.url, "--json", timeout=300)
    assert nxt.code == 0, nxt.all
    assert release.read(tmp_path / "next.tar").doc["floor"] == "0.1.0"
    # ... and will not guess without one
    blind = cli("release", "build", "--board", "sim", "--key", keys[0], "--archive", tmp_path / "blind.tar",
                env={"CASECTL_TOKEN": ""})
    assert blind.code == 2 and "--floor" in blind.err and not (tmp_path / "blind.tar").exists()

    # the private key reached neither the cloud's files nor anything casectl printed
    pem = keys[0].read_bytes()
    raw = release.load_private(keys[0]).private_bytes_raw()
    cloud.rt.engine.dispose()
    for p in cloud.settings.data_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert pem not in data and raw not in data and raw.hex().encode() not in data, p
    for res in (r, ro, st, h):
        assert raw.hex() not in res.all and "PRIVATE KEY" not in res.all


def test_provision_writes_the_cloud_key_only_when_it_matches_the_pinned_fingerprint(
        deployed: SimDevice, cloud: CloudServer, keys: tuple[Path, Path, str], tmp_path: Path) -> None:
    other = crypto_key()
    cloud.rt.settings.release_keys = [other, keys[2]]
    fp = release.fingerprint(keys[2])[:16]
    # a cloud's key alone is never taken: without a pin or a key file, no ota_key
    boots = deployed.boots
    plain = provision(deployed, cloud, tmp_path, "--no-selftest", "--json")
    assert plain.code == 0, plain.all
    assert plain.json()["ota_key"] is None
    deployed.wait_boot(boots)  # provision resets the board: the firmware seen must be the new boot's
    deployed.wait_firmware()
    assert "ota_key" not in device_config(deployed)
    # a pin that matches none of the cloud's keys is refused before anything changes: the case is
    # not even interrupted (opening it stops its firmware, and closing it resets the board)
    boots = deployed.boots
    wrong = provision(deployed, cloud, tmp_path, "--no-selftest", "--force", "--ota-key-fingerprint", "0" * 16)
    assert wrong.code == 2 and "no release key with fingerprint" in wrong.err
    time.sleep(0.5)  # a reset would have restarted the process by now
    assert deployed.boots == boots, deployed.history
    r = provision(deployed, cloud, tmp_path, "--no-selftest", "--force", "--ota-key-fingerprint", fp)
    assert r.code == 0, r.all
    deployed.wait_boot(boots)
    deployed.wait_firmware()
    assert device_config(deployed)["ota_key"] == keys[2]


def crypto_key() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return release.public_hex(Ed25519PrivateKey.generate())


def test_provision_takes_the_key_from_a_pub_file_too(keys: tuple[Path, Path, str], tmp_path: Path) -> None:
    from casectl import provision as pv
    from casectl.errors import Usage

    assert release.read_public(keys[1]) == keys[2]
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(Usage, match="64 hex digits"):
        release.read_public(bad)
    cfg = pv.build_config(pv.Options(store="s1", case="c1", ota_key=keys[2]), "sim", pv._STAND_IN)
    assert cfg["ota_key"] == keys[2]  # and the firmware's own validator took it
    assert "ota_key" not in pv.build_config(pv.Options(store="s1", case="c1"), "sim", pv._STAND_IN)


def test_a_deploy_drops_the_over_the_air_pointer(deployed: SimDevice, sim_build: Path) -> None:
    """What casectl deploys is what boots: a release the case had switched to over the air
    (ota.json names its slot) no longer wins over the files just written, and nothing staged
    or half downloaded is left to switch after it."""
    from tests.casectl.conftest import deploy_now, mpremote

    put = mpremote(deployed.port, "exec", "import os\n"
                   "for n in ('ota.json', 'ota_dl.json', 'ota_man.bin', 'ota_idx.txt', 'ota_idx.txt.tmp'):\n"
                   "    f = open(n, 'w'); f.write('{}'); f.close()\n"
                   "os.mkdir('fw_a'); os.mkdir('fw_a/lockcase'); f = open('fw_a/lockcase/app.mpy', 'w'); f.close()\n"
                   "os.mkdir('fw_b')\n"
                   # a first release's removal of the root's lockcase/, cut short (ota/slots.py)
                   "os.mkdir('lockcase.old'); f = open('lockcase.old/app.mpy', 'w'); f.close()")
    assert put.returncode == 0, put.stderr
    deploy_now(deployed, sim_build)
    left = mpremote(deployed.port, "fs", "ls", ":").stdout
    for name in ("ota.json", "ota_dl.json", "ota_man.bin", "ota_idx.txt", "fw_a", "fw_b", "lockcase.old"):
        assert name not in left, (name, left)
