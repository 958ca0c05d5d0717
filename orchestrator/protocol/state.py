"""The `state` message a device publishes on every connect, and its validation."""

from __future__ import annotations

import enum
import json
import re
from datetime import datetime
from typing import Annotated, Final, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.domain.credentials import (
    SEC_TAG_MAX,
    SEC_TAG_MIN,
    CredentialType,
    ReportedCredential,
    sha256_hex,
)
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.inventory import DeviceState
from orchestrator.protocol.limits import PROTOCOL_VERSION, STATE_CREDENTIALS_MAX, TAG_LIST_MAX
from orchestrator.protocol.topics import DEVICE_ID_PATTERN

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RFC3339_PATTERN",
    "STATE_VERSION",
    "CredentialEntry",
    "RejectReason",
    "RejectedMessageError",
    "StateMessage",
    "parse_device_message",
    "parse_state",
    "rfc3339_time",
]

MAX_MESSAGE_BYTES = 16 * 1024
"""Device messages above this size are rejected unread."""

STATE_VERSION: Final = PROTOCOL_VERSION
"""What a v2 device puts in `v`; certfleet accepts 1 and 2 (docs/protocol.md §12)."""

RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""An RFC 3339 date-time with its offset, the only form a device time may take."""
_RFC3339 = re.compile(RFC3339_PATTERN)


class RejectReason(enum.StrEnum):
    """Why the orchestrator refused a device message, or one item's pem (counted per reason)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_TOPIC = "bad_topic"
    CLOCK_SKEW = "clock_skew"
    """The state's `time` lies further ahead of the receive time than the allowed skew."""
    PEM_TOO_LARGE = "pem_too_large"
    """An item's pem is over the modem's CA chain limit: kept out of the library."""
    PEM_INVALID = "pem_invalid"
    """An item's pem is not a PEM X.509 certificate chain: kept out of the library."""


class RejectedMessageError(CertfleetError):
    """A device message that failed validation; `reason` is its counted class."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _json_integer(value: object) -> object:
    """Refuse what JSON would not call an integer (true, "0", 0.0) before coercion."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a JSON integer, got {value!r}")
    return value


def rfc3339_time(value: object) -> object:
    """Refuse a wire time that is not an RFC 3339 string (`1e10`, `"2025-06-01 12:00"`).

    A `datetime` passes: only Python code builds a message from one, never JSON.
    """
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(f"must be an RFC 3339 time string with offset, got {value!r}")
    return value


class CredentialEntry(BaseModel):
    """One (sec_tag, type) item as `AT%CMNG=1` and `AT%CERTEXPIRY` describe it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sec_tag: int = Field(ge=SEC_TAG_MIN, le=SEC_TAG_MAX, strict=True)
    type: CredentialType
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    not_after: AwareDatetime | None = None
    subject: str | None = Field(default=None, max_length=1024)
    issuer: str | None = Field(default=None, max_length=1024)
    pem: str | None = Field(default=None, max_length=8192)

    _strict_type = field_validator("type", mode="before")(_json_integer)
    _strict_not_after = field_validator("not_after", mode="before")(rfc3339_time)

    @model_validator(mode="after")
    def _pem_matches_digest(self) -> CredentialEntry:
        if self.pem is not None:
            if not self.type.is_certificate:
                raise ValueError("pem may only accompany a certificate item")
            if sha256_hex(self.pem.encode()) != self.sha256:
                raise ValueError("pem does not hash to sha256")
        return self

    def to_domain(self) -> ReportedCredential:
        """The domain value this entry describes."""
        return ReportedCredential(
            sec_tag=self.sec_tag,
            type=self.type,
            sha256=self.sha256,
            not_after=self.not_after,
            subject=self.subject,
            issuer=self.issuer,
        )


class StateMessage(BaseModel):
    """`{prefix}/{device_id}/state`: everything the device's modem holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1, 2] = 2  # STATE_VERSION
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    time: AwareDatetime
    credentials: list[CredentialEntry] = Field(max_length=STATE_CREDENTIALS_MAX)
    active_tags: list[Annotated[int, Field(ge=SEC_TAG_MIN, le=SEC_TAG_MAX, strict=True)]] | None = (
        Field(default=None, max_length=TAG_LIST_MAX)
    )
    identity_tag: int | None = Field(default=None, ge=SEC_TAG_MIN, le=SEC_TAG_MAX, strict=True)
    """The sec_tag whose client certificate and key the device presents to the broker."""

    _strict_v = field_validator("v", mode="before")(_json_integer)
    _strict_time = field_validator("time", mode="before")(rfc3339_time)

    @model_validator(mode="after")
    def _one_item_per_slot(self) -> StateMessage:
        slots = [(c.sec_tag, c.type) for c in self.credentials]
        if len(slots) != len(set(slots)):
            raise ValueError("credentials name the same (sec_tag, type) twice")
        return self

    def to_domain(self) -> DeviceState:
        """The device state this message reports."""
        return DeviceState(
            device_id=self.device_id,
            reported_at=self.time,
            credentials=tuple(c.to_domain() for c in self.credentials),
            active_tags=tuple(self.active_tags) if self.active_tags is not None else None,
            protocol_version=self.v,
            identity_tag=self.identity_tag,
        )

    def known_pems(self) -> dict[str, str]:
        """Digest -> PEM for the items the device sent in full."""
        return {c.sha256: c.pem for c in self.credentials if c.pem is not None}

    def to_json(self) -> bytes:
        """The wire form."""
        return self.model_dump_json(exclude_none=True).encode()


M = TypeVar("M", bound=BaseModel)


def parse_device_message(model: type[M], payload: bytes, *, topic_device_id: str) -> M:
    """Validate a JSON device message received on `topic_device_id`'s topic.

    Raises:
        RejectedMessageError: the payload is too large, not JSON, not a valid
            message of `model`, or names another device than its topic.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise RejectedMessageError(
            RejectReason.TOO_LARGE, f"{len(payload)} bytes, limit {MAX_MESSAGE_BYTES}"
        )
    try:
        # The fast path: pydantic parses and validates the bytes in one go. A message it
        # refuses takes the path below, which says why in the terms devices are told.
        message = model.model_validate_json(payload)
    except ValidationError:
        pass
    else:
        if getattr(message, "device_id", None) == topic_device_id:
            return message
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, as is an integer
        # literal past Python's digit limit; deep nesting raises RecursionError.
        raise RejectedMessageError(RejectReason.NOT_JSON, str(exc)) from None
    try:
        message = model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise RejectedMessageError(RejectReason.SCHEMA, problems) from None
    named = getattr(message, "device_id", None)
    if named != topic_device_id:
        raise RejectedMessageError(
            RejectReason.TOPIC_MISMATCH,
            f"payload names {named!r}, topic names {topic_device_id!r}",
        )
    return message


def parse_state(payload: bytes, *, topic_device_id: str) -> StateMessage:
    """Validate a state payload received on `topic_device_id`'s state topic."""
    return parse_device_message(StateMessage, payload, topic_device_id=topic_device_id)
