"""mbedTLS's own heap use for one case connection, as a chip would count it.

The heap harness runs the firmware on Debian's i386 MicroPython, whose `tls` module links the
system mbedTLS: its buffers come from libc malloc, outside the `-X heapsize` GC heap, so the heap
figures leave TLS out. On a Pico W the same buffers come from the GC heap; on an ESP32-S3 from
the ESP-IDF heap the GC heap also grows into. This measures them (docs/memory.md, "TLS and the
boards' heaps").

tools/tls_peak/tls_peak.c does what the firmware's tls_wrap makes MicroPython's `tls` do (a
client context, CERT_REQUIRED, the CA as DER, wrap_socket with server_hostname), then an MQTT
CONNECT and its CONNACK, against a Mosquitto TLS listener on loopback with a P-256 CA and server
certificate made as tests/e2e/test_cloud_tls.py makes them. It counts every calloc and free of
mbedTLS itself: Debian builds mbedTLS without MBEDTLS_PLATFORM_MEMORY, so the static library is
linked with `--wrap=calloc --wrap=free` (the library's calls only, not libc's own).

It is built for i386 (4-byte pointers, like the chips) against the mbedTLS of the Debian release
named in micropython32.lock, the one the 32-bit MicroPython links (3.6, the series MicroPython
1.25 to 1.29 bundle). The package is fetched with apt-get through this machine's apt mirror and
unpacked under build/tls_peak/; nothing of it is installed. The compiler's 32-bit support
(gcc-multilib) is installed with apt-get when missing.

Debian's build has 16 KiB record buffers both ways; MicroPython's ports build the output one
for 4 KiB of content (extmod/mbedtls/mbedtls_config_common.h; ESP-IDF's
CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN, which ports/esp32/boards/sdkconfig.base selects). The
output buffer is allocated once, at wrap_socket, and lives as long as the socket, so every figure
taken while it lives is reduced by exactly the content lengths' difference (the buffer's
header, IV and MAC room are the same in both builds).

    python tools/tls_peak.py        # prints the figures as JSON
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "tools" / "tls_peak" / "tls_peak.c"
OUT = REPO / "build" / "tls_peak"

# MicroPython's record content lengths (extmod/mbedtls/mbedtls_config_common.h; ESP-IDF's
# defaults with ASYMMETRIC_CONTENT_LEN): what the measured figures are brought to.
MP_IN_CONTENT_LEN = 16384
MP_OUT_CONTENT_LEN = 4096
# Without MBEDTLS_SSL_KEEP_PEER_CERTIFICATE (MicroPython's own configuration, so the Pico W) the
# session keeps a SHA-256 digest of the server's certificate instead of the certificate.
PEER_CERT_DIGEST_BYTES = 32
# Verification failed (MBEDTLS_ERR_X509_CERT_VERIFY_FAILED).
ERR_X509_CERT_VERIFY_FAILED = -0x2700


class TlsPeakError(RuntimeError):
    pass


def gc_cost(n: int) -> int:
    """Bytes of a 32-bit GC heap one m_tracked_calloc(n) takes: an 8-byte node, 16-byte blocks."""
    return (n + 8 + 15) // 16 * 16


def _as_root(*cmd: str) -> list[str]:
    if os.geteuid() == 0:
        return list(cmd)
    if shutil.which("sudo"):
        return ["sudo", *cmd]
    raise TlsPeakError(f"not root and no sudo: run `{' '.join(cmd)}` yourself")


def _compiles_32bit() -> bool:
    if not shutil.which("cc"):
        return False
    probe = OUT / "probe.c"
    probe.write_text("#include <stdio.h>\nint main(void) { return 0; }\n")
    r = subprocess.run(["cc", "-m32", str(probe), "-o", str(OUT / "probe")], capture_output=True)
    return r.returncode == 0


def toolchain() -> None:
    """A C compiler that builds i386 programs; gcc-multilib from apt-get when it is missing."""
    OUT.mkdir(parents=True, exist_ok=True)
    if _compiles_32bit():
        return
    if not shutil.which("apt-get"):
        raise TlsPeakError("no C compiler for i386 (cc -m32) and no apt-get: install gcc-multilib")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (_as_root("apt-get", "update", "-qq"), _as_root("apt-get", "install", "-y", "-qq", "gcc", "gcc-multilib")):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise TlsPeakError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    if not _compiles_32bit():
        raise TlsPeakError("gcc-multilib is installed but `cc -m32` still cannot build a program")


def mbedtls() -> Path:
    """Debian's libmbedtls-dev for i386, from the release micropython32.lock names, unpacked."""
    sys.path.insert(0, str(REPO / "tools"))
    import micropython32

    suite = micropython32.read_lock()[0]
    root = OUT / "mbedtls" / "root"
    stamp = OUT / "mbedtls" / "suite"
    if stamp.exists() and stamp.read_text() == suite and (root / "usr" / "include" / "mbedtls").is_dir():
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise TlsPeakError(f"{tool} is missing: mbedTLS is fetched from Debian with apt")
    work = OUT / "mbedtls" / "apt"
    shutil.rmtree(OUT / "mbedtls", ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "debs"):
        (work / d).mkdir(parents=True, exist_ok=True)
    try:
        (work / "sources.list").write_text(
            f"deb [signed-by={micropython32.KEYRING}] {micropython32.mirror()} {suite} main\n")
        micropython32.apt(work, suite, "update")  # i386 indexes, as the 32-bit MicroPython's
        micropython32.apt(work, suite, "download", "libmbedtls-dev")
    except micropython32.FetchError as e:
        raise TlsPeakError(str(e)) from e
    debs = sorted((work / "debs").glob("libmbedtls-dev_*.deb"))
    if not debs:
        raise TlsPeakError("apt-get did not download libmbedtls-dev")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    stamp.write_text(suite)
    return root


def build() -> Path:
    """tools/tls_peak/tls_peak.c, linked statically with mbedTLS, calloc and free counted."""
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once share one build
        toolchain()
        root = mbedtls()
        binary = OUT / "tls_peak"
        libs = root / "usr" / "lib" / "i386-linux-gnu"
        inputs = [SRC, *(libs / f"lib{n}.a" for n in ("mbedtls", "mbedx509", "mbedcrypto"))]
        if binary.exists() and all(binary.stat().st_mtime >= p.stat().st_mtime for p in inputs):
            return binary
        cmd = ["cc", "-m32", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{root / 'usr' / 'include'}", str(SRC),
               "-Wl,--wrap=calloc", "-Wl,--wrap=free", *map(str, inputs[1:]), "-o", str(binary)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise TlsPeakError(f"building tls_peak failed:\n{r.stdout}{r.stderr}")
        return binary


def _openssl(*args: str | Path) -> None:
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise TlsPeakError(f"openssl {' '.join(map(str, args))} failed: {r.stderr}")


def make_certs(d: Path, kind: str = "ec", name: str = "LockCase test CA") -> Path:
    """A CA and a server certificate for localhost, as tests/e2e/test_cloud_tls.py makes them
    (P-256); kind "rsa" makes RSA-2048 ones instead. Returns the directory; ca.der is the CA as
    the case's config carries it."""
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else ["-newkey", "rsa:2048"]
    _openssl("req", "-x509", *key, "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2",
             "-subj", f"/CN={name}")
    _openssl("req", *key, "-nodes", "-keyout", d / "srv.key", "-out", d / "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    _openssl("x509", "-req", "-in", d / "srv.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key", "-CAcreateserial",
             "-out", d / "srv.crt", "-days", "2", "-extfile", d / "ext.cnf")
    _openssl("x509", "-in", d / "ca.crt", "-outform", "DER", "-out", d / "ca.der")
    return d


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise TlsPeakError("mosquitto is not installed: run `make sysdeps`")
    return found


@contextlib.contextmanager
def broker(certs: Path) -> Iterator[int]:
    """A Mosquitto TLS listener on 127.0.0.1 with the given server certificate; yields its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = certs / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {certs / 'ca.crt'}\ncertfile {certs / 'srv.crt'}\n"
                    f"keyfile {certs / 'srv.key'}\nallow_anonymous true\npersistence false\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([_mosquitto(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=certs)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise TlsPeakError(f"mosquitto exited {proc.returncode}: {out}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TlsPeakError("mosquitto did not listen within 10 s") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(binary: Path, port: int, ca_der: Path, client_id: str = "case-tlspeak") -> dict:
    """One connection; the program's JSON. ok is False when the handshake failed."""
    r = subprocess.run([str(binary), "127.0.0.1", str(port), "localhost", str(ca_der), client_id],
                       capture_output=True, text=True, timeout=60)
    if r.returncode not in (0, 2):
        raise TlsPeakError(f"tls_peak exited {r.returncode}: {r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def adjusted(raw: dict) -> dict:
    """The figures brought to MicroPython's record sizes; see the module's docstring."""
    if raw["in_content_len"] != MP_IN_CONTENT_LEN or raw["out_content_len"] < MP_OUT_CONTENT_LEN:
        raise TlsPeakError(f"unexpected record sizes in Debian's build: {raw['in_content_len']}/{raw['out_content_len']}")
    delta = raw["out_content_len"] - MP_OUT_CONTENT_LEN
    in_buf, out_buf = raw["setup_allocs"][0], raw["setup_allocs"][1]
    if in_buf < raw["in_content_len"] or out_buf < raw["out_content_len"]:
        raise TlsPeakError(f"the record buffers were not the first allocations of wrap_socket: {raw['setup_allocs']}")
    out = {"in_record_buffer_bytes": in_buf, "out_record_buffer_bytes": out_buf - delta, "out_delta_bytes": delta}
    for name in ("setup", "handshake_peak", "session", "connected", "mqtt_peak"):
        out[f"{name}_bytes"] = raw[f"{name}_bytes"] - delta
        # delta is a multiple of 16, so the output buffer's GC blocks shrink by exactly delta
        out[f"{name}_gc_bytes"] = raw[f"{name}_gc_bytes"] - delta
    # The Pico W's session: the server's certificate gives way to its digest.
    out["session_no_peer_cert_bytes"] = out["session_bytes"] - raw["peer_cert_bytes"] + PEER_CERT_DIGEST_BYTES
    out["session_no_peer_cert_gc_bytes"] = (out["session_gc_bytes"] - raw["peer_cert_gc_bytes"]
                                            + gc_cost(PEER_CERT_DIGEST_BYTES))
    out["peak_bytes"] = max(out["handshake_peak_bytes"], out["mqtt_peak_bytes"])
    out["peak_gc_bytes"] = max(out["handshake_peak_gc_bytes"], out["mqtt_peak_gc_bytes"])
    return out


def measure(workdir: Path, kind: str = "ec") -> dict:
    """One connection with a fresh CA and server certificate of the given kind: the raw output
    and the figures at MicroPython's record sizes."""
    binary = build()
    certs = make_certs(workdir / kind, kind)
    with broker(certs) as port:
        raw = run(binary, port, certs / "ca.der")
    if not raw["ok"]:
        raise TlsPeakError(f"the handshake failed: {raw}")
    return {"raw": raw, **adjusted(raw)}


def figures(workdir: Path) -> dict:
    """The flat figures bench/tls_bench.py reports."""
    ec = measure(workdir, "ec")
    rsa = measure(workdir, "rsa")
    raw = ec["raw"]
    return {
        "tls_mbedtls_version": raw["mbedtls_version"],
        "tls_measured_pointer_bytes": raw["pointer_bytes"],
        "tls_ciphersuite": raw["ciphersuite"],
        "tls_in_content_len": MP_IN_CONTENT_LEN,
        "tls_out_content_len": MP_OUT_CONTENT_LEN,
        "tls_in_record_buffer_bytes": ec["in_record_buffer_bytes"],
        "tls_out_record_buffer_bytes": ec["out_record_buffer_bytes"],
        "tls_mbedtls_context_bytes": raw["context_bytes"],
        "tls_mbedtls_peak_bytes": ec["peak_bytes"],
        "tls_mbedtls_peak_gc_bytes": ec["peak_gc_bytes"],
        "tls_mbedtls_session_bytes": ec["session_bytes"],
        "tls_mbedtls_session_gc_bytes": ec["session_gc_bytes"],
        "tls_mbedtls_session_no_peer_cert_bytes": ec["session_no_peer_cert_bytes"],
        "tls_mbedtls_session_no_peer_cert_gc_bytes": ec["session_no_peer_cert_gc_bytes"],
        "tls_peer_cert_bytes": raw["peer_cert_bytes"],
        "tls_largest_block_bytes": raw["largest_block"],
        "tls_peak_blocks": raw["handshake_peak_blocks"],
        "tls_python_objects_bytes": raw["sizeof_ssl_context_object_fields"] + raw["sizeof_ssl_socket_object_fields"],
        "tls_rsa2048_ciphersuite": rsa["raw"]["ciphersuite"],
        "tls_rsa2048_mbedtls_peak_bytes": rsa["peak_bytes"],
        "tls_rsa2048_mbedtls_session_bytes": rsa["session_bytes"],
    }


if __name__ == "__main__":
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(figures(Path(tmp)), indent=2))
    except TlsPeakError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
