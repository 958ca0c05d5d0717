"""What the API needs of the renewal service, as two callables over the container.

`orchestrator.services.renewals` turns a CA event into a renewal plan. The API calls
it through the two signatures below, so tests (and `create_app`) can hand in others;
the defaults give the service the container's `renewal_deps()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.services import renewals
from orchestrator.services.renewals import EventTooLargeError, InvalidEventError

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["AcceptEvent", "PlanView", "accept_event", "invalid_event_status", "plan_view"]


class AcceptEvent(Protocol):
    """Act on a verified CA event; return at least `{"plan_id", "status"}`.

    Raises the service's `InvalidEventError` for a payload it cannot act on.
    """

    def __call__(
        self, container: Container, event_type: str, data: dict[str, Any], *, now: datetime
    ) -> Mapping[str, Any]: ...


class PlanView(Protocol):
    """A renewal plan as the API shows it, or None for an unknown id."""

    def __call__(self, container: Container, plan_id: str) -> Mapping[str, Any] | None: ...


def accept_event(
    container: Container, event_type: str, data: dict[str, Any], *, now: datetime
) -> Mapping[str, Any]:
    """`orchestrator.services.renewals.accept_event` over the container's adapters."""
    return renewals.accept_event(container.renewal_deps(), event_type, data, now=now)


def plan_view(container: Container, plan_id: str) -> Mapping[str, Any] | None:
    """`orchestrator.services.renewals.plan_view` over the container's adapters."""
    return renewals.plan_view(container.renewal_deps(), plan_id)


def invalid_event_status(exc: BaseException) -> int | None:
    """The status of an event the renewal service refused: 422 for a CA or chain over
    the modem's limits (`EventTooLargeError`), 400 for any other `InvalidEventError`,
    None for an error that is no refusal (a 500)."""
    if isinstance(exc, EventTooLargeError):
        return 422
    return 400 if isinstance(exc, InvalidEventError) else None
