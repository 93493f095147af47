"""aiomqtt client settings shared by the worker and the command sender."""

from __future__ import annotations

import socket
from typing import Any

import aiomqtt

from casecloud.settings import Settings


def client(settings: Settings, role: str, *, clean_session: bool = True) -> aiomqtt.Client:
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
    )


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
