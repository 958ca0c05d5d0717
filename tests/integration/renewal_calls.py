"""The renewal use cases called over a container, as the API, the CLI and the beat task call them.

`accept_event` and `plan_view` are the API's defaults; `watch_renewals` is what the
`watch_renewals` task runs, over the container's `renewal_deps()`.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.api.renewals import accept_event, plan_view
from orchestrator.bootstrap import Container
from orchestrator.services import renewals

__all__ = ["accept_event", "plan_view", "watch_renewals"]


def watch_renewals(container: Container, *, now: datetime) -> dict[str, str]:
    """One run of the renewal watch over the container's adapters."""
    return renewals.watch_renewals(container.renewal_deps(), now=now)
