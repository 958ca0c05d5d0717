"""The rollout spec: what to roll out, to whom, and how carefully.

The state machines live in `rollout_states`, the wave plan in `waves`, maintenance
windows in `window` and durations in `durations`; their public names are re-exported
here, the spec's vocabulary in one import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from orchestrator.domain.credentials import ca_chain_item, sha256_hex, validate_sec_tag
from orchestrator.domain.durations import format_duration, parse_duration
from orchestrator.domain.errors import InvalidRolloutSpecError
from orchestrator.domain.gate import GatePolicy
from orchestrator.domain.rollout_states import (
    DECIDED,
    FAILURES,
    RANK,
    ROLLBACK_TARGETS,
    SUCCESS,
    DeviceRolloutState,
    RolloutState,
    WaveState,
    may_transition,
)
from orchestrator.domain.waves import (
    COUNT,
    NUMBER,
    WaveStep,
    check_steps,
    format_waves,
    parse_waves,
    plan_waves,
    wave_sizes,
)
from orchestrator.domain.window import MaintenanceWindow, parse_window

__all__ = [
    "DECIDED",
    "FAILURES",
    "IDENTITY_KIND",
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

Kind = Literal["trust.add", "trust.replace", "trust.retire", "identity.rotate"]
IDENTITY_KIND: Final = "identity.rotate"
"""The kind that rotates a device's client identity (docs/protocol.md, identity rotation)."""
Advance = Literal["auto", "manual"]
ProbeWith = Literal["spare", "active"]
SelectorKind = Literal["all", "expiring", "digest", "file"]

MAX_ACTIVE_TAGS: Final = 7
"""A modem socket takes at most 7 sec_tags."""


def parse_percent(text: str) -> float:
    """Read `"10%"` or `"10"` as the fraction 0.10 (from 0% to 100%)."""
    body = text.strip().removesuffix("%").strip()
    if not NUMBER.fullmatch(body) or float(body) > 100:
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
    if kind == "expiring" and COUNT.fullmatch(arg.strip()):
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

    identity.rotate: `tag` is the identity tag in use, `spare_tag` the one the new key is
    made in; no CA; the probe is the broker's mutual-TLS listener, required; the active
    list does not change.
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
    resend_after_seconds: float | None = None
    """A device that has not answered its stage this long after it was sent is sent a
    fresh one (None: a third of the device timeout)."""
    max_resends: int = 2
    """How many times a stage is sent again before its device times out."""
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
        if self.kind == IDENTITY_KIND:
            _require(not self.ca_pems, f"{self.kind} takes no CA certificate")
            _require(
                self.selector.kind != "digest",
                f"{self.kind} selects all, expiring:DAYS or file:PATH, not a CA digest",
            )
        elif self.kind != "trust.retire":
            _require(bool(self.ca_pems), f"{self.kind} needs at least one CA certificate")
        if self.kind != "trust.retire" or self.probe_host or self.probe_port:
            _require(bool(self.probe_host), f"{self.kind} needs a probe host")
            _require(
                _is_int(self.probe_port) and 1 <= self.probe_port <= 65535,
                f"probe port must be 1..65535, got {self.probe_port!r}",
            )
        check_steps(self.waves)
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
            self.resend_after_seconds is None
            or (_is_real(self.resend_after_seconds) and self.resend_after_seconds > 0),
            f"re-send interval must be > 0 seconds or unset, got {self.resend_after_seconds!r}",
        )
        _require(
            _is_int(self.max_resends) and self.max_resends >= 0,
            f"max_resends must be >= 0, got {self.max_resends!r}",
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

    @property
    def resend_interval(self) -> float:
        """Seconds a device has to answer its stage before it is sent a fresh one."""
        if self.resend_after_seconds is not None:
            return self.resend_after_seconds
        return self.device_timeout_seconds / 3

    def wait_after_send(self, sends: int) -> float:
        """Seconds a device sent its stage `sends` times has before its next deadline.

        While re-sends remain that is the re-send interval; after the last send it is
        the device timeout, the time the device itself has to commit.
        """
        return self.resend_interval if sends <= self.max_resends else self.device_timeout_seconds

    @property
    def ca_chain(self) -> str:
        """The CA chain item the stage writes into the spare tag ('' for trust.retire).

        Raises:
            CaChainTooLargeError: the CAs do not fit one modem item; `rollout create`
                checks this before anything is stored.
        """
        if not self.ca_pems:
            return ""
        return ca_chain_item(self.ca_pems, what=f"the CAs for sec_tag {self.spare_tag}")

    @property
    def gate_policy(self) -> GatePolicy:
        """The health gate's rule for this rollout's waves."""
        return GatePolicy(
            max_failure=self.max_failure,
            min_sample=self.min_sample,
            timeouts_fail=self.timeouts_fail,
        )

    @property
    def is_identity(self) -> bool:
        """Whether this rollout rotates the devices' client identity rather than their trust."""
        return self.kind == IDENTITY_KIND

    @property
    def new_ca_digest(self) -> str | None:
        """The digest a device reports for the staged item (None: trust.retire stages none)."""
        return sha256_hex(self.ca_chain.encode()) if self.ca_pems else None

    def undone_on(self, active_ca: Mapping[int, str]) -> bool:
        """Whether a device whose active sec_tags hold these CA digests shows none of this
        rollout's change, as its inventory tells after it refused an undo.

        trust.add and trust.replace: no active tag holds the new CA item's digest (the
        contract's check). trust.retire stages no CA and a device cannot undo a retire:
        the retired tag must still be active with its CA item, i.e. it never retired.
        """
        if self.kind == "trust.retire":
            return self.tag in active_ca
        return self.new_ca_digest not in active_ca.values()

    def active_after(self, current: Sequence[int]) -> tuple[int, ...]:
        """The device's active sec_tags once this rollout has committed on it."""
        tags = set(current)
        if self.kind == IDENTITY_KIND:
            _require(bool(tags), f"{self.kind} needs a device with an active sec_tag")
            return tuple(sorted(tags))
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
