"""What an operator reads of renewal plans: a row per recent plan, and one plan laid out.

A plan's rollouts are read as the rollouts list reads them (the rollout and its wave
counts, `rollout_summary`), never by walking their devices; a plan's at-risk devices
are shown a page at a time, and only the page's devices are looked up in its trust.add.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from orchestrator.domain.renewal import PlanSummary
from orchestrator.ports import PlanStore, RolloutStore
from orchestrator.services.rollout import RolloutDeps, RolloutError, RolloutSummary, rollout_summary

__all__ = [
    "PAGE_SIZE",
    "AtRiskDevice",
    "DevicePage",
    "PlanRollout",
    "PlanRow",
    "Role",
    "TimelineEntry",
    "at_risk_page",
    "plan_rollouts",
    "plan_timeline",
    "recent_plans",
]

PAGE_SIZE: Final = 50
"""At-risk devices per page."""

Role = Literal["add", "retire"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRollout:
    """One of a plan's rollouts: what it does for the plan, and its state and counts."""

    role: Role
    """`add` (the new CA into the spare sec_tag) or `retire` (the old CA out)."""
    id: str
    summary: RolloutSummary | None
    """The rollout's state, waves and grouped counts; None when the rollout is gone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRow:
    """A plan as the list of plans shows it: its summary (no device lists) and rollouts."""

    plan: PlanSummary
    rollouts: tuple[PlanRollout, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AtRiskDevice:
    """A device the new chain would break, and where it is in the plan's trust.add."""

    device_id: str
    add_state: str | None
    """Its state in the trust.add rollout; None without one (or not in it)."""
    unconfirmed: bool
    """The trust.add ended without its confirmation: the old CA stays on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePage:
    """One page of a plan's at-risk devices."""

    page: int
    size: int
    listed: int
    """How many at-risk device ids the plan keeps (capped at the plan's list limit)."""
    total: int
    """How many devices are at risk in all."""
    devices: tuple[AtRiskDevice, ...]

    @property
    def pages(self) -> int:
        """Pages in all (at least one, empty when no device is listed)."""
        return max(1, -(-self.listed // self.size))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first device (0 for an empty page)."""
        return self.page * self.size + 1 if self.devices else 0

    @property
    def last(self) -> int:
        """The 1-based position of the page's last device."""
        return self.page * self.size + len(self.devices)

    @property
    def has_prev(self) -> bool:
        """Whether a page comes before this one."""
        return self.page > 0

    @property
    def has_next(self) -> bool:
        """Whether a page with devices comes after this one."""
        return (self.page + 1) * self.size < self.listed


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    """A moment of a plan: what happens or happened then."""

    at: datetime
    what: str
    note: str | None = None


def _rollout(rollouts: RolloutDeps, role: Role, rollout_id: str) -> PlanRollout:
    try:
        summary = rollout_summary(rollouts, rollout_id)
    except RolloutError:
        summary = None
    return PlanRollout(role=role, id=rollout_id, summary=summary)


def plan_rollouts(
    rollouts: RolloutDeps, *, add: str | None, retire: str | None
) -> tuple[PlanRollout, ...]:
    """The plan's trust.add and trust.retire (those it has), each read as the rollouts
    list reads it (the rollout and its wave counts)."""
    steps: tuple[tuple[Role, str | None], ...] = (("add", add), ("retire", retire))
    return tuple(_rollout(rollouts, role, rollout_id) for role, rollout_id in steps if rollout_id)


def recent_plans(plans: PlanStore, rollouts: RolloutDeps, *, limit: int) -> list[PlanRow]:
    """The latest `limit` plans, newest first, each with its impact counts and rollouts,
    read without the plans' device lists."""
    return [
        PlanRow(
            plan=summary,
            rollouts=plan_rollouts(
                rollouts, add=summary.add_rollout, retire=summary.retire_rollout
            ),
        )
        for summary in plans.summaries(limit)
    ]


def at_risk_page(
    rollouts: RolloutStore, plan: Mapping[str, Any], *, page: int, size: int = PAGE_SIZE
) -> DevicePage:
    """Page `page` (0-based) of the at-risk devices of `plan` (the document `plan_view`
    gives), each with its state in the plan's trust.add. A page past the end is empty."""
    if page < 0 or size < 1:
        raise ValueError(f"page must be >= 0 and size >= 1, got page={page} size={size}")
    impact = plan.get("impact") or {}
    listed: Sequence[str] = impact.get("at_risk") or ()
    total = int((impact.get("counts") or {}).get("at_risk", len(listed)))
    ids = list(listed[page * size : (page + 1) * size])
    add = plan.get("add_rollout")
    states = rollouts.device_states(add, ids) if add and ids else {}
    unconfirmed = set(plan.get("unconfirmed") or ())
    devices = tuple(
        AtRiskDevice(
            device_id=d,
            add_state=states[d].value if d in states else None,
            unconfirmed=d in unconfirmed,
        )
        for d in ids
    )
    return DevicePage(page=page, size=size, listed=len(listed), total=total, devices=devices)


def _moment(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def plan_timeline(plan: Mapping[str, Any]) -> list[TimelineEntry]:
    """The moments of `plan` (the document `plan_view` gives) that are known, in time order:
    created, the new chain valid from, cutover, the servers' switch, the old CA's retire."""
    chain = plan.get("chain") or {}
    moments = [
        (plan.get("created_at"), f"planned from {plan.get('event', 'a CA event')}", None),
        (chain.get("not_yet_valid_until"), "new chain valid from", "the trust.add waits for it"),
        (plan.get("cutover_at"), "cutover announced", None),
        (plan.get("activated_at"), "servers switched", plan.get("activated_by")),
        (plan.get("retire_after"), "old CA retired after", "the soak after the switch"),
        (chain.get("anchor_not_after"), "new CA expires", chain.get("anchor_subject")),
    ]
    entries = [
        TimelineEntry(at=at, what=what, note=note)
        for value, what, note in moments
        if (at := _moment(value)) is not None
    ]
    return sorted(entries, key=lambda e: e.at)
