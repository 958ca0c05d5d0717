"""Maintenance windows: when a rollout may push, as a cron expression in UTC and a duration.

A window opens at each minute the cron expression matches and stays open for its
duration. The expression is standard 5-field cron, evaluated by `cronsim`: minute
hour day-of-month month day-of-week (0 or 7 is Sunday), each field `*`, `N`, `N-M`,
`N/STEP`, `N-M/STEP`, `*/STEP` or a comma list of these. As in Vixie cron, when both
day fields are restricted (neither starts with `*`), a day matching either one
matches. cronsim's extensions (names, `L`, `W`, `#`, a seconds field) are refused so
that a window reads the same to any cron.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from cronsim import CronSim, CronSimError

from orchestrator.domain.durations import format_duration, parse_duration
from orchestrator.domain.errors import InvalidRolloutSpecError

__all__ = ["MaintenanceWindow", "parse_window"]

_FIELDS: Final = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12"),
    ("day-of-week", "0-7 (0 and 7 are Sunday)"),
)
_STANDARD_SYNTAX = re.compile(r"[0-9*,/-]+")
_ONE_VALUE_STEP = re.compile(r"(\d+)-(\d+)/\d+")
_MAX_WINDOW_SECONDS: Final = 7 * 86400
_HORIZON: Final = timedelta(days=366)
_INSTANT: Final = timedelta(microseconds=1)
_ANY_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""Where cronsim is started only to check an expression; it reads no clock."""


def _for_cronsim(item: str) -> str:
    """One comma item of a field as cronsim must see it to read it as cron does.

    cronsim reads a one-value stepped range `N-N/STEP` as `N/STEP` (N to the
    field's end), where cron reads it as N alone; it gets plain `N`.
    """
    match = _ONE_VALUE_STEP.fullmatch(item)
    if match is not None and int(match[1]) == int(match[2]):
        return match[1]
    return item


def _checked_field(text: str, index: int) -> str:
    """The field for cronsim, or an error naming it and what it may hold."""
    name, values = _FIELDS[index]
    readable = ",".join(_for_cronsim(item) for item in text.split(","))
    alone = " ".join(readable if i == index else "*" for i in range(len(_FIELDS)))
    if _STANDARD_SYNTAX.fullmatch(text):
        try:
            CronSim(alone, _ANY_TIME)
        except CronSimError:
            pass
        else:
            return readable
    raise InvalidRolloutSpecError(
        f"cron {name} field {text!r} is invalid: write *, N, N-M, N/STEP, N-M/STEP, */STEP "
        f"or a comma list of these, with values {values}"
    )


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must carry a timezone")
    return now.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Windows that open at each minute matching `cron` (UTC) and last `duration_seconds`."""

    cron: str
    duration_seconds: float
    _expression: str | None = field(init=False, repr=False, compare=False)
    """What cronsim evaluates; None for a day no month has (30 February), which cronsim
    refuses as a whole and which never comes."""

    def __post_init__(self) -> None:
        parts = self.cron.split()
        if len(parts) != len(_FIELDS):
            raise InvalidRolloutSpecError(
                f"cron {self.cron!r} needs 5 fields (minute hour day-of-month month "
                f"day-of-week), got {len(parts)}"
            )
        if not (
            isinstance(self.duration_seconds, int | float)
            and 0 < self.duration_seconds <= _MAX_WINDOW_SECONDS
        ):
            raise InvalidRolloutSpecError(
                f"a maintenance window lasts more than 0s and at most 7d, "
                f"got {self.duration_seconds!r}s"
            )
        expression = " ".join(_checked_field(text, index) for index, text in enumerate(parts))
        object.__setattr__(self, "cron", " ".join(parts))
        try:
            CronSim(expression, _ANY_TIME)
        except CronSimError:
            object.__setattr__(self, "_expression", None)
        else:
            object.__setattr__(self, "_expression", expression)

    def __str__(self) -> str:
        return f"{self.cron}|{format_duration(self.duration_seconds)}"

    def _first_start_after(self, moment: datetime) -> datetime | None:
        """The first window start strictly after `moment` (UTC), if the cron ever fires."""
        if self._expression is None:
            return None
        return next(CronSim(self._expression, moment), None)

    def is_open(self, now: datetime) -> bool:
        """Whether some window start `s` has `s <= now < s + duration`.

        cronsim jumps to the first start after `now - duration`: no minute-by-minute scan.
        """
        moment = _utc(now)
        start = self._first_start_after(moment - timedelta(seconds=self.duration_seconds))
        return start is not None and start <= moment

    def next_open(self, now: datetime) -> datetime | None:
        """The first window start at or after `now` within 366 days, in `now`'s timezone."""
        moment = _utc(now)
        start = self._first_start_after(moment - _INSTANT)
        if start is None or start > moment + _HORIZON:
            return None
        return start.astimezone(now.tzinfo)


def parse_window(text: str) -> MaintenanceWindow:
    """Read `"CRON|DURATION"`, e.g. `"0 2 * * *|2h"`."""
    cron, sep, duration = text.rpartition("|")
    if not sep:
        raise InvalidRolloutSpecError(f"window {text!r} must read CRON|DURATION, e.g. 0 2 * * *|2h")
    return MaintenanceWindow(cron, parse_duration(duration))
