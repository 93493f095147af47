"""aiomqtt client settings shared by the worker and the command sender."""

from __future__ import annotations

import socket
from typing import Any

import aiomqtt

from casecloud.settings import Settings


def client(settings: Settings, role: str, *, clean_session: bool = True, max_inflight: int | None = None
           ) -> aiomqtt.Client:
    """max_inflight: QoS 1 messages sent and not yet acknowledged by the broker before further ones
    wait in the client (paho's default is 20)."""
    ident = settings.mqtt_client_id or f"casecloud-{socket.gethostname()}"
    return aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        identifier=f"{ident}-{role}"[:64],
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean_session,
        keepalive=30,
        max_inflight_messages=max_inflight,
        # Small packets (requests, replies, PUBACKs) go out at once: with Nagle's algorithm a
        # reply could wait for the ACK of the previous packet, which Linux delays up to 40 ms.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
