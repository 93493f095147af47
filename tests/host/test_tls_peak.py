"""mbedTLS's own heap use for one case connection (tools/tls_peak.py, docs/memory.md "TLS and the
boards' heaps"): the measurement is real (a verified handshake and an MQTT CONNACK over it), counts
every byte it allocates, and a case given the wrong CA gets no session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import tls_peak  # noqa: E402


@pytest.fixture(scope="module")
def ec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    try:
        return tls_peak.measure(tmp_path_factory.mktemp("tls"), "ec")
    except tls_peak.TlsPeakError as e:
        pytest.fail(f"the TLS measurement could not run: {e}")


def test_a_verified_session_carries_mqtt(ec: dict) -> None:
    raw = ec["raw"]
    assert raw["ok"] and raw["tls_version"] == "TLSv1.2"
    # MicroPython's suites only (ECDHE-ECDSA, AES-CBC): the broker chose one for the P-256 cert.
    assert raw["ciphersuite"].startswith("TLS-ECDHE-ECDSA-WITH-AES-") and "CBC" in raw["ciphersuite"]
    assert raw["connack"] == [0x20, 2, 0, 0]  # CONNACK, accepted
    assert raw["pointer_bytes"] == 4  # a chip's word size, not the host's
    assert raw["mbedtls_version"].startswith("3.6.")


def test_every_allocation_is_counted_and_freed(ec: dict) -> None:
    raw = ec["raw"]
    # The counter saw the frees of everything it saw allocated: no byte escaped it either way.
    assert raw["left_after_free_bytes"] == 0
    assert raw["context_bytes"] > 0 and raw["context_blocks"] > 0  # the CA, parsed


def test_the_peak_is_more_than_the_record_buffers(ec: dict) -> None:
    raw = ec["raw"]
    in_buf, out_buf = ec["in_record_buffer_bytes"], ec["out_record_buffer_bytes"]
    assert in_buf > tls_peak.MP_IN_CONTENT_LEN
    assert tls_peak.MP_OUT_CONTENT_LEN < out_buf < tls_peak.MP_OUT_CONTENT_LEN + 1024
    assert raw["largest_block"] == in_buf
    # The handshake needs the buffers, the CA and its own state (ECDHE, the server's chain).
    assert ec["peak_bytes"] > in_buf + out_buf + raw["context_bytes"] + 2048
    assert ec["session_bytes"] >= in_buf + out_buf
    assert ec["session_bytes"] < ec["peak_bytes"]
    assert ec["session_no_peer_cert_bytes"] < ec["session_bytes"]
    # The Pico W's GC heap rounds each allocation up and adds its tracking node.
    assert ec["peak_gc_bytes"] >= ec["peak_bytes"] + 8 * raw["handshake_peak_blocks"]
    # Plausible for a P-256 TLS 1.2 client with 16 KiB in / 4 KiB out: between 24 and 48 KB.
    assert 24_000 < ec["peak_bytes"] < 48_000


def test_a_wrong_ca_fails_the_handshake(tmp_path: Path) -> None:
    binary = tls_peak.build()
    good = tls_peak.make_certs(tmp_path / "good")
    rogue = tls_peak.make_certs(tmp_path / "rogue", name="Someone else")
    with tls_peak.broker(good) as port:
        res = tls_peak.run(binary, port, rogue / "ca.der")
        ok = tls_peak.run(binary, port, good / "ca.der")
    assert not res["ok"] and res["stage"] == "handshake"
    assert res["error"] == tls_peak.ERR_X509_CERT_VERIFY_FAILED
    assert ok["ok"]  # the same broker, with the right CA
