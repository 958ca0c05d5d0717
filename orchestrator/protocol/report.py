"""The `report` message a device publishes about each bundle it handles."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.domain.credentials import SEC_TAG_MAX, SEC_TAG_MIN
from orchestrator.domain.reports import DeviceReport
from orchestrator.protocol.limits import CSR_FIELD_MAX_BYTES, DETAIL_MAX_BYTES, TAG_LIST_MAX
from orchestrator.protocol.reasons import Reason
from orchestrator.protocol.state import parse_device_message, rfc3339_time
from orchestrator.protocol.topics import DEVICE_ID_PATTERN

__all__ = ["Phase", "ReportMessage", "parse_report", "truncate_detail"]

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
    CSR = "csr"
    """A `keygen` made the key: the report's `csr` carries the CSR and the modem's attestation."""


def truncate_detail(text: str) -> str:
    """`text` cut to at most `DETAIL_MAX_BYTES` of UTF-8, on a character boundary."""
    data = text.encode()
    if len(data) <= DETAIL_MAX_BYTES:
        return text
    return data[:DETAIL_MAX_BYTES].decode(errors="ignore")


def _detail_bytes(value: str) -> str:
    if len(value.encode()) > DETAIL_MAX_BYTES:
        raise ValueError(f"detail is over {DETAIL_MAX_BYTES} bytes of UTF-8")
    return value


class ReportMessage(BaseModel):
    """`{prefix}/{device_id}/report`: JSON, QoS 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1, 2] = 2  # PROTOCOL_VERSION
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    rollout_id: str = Field(max_length=128)
    seq: int = Field(ge=0, strict=True)
    op: str | None = Field(default=None, max_length=32)
    phase: Phase
    reason: Reason
    detail: str = Field(default="", max_length=DETAIL_MAX_BYTES)
    time: AwareDatetime
    active_tags: list[SecTag] | None = Field(default=None, max_length=TAG_LIST_MAX)
    csr: str | None = Field(
        default=None, max_length=CSR_FIELD_MAX_BYTES, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
    )

    _strict_time = field_validator("time", mode="before")(rfc3339_time)
    _detail_limit = field_validator("detail")(_detail_bytes)

    @model_validator(mode="after")
    def _csr_with_its_phase(self) -> ReportMessage:
        if (self.csr is not None) != (self.phase is Phase.CSR):
            raise ValueError("a report carries `csr` exactly when its phase is `csr`")
        return self

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
            csr=self.csr,
        )


def parse_report(payload: bytes, *, topic_device_id: str) -> ReportMessage:
    """Validate a report payload received on `topic_device_id`'s report topic.

    Raises:
        RejectedMessageError: as `parse_device_message`.
    """
    return parse_device_message(ReportMessage, payload, topic_device_id=topic_device_id)
