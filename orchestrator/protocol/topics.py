"""MQTT topics of the device contract: `{prefix}/{device_id}/{state|report|bundle}`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["DEVICE_ID_PATTERN", "SHARE_GROUP", "Channel", "Topics", "is_valid_device_id"]

Channel = Literal["state", "report", "bundle"]
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
SHARE_GROUP = "certfleet"
"""Listeners share device messages through `$share/certfleet/...`."""

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def is_valid_device_id(device_id: str) -> bool:
    """Whether `device_id` can stand as one topic level (1-64 chars, no wildcards)."""
    return bool(_DEVICE_ID.fullmatch(device_id))


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names under one prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "/+#$"):
            raise ValueError(f"topic prefix must be one level without / + # $: {self.prefix!r}")

    def device(self, device_id: str, channel: Channel) -> str:
        """`{prefix}/{device_id}/{channel}`."""
        if not is_valid_device_id(device_id):
            raise ValueError(f"not a valid device id: {device_id!r}")
        return f"{self.prefix}/{device_id}/{channel}"

    def state(self, device_id: str) -> str:
        """Where a device publishes its credential state on every connect."""
        return self.device(device_id, "state")

    def report(self, device_id: str) -> str:
        """Where a device publishes its bundle reports."""
        return self.device(device_id, "report")

    def bundle(self, device_id: str) -> str:
        """Where a device receives its signed bundles."""
        return self.device(device_id, "bundle")

    def shared_subscription(self, channel: Channel, group: str = SHARE_GROUP) -> str:
        """`$share/{group}/{prefix}/+/{channel}`: one listener of the group gets each message."""
        return f"$share/{group}/{self.prefix}/+/{channel}"

    def parse(self, topic: str) -> tuple[str, Channel] | None:
        """The (device id, channel) of a device topic, or None if it is not one."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix:
            return None
        device_id, channel = parts[1], parts[2]
        if channel not in get_args(Channel) or not is_valid_device_id(device_id):
            return None
        return device_id, channel  # type: ignore[return-value]  # narrowed by get_args above
