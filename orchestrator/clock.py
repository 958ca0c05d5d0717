"""The entrypoints' clock: services and the domain take `now` as an argument instead."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Now, in UTC (what tasks, the API and the CLI pass to services as `now`)."""
    return datetime.now(UTC)
