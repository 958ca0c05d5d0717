"""The MQTT 5 client every party of the contract connects with (docs/protocol.md §1).

One factory for the listener, the simulated devices and the benchmarks, so the
session options the contract fixes are written once: MQTT 5, the client id, and a
persistent session (Clean Start 0 with a Session Expiry Interval) or none.

With `manual_ack`, a QoS 1 message is acknowledged (PUBACK) only when `acknowledge`
is called for it, so the broker keeps it in the session and sends it again after a
reconnect until then. aiomqtt does not expose paho's manual acknowledgement, so this
module is the one place that reaches the paho client under it.
"""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["DEVICE_SESSION_EXPIRY_SECONDS", "acknowledge", "mqtt5_client"]

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
    manual_ack: bool = False,
    receive_maximum: int | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client, not yet connected (`async with` connects it).

    Args:
        session_expiry: seconds the broker keeps the session after a disconnect; the
            client resumes it (Clean Start 0). None: a fresh session that ends with
            the connection (Clean Start 1).
        tls_context: connect over TLS, validating the broker with this context.
        max_inflight: most QoS 1 publishes awaiting their PUBACK (paho's default: 20).
        inbox: the queue incoming messages land in (default: a new one).
        manual_ack: acknowledge a QoS 1 message only through `acknowledge`, not on receipt.
        receive_maximum: most QoS 1 messages the broker sends before their PUBACK (the
            MQTT 5 Receive Maximum; without it the broker applies its own limit, which
            is mosquitto's `max_inflight_messages`, 20 by default).
    """
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
    if session_expiry is not None:
        properties.SessionExpiryInterval = session_expiry
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    client = aiomqtt.Client(
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
    client._client.manual_ack_set(manual_ack)  # aiomqtt has no option for it
    return client


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> bool:
    """Send the PUBACK of a QoS 1 `message` received by a `manual_ack` client.

    Returns False, sending nothing, when the connection the message came on is gone:
    a message id names a message on one connection only, and the broker sends an
    unacknowledged message again on the next.
    """
    paho = client._client  # aiomqtt has no acknowledgement call
    if message.qos == 0 or not paho.is_connected():
        return False
    return paho.ack(message.mid, message.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS
