"""The MQTT 5 client every party of the contract connects with (docs/protocol.md §1).

One factory for the listener, the simulated devices and the benchmarks, so the
session options the contract fixes are written once: MQTT 5, the client id, and a
persistent session (Clean Start 0 with a Session Expiry Interval) or none.
"""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["DEVICE_SESSION_EXPIRY_SECONDS", "mqtt5_client"]

DEVICE_SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
"""How long the broker keeps a sleeping device's session and QoS 1 messages."""


def mqtt5_client(
    host: str,
    port: int,
    *,
    client_id: str,
    session_expiry: int | None,
    keepalive: int = 60,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    max_inflight: int | None = None,
    inbox: asyncio.Queue[aiomqtt.Message] | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client, not yet connected (`async with` connects it).

    Args:
        session_expiry: seconds the broker keeps the session after a disconnect; the
            client resumes it (Clean Start 0). None: a fresh session that ends with
            the connection (Clean Start 1).
        tls_context: connect over TLS, validating the broker with this context.
        max_inflight: most QoS 1 publishes awaiting their PUBACK (paho's default: 20).
        inbox: the queue incoming messages land in (default: a new one).
    """
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
    if session_expiry is not None:
        properties.SessionExpiryInterval = session_expiry
    return aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        username=username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=session_expiry is None,
        properties=properties,
        keepalive=keepalive,
        tls_context=tls_context,
        max_inflight_messages=max_inflight,
        # aiomqtt builds its queue by calling this with maxsize; the caller keeps it.
        queue_type=None if inbox is None else (lambda maxsize=0: inbox),  # type: ignore[arg-type]  # a factory, not a class
    )
