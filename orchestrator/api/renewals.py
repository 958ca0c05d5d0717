"""What the API needs of the renewal service, loaded on first use.

`orchestrator.services.renewals` turns a CA event into a renewal plan. The API calls
it through the two signatures below, so tests (and `create_app`) can hand in others.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["AcceptEvent", "PlanView", "accept_event", "is_invalid_event", "plan_view"]

_SERVICE = "orchestrator.services.renewals"


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


def _service() -> ModuleType:
    return importlib.import_module(_SERVICE)


def accept_event(
    container: Container, event_type: str, data: dict[str, Any], *, now: datetime
) -> Mapping[str, Any]:
    """`orchestrator.services.renewals.accept_event`."""
    result: Mapping[str, Any] = _service().accept_event(container, event_type, data, now=now)
    return result


def plan_view(container: Container, plan_id: str) -> Mapping[str, Any] | None:
    """`orchestrator.services.renewals.plan_view`."""
    result: Mapping[str, Any] | None = _service().plan_view(container, plan_id)
    return result


def is_invalid_event(exc: BaseException) -> bool:
    """Whether `exc` is the renewal service's `InvalidEventError` (a 400, not a 500)."""
    invalid: type[BaseException] = _service().InvalidEventError
    return isinstance(exc, invalid)
