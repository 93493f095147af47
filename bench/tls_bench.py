"""TLS figures for `make bench`: mbedTLS's own heap use for one case connection.

The heap figures leave it out (the harness's MicroPython gets mbedTLS's buffers from libc
malloc); on a Pico W it comes out of the GC heap, on an ESP32-S3 out of the ESP-IDF heap. One
connection to a Mosquitto TLS listener on loopback with a P-256 CA and server certificate, as the
firmware's tls_wrap makes it, then an MQTT CONNECT and CONNACK; i386 build, so 4-byte pointers
as on the chips, at MicroPython's record sizes (16 KiB in, 4 KiB out). How: tools/tls_peak.py.
Sizes in bytes:

- tls_mbedtls_peak_bytes: the most mbedTLS holds at once (during the handshake), the
  context's CA included; _gc_bytes: the same as a Pico W's GC heap counts it (each allocation
  an 8-byte tracked node in 16-byte blocks);
- tls_mbedtls_session_bytes: what the connected session holds afterwards with the server's
  certificate kept (ESP-IDF's default); _no_peer_cert_: without it (MicroPython's own
  configuration, the Pico W's);
- tls_largest_block_bytes: the input record buffer, which a GC heap must find in one piece;
- tls_python_objects_bytes: the SSLContext and SSLSocket objects' mbedTLS fields, in the GC heap
  on every port (sizes of this Debian build's structures);
- tls_rsa2048_*: the same with an RSA-2048 certificate instead of P-256.

Run by bench/run.py; `.venv/bin/python -m bench.tls_bench` prints them alone.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def figures() -> dict[str, object]:
    sys.path.insert(0, str(REPO / "tools"))
    import tls_peak

    with tempfile.TemporaryDirectory() as tmp:
        return tls_peak.figures(Path(tmp))


if __name__ == "__main__":
    print(json.dumps(figures(), indent=1))
