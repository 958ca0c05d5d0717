"""The bodies the HTTP API answers with, so `/openapi.json` describes every response."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.domain.rollout import RolloutState, WaveState

__all__ = [
    "CommandResult",
    "ErrorBody",
    "ExpiringItemBody",
    "FailedDevice",
    "FleetStatusBody",
    "Health",
    "IdentitiesBody",
    "IdentityCountsBody",
    "PlanBody",
    "RolloutStatusBody",
    "RolloutSummary",
    "TagCountsBody",
    "UndoRefused",
    "WaveBody",
    "WebhookAccepted",
    "WebhookEnvelope",
    "error_responses",
]


class ErrorBody(BaseModel):
    """What went wrong, for a person to read."""

    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries declaring `ErrorBody` for each status code."""
    descriptions = {
        400: "The event is not one certfleet can act on",
        401: "Missing or wrong credentials",
        403: "A viewer token; the action needs an operator",
        404: "No such resource",
        409: "Not allowed in the current state",
        413: "The body is too large",
        422: "The event's CA or chain is over what a modem stores",
        503: "Redis is unreachable; retry later",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


# -- webhooks -----------------------------------------------------------------------------------


class WebhookEnvelope(BaseModel):
    """A Standard Webhooks payload: the event type, when it happened, and its data."""

    type: str = Field(min_length=1)
    timestamp: str | None = None
    data: dict[str, Any]


class WebhookAccepted(BaseModel):
    """The renewal plan an accepted CA event started or updated."""

    model_config = ConfigDict(extra="allow")

    plan_id: str
    status: str


# -- fleet --------------------------------------------------------------------------------------


class TagCountsBody(BaseModel):
    """Per-sec_tag counts of the last scan; `unknown` overlaps the expiry classes."""

    ok: int
    expiring: int
    expired: int
    unknown: int


class ExpiringItemBody(BaseModel):
    """A (device, sec_tag) whose CA chain expires inside the warning window, or has expired."""

    device_id: str
    sec_tag: int
    not_after: str
    subject: str | None


class IdentityCountsBody(BaseModel):
    """Per identity sec_tag: how many devices' client certificates fall in each class."""

    ok: int
    expiring: int
    expired: int


class IdentitiesBody(BaseModel):
    """The client certificates (type 1) of the last scan, classified against
    CERTFLEET_IDENTITY_RENEW_DAYS (`renew_days` None: no scan classified them yet)."""

    renew_days: int | None
    by_tag: dict[str, IdentityCountsBody]
    expiring: list[ExpiringItemBody]
    expiring_total: int
    expiring_truncated: bool


class FleetStatusBody(BaseModel):
    """The last scan's summary (`certfleet fleet status --json`)."""

    scanned_at: str | None
    warning_days: int | None
    devices: int
    by_tag: dict[str, TagCountsBody]
    expiring: list[ExpiringItemBody]
    expiring_total: int
    expiring_truncated: bool
    unknown_digests: list[str]
    rejected_reports: dict[str, int]
    identities: IdentitiesBody


# -- rollouts -----------------------------------------------------------------------------------


class WaveBody(BaseModel):
    """One wave: its size, state and device counts by rollout state."""

    index: int
    size: int
    state: WaveState
    counts: dict[str, int]


class FailedDevice(BaseModel):
    """A device that failed or timed out in the rollout."""

    device_id: str
    state: str | None


class UndoRefused(BaseModel):
    """Devices that answered the rollback `nothing_to_undo` or `superseded` and whose
    inventory still shows the rollout's change: not rolled back."""

    count: int
    devices: list[str]
    """The first 1000, sorted."""


class RolloutSummary(BaseModel):
    """One line of the rollout list."""

    id: str
    kind: str
    state: RolloutState
    created_at: str
    totals: dict[str, int]


class RolloutStatusBody(RolloutSummary):
    """A rollout's waves and device counts (`certfleet rollout status --json`)."""

    current_wave: int
    awaiting_approval: bool
    waves: list[WaveBody]
    failed_devices: list[FailedDevice]
    undo_refused: UndoRefused
    abort_reason: str | None = None
    unconfirmed_rollback: list[str] | None = None
    unconfirmed: list[str] | None = None
    """Devices that never confirmed the new trust (a rollout `completed_with_timeouts`), or
    for identity.rotate never confirmed the retire of their old identity."""


class CommandResult(BaseModel):
    """The rollout's state after a command."""

    id: str
    state: RolloutState


# -- plans and operations -----------------------------------------------------------------------


class PlanBody(BaseModel):
    """A renewal plan made from a CA event: its state, impact and rollouts (see docs/webhooks.md).

    Beyond `id` and `state` the plan carries what the renewal service records, such
    as `event`, `created_at`, `endpoints`, `impact`, `add_rollout` and `retire_rollout`.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    state: str


class Health(BaseModel):
    """Whether the API reaches Redis and the Celery broker."""

    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unreachable"]
    broker: Literal["ok", "unreachable"]
