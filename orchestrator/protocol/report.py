"""The `report` message a device publishes about each bundle it handles."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from orchestrator.domain.credentials import SEC_TAG_MAX, SEC_TAG_MIN
from orchestrator.domain.reports import DeviceReport
from orchestrator.protocol.bundle import MAX_ACTIVE_TAGS, Reason
from orchestrator.protocol.state import parse_device_message, rfc3339_time
from orchestrator.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["Phase", "ReportMessage", "parse_report"]

SecTag = Annotated[int, Field(ge=SEC_TAG_MIN, le=SEC_TAG_MAX, strict=True)]


class Phase(enum.StrEnum):
    """Where a device is with one bundle."""

    RECEIVED = "received"
    REJECTED = "rejected"
    STAGED = "staged"
    HEALTH_OK = "health_ok"
    HEALTH_FAILED = "health_failed"
    COMMITTED = "committed"
    FALLBACK = "fallback"
    ROLLED_BACK = "rolled_back"
    RETIRED = "retired"


class ReportMessage(BaseModel):
    """`{prefix}/{device_id}/report`: JSON, QoS 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    rollout_id: str = Field(max_length=128)
    seq: int = Field(ge=0, strict=True)
    op: str | None = Field(default=None, max_length=32)
    phase: Phase
    reason: Reason
    detail: str = Field(default="", max_length=1024)
    time: AwareDatetime
    active_tags: list[SecTag] | None = Field(default=None, max_length=MAX_ACTIVE_TAGS)

    _strict_time = field_validator("time", mode="before")(rfc3339_time)

    def to_json(self) -> bytes:
        """The wire form."""
        return self.model_dump_json(exclude_none=True).encode()

    def to_domain(self) -> DeviceReport:
        """The domain value of this report."""
        return DeviceReport(
            device_id=self.device_id,
            rollout_id=self.rollout_id,
            seq=self.seq,
            op=self.op,
            phase=self.phase.value,
            reason=self.reason.value,
            detail=self.detail,
            time=self.time,
            active_tags=tuple(self.active_tags) if self.active_tags is not None else None,
        )


def parse_report(payload: bytes, *, topic_device_id: str) -> ReportMessage:
    """Validate a report payload received on `topic_device_id`'s report topic.

    Raises:
        RejectedMessageError: as `parse_device_message`.
    """
    return parse_device_message(ReportMessage, payload, topic_device_id=topic_device_id)
