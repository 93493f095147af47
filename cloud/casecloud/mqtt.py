"""aiomqtt client settings shared by the worker and the command sender."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiomqtt

from casecloud.broker import service_role
from casecloud.settings import Settings

log = logging.getLogger("casecloud.mqtt")


def client(settings: Settings, role: str, *, clean_session: bool = True, max_inflight: int | None = None,
           manual_ack: bool = False) -> aiomqtt.Client:
    """max_inflight: QoS 1 messages sent and not yet acknowledged by the broker before further ones
    wait in the client (paho's default is 20). manual_ack: a message received is acknowledged to
    the broker only by paho's `ack(mid, qos)` (worker.py), not on receipt."""
    ident = settings.mqtt_client_id or f"casecloud-{socket.gethostname()}"
    username, password = login(settings, role)
    c = aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=username,
        password=password,
        identifier=f"{ident}-{role}"[:64],
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean_session,
        keepalive=30,
        max_inflight_messages=max_inflight,
        # Small packets (requests, replies, PUBACKs) go out at once: with Nagle's algorithm a
        # reply could wait for the ACK of the previous packet, which Linux delays up to 40 ms.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    c._client.manual_ack_set(manual_ack)  # before connecting: nothing is acknowledged unread
    return c


def login(settings: Settings, role: str) -> tuple[str | None, str | None]:
    """The broker login of this role's connection: the API's own when it has one, so that the
    worker and the command sender of one process do not share a client id on a broker that makes
    the login the client id (and knock each other off). A login the broker's generated ACL grants
    nothing this role needs is warned about: the broker would take the connection and subscription
    and deliver nothing, with no error anywhere."""
    user, pw = settings.mqtt_username, settings.mqtt_password
    if role == "api" and settings.mqtt_api_username:
        user, pw = settings.mqtt_api_username, settings.mqtt_api_password
    elif role == "api" and user:
        # a misconfiguration that takes the whole fleet's commands down on the shipped broker
        log.warning("no mqtt_api_username: the API's command sender logs in as the worker's %s, and a "
                    "broker that makes the login the client id (cloud/broker/casecloud.conf) lets the two "
                    "knock each other off", user)
        return user, pw.get_secret_value() if pw else None
    has = service_role(user) if user else role
    if has != role:
        what = "a login of another role" if has else "a name that gives no role (worker.<name>, api.<name>)"
        log.warning("the %s logs in as %s, %s: the broker's ACL (broker.py) grants it nothing it needs", role,
                    user, what)
    return user, pw.get_secret_value() if pw else None


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
