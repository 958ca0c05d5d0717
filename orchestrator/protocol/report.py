"""The `report` message a device publishes about each bundle it handles."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from orchestrator.domain.credentials import SEC_TAG_MAX, SEC_TAG_MIN
from orchestrator.protocol.bundle import MAX_ACTIVE_TAGS, Reason
from orchestrator.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["Phase", "ReportMessage"]

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

    def to_json(self) -> bytes:
        """The wire form."""
        return self.model_dump_json(exclude_none=True).encode()
