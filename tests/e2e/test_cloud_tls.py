"""The case's MQTT link over TLS: Mosquitto with a certificate from a test CA, the CA given to
the case in its config (base64 DER), and a case given the wrong CA refusing to connect."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from sim.process import SimCase, free_port
from tests.cloud.conftest import start_mosquitto
from tests.e2e.conftest import SERVICE_PASSWORD, SERVICE_USER, Env, wait_for


def make_ca(d: Path, name: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt",
                    "-days", "2", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return d


def make_server_cert(ca: Path, d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", *ec, "-keyout", d / "srv.key", "-out", d / "srv.csr",
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    subprocess.run(["openssl", "x509", "-req", "-in", d / "srv.csr", "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key",
                    "-CAcreateserial", "-out", d / "srv.crt", "-days", "2", "-extfile", d / "ext.cnf"],
                   check=True, capture_output=True)


def ca_der_b64(ca: Path) -> str:
    der = subprocess.run(["openssl", "x509", "-in", ca / "ca.crt", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return base64.b64encode(der).decode()


def test_case_connects_over_tls_and_refuses_a_wrong_ca(env: Env, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "LockCase test CA")
    make_server_cert(ca, tmp_path / "ca")
    rogue = make_ca(tmp_path / "rogue", "Someone else")
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {ca / 'ca.crt'}\ncertfile {ca / 'srv.crt'}\n"
             f"keyfile {ca / 'srv.key'}\n")
    from tests.e2e.conftest import broker_files_ctx

    env.broker_ctx.__exit__(None, None, None)
    env.broker_ctx = broker_files_ctx(env.workdir, env.secrets, port=env.port, extra=extra)
    env.broker_ctx.__enter__()
    wait_for(env.worker.connected.is_set, timeout=20)

    cfg = env.case_config()
    cfg["cloud"].update(host="localhost", port=tls_port, ca=ca_der_b64(ca))
    with SimCase(tmp_path / "tlscase", cfg, heap="512k") as case:
        cl = case.client()
        cl.wait_for(lambda s: s["cloud"]["synced"], timeout=30, what="synced over TLS")
        cl.keys("2025550143#")
        cl.wait_for(lambda s: s["entry"] == "code", timeout=15, what="a request answered over TLS")
        cl.close()

    cfg["cloud"]["ca"] = ca_der_b64(rogue)
    with SimCase(tmp_path / "roguecase", cfg, heap="512k") as case:
        cl = case.client()
        wait_for(lambda: "connect failed" in case.console(), timeout=20)
        st = cl.state()
        assert not st["cloud"]["up"] and not st["cloud"]["synced"]
        cl.close()


__all__ = ["SERVICE_PASSWORD", "SERVICE_USER", "start_mosquitto"]
