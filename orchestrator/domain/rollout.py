"""Rollouts: the state machines, the wave plan and the spec.

Maintenance windows (`window`) and durations (`durations`) have their own modules.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from orchestrator.domain.credentials import validate_sec_tag
from orchestrator.domain.durations import format_duration, parse_duration, plain_number
from orchestrator.domain.errors import InvalidRolloutSpecError
from orchestrator.domain.window import MaintenanceWindow, parse_window

__all__ = [
    "DECIDED",
    "FAILURES",
    "MAX_ACTIVE_TAGS",
    "RANK",
    "ROLLBACK_TARGETS",
    "SUCCESS",
    "Advance",
    "DeviceRolloutState",
    "Kind",
    "MaintenanceWindow",
    "RolloutSpec",
    "RolloutState",
    "Selector",
    "WaveState",
    "WaveStep",
    "format_duration",
    "format_waves",
    "may_transition",
    "parse_duration",
    "parse_percent",
    "parse_selector",
    "parse_waves",
    "parse_window",
    "plan_waves",
    "wave_sizes",
]

Kind = Literal["trust.add", "trust.replace", "trust.retire"]
Advance = Literal["auto", "manual"]
ProbeWith = Literal["spare", "active"]
SelectorKind = Literal["all", "expiring", "digest", "file"]

MAX_ACTIVE_TAGS: Final = 7
"""A modem socket takes at most 7 sec_tags."""


class RolloutState(enum.StrEnum):
    """Where a rollout as a whole stands."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class WaveState(enum.StrEnum):
    """Where one wave stands."""

    PENDING = "pending"
    RUNNING = "running"
    BAKING = "baking"
    PASSED = "passed"
    FAILED = "failed"


class DeviceRolloutState(enum.StrEnum):
    """Where one device stands in one rollout; `may_transition` says where it may go."""

    PENDING = "pending"
    SENT = "sent"
    RECEIVED = "received"
    STAGED = "staged"
    HEALTH_OK = "health_ok"
    COMMITTED = "committed"
    REJECTED = "rejected"
    HEALTH_FAILED = "health_failed"
    TIMED_OUT = "timed_out"
    FALLBACK = "fallback"
    ROLLBACK_SENT = "rollback_sent"
    ROLLED_BACK = "rolled_back"


_S = DeviceRolloutState
RANK: Final[Mapping[DeviceRolloutState, int]] = MappingProxyType(
    {
        _S.PENDING: 0,
        _S.SENT: 1,
        _S.RECEIVED: 2,
        _S.STAGED: 3,
        _S.HEALTH_OK: 4,
        _S.COMMITTED: 5,
        _S.REJECTED: 5,
        _S.HEALTH_FAILED: 5,
        _S.TIMED_OUT: 5,
        _S.FALLBACK: 5,
        _S.ROLLBACK_SENT: 6,
        _S.ROLLED_BACK: 7,
    }
)
FAILURES: Final = frozenset({_S.REJECTED, _S.HEALTH_FAILED, _S.FALLBACK})
"""Failures in any case; `TIMED_OUT` counts as one only when the policy says so."""
SUCCESS: Final = frozenset({_S.COMMITTED})
DECIDED: Final = SUCCESS | FAILURES | {_S.TIMED_OUT}
ROLLBACK_TARGETS: Final = frozenset(
    {_S.SENT, _S.RECEIVED, _S.STAGED, _S.HEALTH_OK, _S.COMMITTED, _S.TIMED_OUT}
)
"""Devices that may hold the new credential, and so must be told to roll back: a device
that timed out may still have committed just before its deadline, unseen."""


def may_transition(current: DeviceRolloutState, new: DeviceRolloutState) -> bool:
    """Whether a device may go from `current` to `new`: only forward, never sideways."""
    if new == _S.ROLLBACK_SENT:
        return current in ROLLBACK_TARGETS
    if new == _S.ROLLED_BACK:
        return current == _S.ROLLBACK_SENT
    return RANK[new] > RANK[current]


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_COUNT = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class WaveStep:
    """How far a wave reaches: a device count (a canary) or a cumulative percent of targets."""

    count: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.percent is None):
            raise InvalidRolloutSpecError("a wave is either a device count or a percentage")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise InvalidRolloutSpecError(f"a canary count must be >= 1, got {self.count!r}")
        if self.percent is not None and not (
            math.isfinite(self.percent) and 0 < self.percent <= 100
        ):
            raise InvalidRolloutSpecError(
                f"a wave percentage must be above 0% and at most 100%, got {self.percent!r}"
            )

    def __str__(self) -> str:
        if self.percent is None:
            return str(self.count)
        return f"{plain_number(self.percent)}%"


def _check_steps(steps: Sequence[WaveStep]) -> None:
    if not steps:
        raise InvalidRolloutSpecError("a rollout needs at least one wave, e.g. '5,10%,100%'")
    last = 0.0
    for index, step in enumerate(steps):
        if step.percent is None:
            if index:
                raise InvalidRolloutSpecError(
                    f"only the first wave may be a device count, got {step} as wave {index + 1}"
                )
            continue
        if step.percent <= last:
            raise InvalidRolloutSpecError(
                f"wave percentages must increase: {step} after {plain_number(last)}%"
            )
        last = step.percent
    if steps[-1].percent != 100:
        raise InvalidRolloutSpecError(f"waves must end at 100%, not {steps[-1]}")


def parse_waves(text: str) -> tuple[WaveStep, ...]:
    """Read `"1%,10%,50%,100%"`, or a canary count first: `"5,25%,100%"`."""
    steps: list[WaveStep] = []
    for raw in text.split(","):
        item = raw.strip()
        if item.endswith("%") and _NUMBER.fullmatch(item[:-1].strip()):
            steps.append(WaveStep(percent=float(item[:-1])))
        elif _COUNT.fullmatch(item):
            steps.append(WaveStep(count=int(item)))
        else:
            raise InvalidRolloutSpecError(
                f"wave {item!r} in {text!r} is neither a device count nor a percentage like 10%"
            )
    _check_steps(steps)
    return tuple(steps)


def format_waves(steps: Sequence[WaveStep]) -> str:
    """The text form `parse_waves` reads back, e.g. `"5,10%,100%"`."""
    return ",".join(str(step) for step in steps)


def wave_sizes(steps: Sequence[WaveStep], total: int) -> list[int]:
    """Devices per wave for `total` targets: each wave non-empty, the sizes summing to `total`.

    A wave reaches ceil(total * percent / 100) devices cumulatively (a count: at
    most `total`), and at least one more than the wave before while any remain.
    """
    if total < 0:
        raise InvalidRolloutSpecError(f"a rollout cannot target {total} devices")
    _check_steps(steps)
    sizes: list[int] = []
    reached = 0
    for step in steps:
        if reached == total:
            break
        if step.count is not None:
            target = min(step.count, total)
        else:
            target = math.ceil(Fraction(total) * Fraction(str(step.percent)) / 100)
        cumulative = min(total, max(target, reached + 1))
        sizes.append(cumulative - reached)
        reached = cumulative
    return sizes


def plan_waves(
    seed: str, device_ids: Iterable[str], sizes_from: Sequence[WaveStep]
) -> list[list[str]]:
    """Cut the targets into waves in an order that only `seed` and the ids decide."""
    ordered = sorted(
        set(device_ids), key=lambda d: (hashlib.sha256(f"{seed}:{d}".encode()).digest(), d)
    )
    plan: list[list[str]] = []
    start = 0
    for size in wave_sizes(sizes_from, len(ordered)):
        plan.append(ordered[start : start + size])
        start += size
    return plan


def parse_percent(text: str) -> float:
    """Read `"10%"` or `"10"` as the fraction 0.10 (from 0% to 100%)."""
    body = text.strip().removesuffix("%").strip()
    if not _NUMBER.fullmatch(body) or float(body) > 100:
        raise InvalidRolloutSpecError(f"{text!r} is not a percentage from 0% to 100%")
    return float(body) / 100


_SELECTOR_ARG: Final[Mapping[str, str | None]] = MappingProxyType(
    {"all": None, "expiring": "days", "digest": "digest", "file": "path"}
)
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which devices a rollout targets: all, expiring within days, trusting a digest, or listed."""

    kind: SelectorKind
    days: int | None = None
    digest: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _SELECTOR_ARG:
            raise InvalidRolloutSpecError(f"unknown selector kind {self.kind!r}")
        wanted = _SELECTOR_ARG[self.kind]
        given = {"days": self.days, "digest": self.digest, "path": self.path}
        if any((value is None) == (name == wanted) for name, value in given.items()):
            raise InvalidRolloutSpecError(f"selector {self.kind} takes {wanted or 'no argument'}")
        if self.days is not None and (
            isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 0
        ):
            raise InvalidRolloutSpecError(f"expiring:DAYS needs days >= 0, got {self.days!r}")
        if self.digest is not None and not _HEX64.fullmatch(self.digest):
            raise InvalidRolloutSpecError(f"digest:{self.digest} is not a SHA-256 in hex")
        if self.path is not None and not self.path:
            raise InvalidRolloutSpecError("file:PATH needs a path")

    def __str__(self) -> str:
        wanted = _SELECTOR_ARG[self.kind]
        return self.kind if wanted is None else f"{self.kind}:{getattr(self, wanted)}"


def parse_selector(text: str) -> Selector:
    """Read `all`, `expiring:DAYS`, `digest:SHA256` or `file:PATH`."""
    kind, sep, arg = text.strip().partition(":")
    if kind == "all" and not sep:
        return Selector("all")
    if kind == "expiring" and _COUNT.fullmatch(arg.strip()):
        return Selector("expiring", days=int(arg))
    if kind == "digest" and sep:
        return Selector("digest", digest=arg.strip().lower())
    if kind == "file" and arg:
        return Selector("file", path=arg)
    raise InvalidRolloutSpecError(
        f"selector {text!r} is not one of all, expiring:DAYS, digest:SHA256, file:PATH"
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidRolloutSpecError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSpec:
    """What to roll out, to whom, and how carefully.

    `tag` is the live sec_tag (for trust.retire: the tag to retire); `spare_tag` is
    where the new CA is staged (for trust.retire: the tag that stays). The probe is
    required for trust.add and trust.replace; trust.retire may leave it unset.
    """

    kind: Kind
    ca_pems: tuple[str, ...]
    tag: int
    spare_tag: int
    probe_host: str = ""
    probe_port: int = 0
    waves: tuple[WaveStep, ...]
    bake_seconds: float = 0
    advance: Advance = "auto"
    max_failure: float = 0.10
    min_sample: int = 10
    device_timeout_seconds: float = 300
    timeouts_fail: bool = False
    push_rate: float | None = None
    window: MaintenanceWindow | None = None
    selector: Selector = Selector("all")
    name: str | None = None
    probe_with: ProbeWith = "spare"
    """Which sec_tags the device's probe validates with: the spare tag alone (a staging
    endpoint already serving the new chain) or the whole active list after commit
    (production still serving the old chain: a check that nothing breaks)."""

    def __post_init__(self) -> None:
        _require(self.kind in get_args(Kind), f"unknown rollout kind {self.kind!r}")
        validate_sec_tag(self.tag)
        validate_sec_tag(self.spare_tag)
        _require(self.tag != self.spare_tag, f"tag and spare_tag are both {self.tag}")
        _require(
            all(isinstance(pem, str) and pem for pem in self.ca_pems),
            "every CA PEM must be non-empty text",
        )
        if self.kind != "trust.retire":
            _require(bool(self.ca_pems), f"{self.kind} needs at least one CA certificate")
        if self.kind != "trust.retire" or self.probe_host or self.probe_port:
            _require(bool(self.probe_host), f"{self.kind} needs a probe host")
            _require(
                _is_int(self.probe_port) and 1 <= self.probe_port <= 65535,
                f"probe port must be 1..65535, got {self.probe_port!r}",
            )
        _check_steps(self.waves)
        _require(
            _is_real(self.bake_seconds) and self.bake_seconds >= 0,
            f"bake must be >= 0 seconds, got {self.bake_seconds!r}",
        )
        _require(
            self.advance in get_args(Advance),
            f"advance must be auto or manual, got {self.advance!r}",
        )
        _require(
            _is_real(self.max_failure) and 0 <= self.max_failure <= 1,
            f"max_failure must be a fraction from 0 to 1, got {self.max_failure!r}",
        )
        _require(
            _is_int(self.min_sample) and self.min_sample >= 1,
            f"min_sample must be >= 1, got {self.min_sample!r}",
        )
        _require(
            _is_real(self.device_timeout_seconds) and self.device_timeout_seconds > 0,
            f"device timeout must be > 0 seconds, got {self.device_timeout_seconds!r}",
        )
        _require(
            self.push_rate is None or (_is_real(self.push_rate) and self.push_rate > 0),
            f"push rate must be > 0 devices per second or unset, got {self.push_rate!r}",
        )
        _require(self.name is None or bool(self.name), "a rollout name cannot be empty")
        _require(
            self.probe_with in get_args(ProbeWith),
            f"probe_with must be spare or active, got {self.probe_with!r}",
        )

    def active_after(self, current: Sequence[int]) -> tuple[int, ...]:
        """The device's active sec_tags once this rollout has committed on it."""
        tags = set(current)
        if self.kind != "trust.add":
            tags.discard(self.tag)
        if self.kind != "trust.retire":
            tags.add(self.spare_tag)
        _require(bool(tags), f"{self.kind} would leave the device no active sec_tag")
        _require(
            len(tags) <= MAX_ACTIVE_TAGS,
            f"{self.kind} would leave {len(tags)} active sec_tags; a socket takes at most 7",
        )
        return tuple(sorted(tags))

    def to_json(self) -> dict[str, Any]:
        """The stored form; `from_json` reads it back to an equal spec."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["ca_pems"] = list(self.ca_pems)
        data["waves"] = format_waves(self.waves)
        data["window"] = None if self.window is None else str(self.window)
        data["selector"] = str(self.selector)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutSpec:
        """Read back what `to_json` wrote; keys with a default may be left out."""
        values = {item.name: data[item.name] for item in fields(cls) if item.name in data}
        for key in ("kind", "tag", "spare_tag", "waves"):
            _require(key in data, f"rollout spec lacks {key!r}")
        values["ca_pems"] = tuple(data.get("ca_pems", ()))
        values["waves"] = parse_waves(data["waves"])
        window = data.get("window")
        values["window"] = None if window is None else parse_window(window)
        values["selector"] = parse_selector(data.get("selector", "all"))
        return cls(**values)
