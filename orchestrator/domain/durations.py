"""Durations as people write them in a rollout spec: `30`, `"30s"`, `"5m"`, `"2h"`, `"1d"`."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final

from orchestrator.domain.errors import InvalidRolloutSpecError

__all__ = ["format_duration", "parse_duration", "plain_number"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def plain_number(value: float) -> str:
    """Plain decimal text (no exponent) that reads back as `value`."""
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def parse_duration(text: str | float | int) -> float:
    """Seconds from `30`, `"30"`, `"30s"`, `"5m"`, `"2h"` or `"1d"`."""
    if isinstance(text, bool):
        raise InvalidRolloutSpecError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise InvalidRolloutSpecError(f"a duration must be >= 0 seconds, got {text!r}")
        return float(text)
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidRolloutSpecError(
            f"duration {text!r} is not seconds or a number with s, m, h or d (e.g. 30s, 2h)"
        )
    return float(match[1]) * _UNITS[match[2] or "s"]


def format_duration(seconds: float) -> str:
    """The shortest text `parse_duration` reads back as `seconds`, e.g. `"2h"`."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{plain_number(seconds)}s"
