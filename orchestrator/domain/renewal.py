"""A CA renewal plan: what a renewal event found, and how far its two-phase rotation is.

A plan starts `adding` (a `trust.add` rollout of the new CA to the devices at risk),
`awaiting_switch` (no device is at risk) or `refused` (the event was unusable or its
staging endpoint failed certfleet's own preflight), and moves on:

    adding           -> awaiting_switch (add done), soaking (add done, servers switched
                        already), failed (the add rolled back)
    awaiting_switch  -> soaking (the servers serve the new chain)
    soaking          -> retiring (a `trust.retire` of the old CA), done (nothing to retire)
    retiring         -> done, failed (the retire rolled back)

`refused`, `done` and `failed` are final.

A plan is stored as JSON (`to_json`/`from_json`); the same document is what the API
and `certfleet impact --json` show. Optional fields are left out until they are set.
A plan's `summary()` is what a list of plans shows: no device ids, however many.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.chains import Impact
from orchestrator.domain.errors import CertfleetError

__all__ = [
    "OPEN_STATES",
    "ChainSummary",
    "PlanImpact",
    "PlanState",
    "PlanSummary",
    "PlanTransitionError",
    "RenewalPlan",
]


class PlanState(enum.StrEnum):
    """Where a renewal plan is."""

    REFUSED = "refused"
    ADDING = "adding"
    AWAITING_SWITCH = "awaiting_switch"
    SOAKING = "soaking"
    RETIRING = "retiring"
    DONE = "done"
    FAILED = "failed"


OPEN_STATES = frozenset(
    {PlanState.ADDING, PlanState.AWAITING_SWITCH, PlanState.SOAKING, PlanState.RETIRING}
)
"""The states the renewal watch still moves on; the others are final."""

_MOVES: Mapping[PlanState, frozenset[PlanState]] = {
    PlanState.ADDING: frozenset({PlanState.AWAITING_SWITCH, PlanState.SOAKING, PlanState.FAILED}),
    PlanState.AWAITING_SWITCH: frozenset({PlanState.SOAKING}),
    PlanState.SOAKING: frozenset({PlanState.RETIRING, PlanState.DONE}),
    PlanState.RETIRING: frozenset({PlanState.DONE, PlanState.FAILED}),
}


class PlanTransitionError(CertfleetError, ValueError):
    """A plan asked to move to a state it may not reach from where it is."""


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSummary:
    """What a plan keeps of the new chain: its anchor, hosts and size, the leaf's digest."""

    anchor_subject: str
    anchor_not_after: datetime
    hosts: tuple[str, ...]
    chain_bytes: int
    leaf_sha256: str | None
    """SHA-256 of the DER leaf a server will serve; None for a CA given alone."""
    not_yet_valid_until: datetime | None
    """When the chain becomes valid, if it is not yet."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored under the plan's `chain`."""
        return {
            "anchor_subject": self.anchor_subject,
            "anchor_not_after": self.anchor_not_after.isoformat(),
            "hosts": list(self.hosts),
            "chain_bytes": self.chain_bytes,
            "leaf_sha256": self.leaf_sha256,
            "not_yet_valid_until": _time(self.not_yet_valid_until),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChainSummary:
        """The summary `to_json` wrote."""
        return cls(
            anchor_subject=data["anchor_subject"],
            anchor_not_after=datetime.fromisoformat(data["anchor_not_after"]),
            hosts=tuple(data["hosts"]),
            chain_bytes=int(data["chain_bytes"]),
            leaf_sha256=data.get("leaf_sha256"),
            not_yet_valid_until=_parse_time(data.get("not_yet_valid_until")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanImpact:
    """The impact as a plan records it: full counts, device ids capped (`truncated` if so)."""

    counts: Mapping[str, int]
    """Devices per verdict: `safe`, `at_risk`, `unknown`."""
    safe: tuple[str, ...]
    at_risk: tuple[str, ...]
    unknown: tuple[str, ...]
    truncated: bool

    @classmethod
    def of(cls, impact: Impact) -> PlanImpact:
        """The record of `impact`, with its lists capped as `Impact.as_json` caps them."""
        return cls.from_json(impact.as_json())

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored under the plan's `impact`."""
        return {
            "counts": dict(self.counts),
            "safe": list(self.safe),
            "at_risk": list(self.at_risk),
            "unknown": list(self.unknown),
            "truncated": self.truncated,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanImpact:
        """The record `to_json` wrote."""
        return cls(
            counts={verdict: int(n) for verdict, n in data["counts"].items()},
            safe=tuple(data["safe"]),
            at_risk=tuple(data["at_risk"]),
            unknown=tuple(data["unknown"]),
            truncated=bool(data["truncated"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    """A plan without its device lists: what a list of plans shows of it."""

    id: str
    event: str
    created_at: datetime
    endpoints: tuple[str, ...]
    anchor_subject: str
    state: PlanState
    reason: str | None
    counts: Mapping[str, int]
    """Devices per impact verdict: `safe`, `at_risk`, `unknown`."""
    truncated: bool
    add_rollout: str | None
    retire_rollout: str | None
    unconfirmed: int
    """How many devices never confirmed the new CA."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored for the summary."""
        return {
            "id": self.id,
            "event": self.event,
            "created_at": self.created_at.isoformat(),
            "endpoints": list(self.endpoints),
            "anchor_subject": self.anchor_subject,
            "state": self.state.value,
            "reason": self.reason,
            "counts": dict(self.counts),
            "truncated": self.truncated,
            "add_rollout": self.add_rollout,
            "retire_rollout": self.retire_rollout,
            "unconfirmed": self.unconfirmed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanSummary:
        """The summary `to_json` wrote."""
        return cls(
            id=data["id"],
            event=data["event"],
            created_at=datetime.fromisoformat(data["created_at"]),
            endpoints=tuple(data["endpoints"]),
            anchor_subject=data["anchor_subject"],
            state=PlanState(data["state"]),
            reason=data.get("reason"),
            counts={verdict: int(n) for verdict, n in data["counts"].items()},
            truncated=bool(data["truncated"]),
            add_rollout=data.get("add_rollout"),
            retire_rollout=data.get("retire_rollout"),
            unconfirmed=int(data.get("unconfirmed", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPlan:
    """One CA renewal: the event, the new chain, the impact, the rollouts and the state."""

    id: str
    event: str
    """The event type that made the plan: `certificate.renewed` or `ca.renewed`."""
    created_at: datetime
    endpoints: tuple[str, ...]
    """The HOST:PORT endpoints that will serve the new chain."""
    staging_endpoint: str | None
    cutover_at: datetime | None
    chain: ChainSummary
    anchor_pem: str
    impact: PlanImpact
    state: PlanState
    add_rollout: str | None = None
    retire_rollout: str | None = None
    reason: str | None = None
    old_tag: int | None = None
    """The sec_tag the devices used before the rotation (the one retired at the end)."""
    new_tag: int | None = None
    """The spare sec_tag the new CA was added to."""
    activated_at: datetime | None = None
    activated_by: str | None = None
    """What said the servers switched: `certificate.activated` or the endpoint watch."""
    retire_after: datetime | None = None
    unconfirmed: tuple[str, ...] = ()
    """Devices the trust.add targeted that never confirmed the new CA: the old CA is
    never retired on them."""

    @property
    def is_open(self) -> bool:
        """Whether the renewal watch still has something to do for this plan."""
        return self.state in OPEN_STATES

    @property
    def may_switch(self) -> bool:
        """Whether a switch of the servers is still news to this plan."""
        return (
            self.state in (PlanState.ADDING, PlanState.AWAITING_SWITCH)
            and self.activated_at is None
        )

    def serves(self, endpoints: Iterable[str]) -> bool:
        """Whether the plan is for any of `endpoints`."""
        return not set(self.endpoints).isdisjoint(endpoints)

    def chain_valid_at(self, now: datetime) -> bool:
        """Whether the new chain is valid at `now` (a rollout of it may start)."""
        valid_from = self.chain.not_yet_valid_until
        return valid_from is None or now >= valid_from

    def retire_due(self, now: datetime) -> bool:
        """Whether the soak after the switch has passed."""
        return self.retire_after is not None and now >= self.retire_after

    def summary(self) -> PlanSummary:
        """The plan without its device lists."""
        return PlanSummary(
            id=self.id,
            event=self.event,
            created_at=self.created_at,
            endpoints=self.endpoints,
            anchor_subject=self.chain.anchor_subject,
            state=self.state,
            reason=self.reason,
            counts=dict(self.impact.counts),
            truncated=self.impact.truncated,
            add_rollout=self.add_rollout,
            retire_rollout=self.retire_rollout,
            unconfirmed=len(self.unconfirmed),
        )

    # -- transitions: each returns a new plan --------------------------------------------

    def moved_to(self, state: PlanState, *, reason: str | None = None) -> RenewalPlan:
        """This plan in `state`, with `reason` if given (else the reason it had).

        Raises:
            PlanTransitionError: `state` cannot follow the plan's state.
        """
        if state not in _MOVES.get(self.state, frozenset()):
            raise PlanTransitionError(f"plan {self.id} cannot go from {self.state} to {state}")
        return replace(self, state=state, reason=reason if reason is not None else self.reason)

    def add_completed(self, *, unconfirmed: Sequence[str] = ()) -> RenewalPlan:
        """The trust.add is done: soak if the servers already switched, else wait for it.

        Devices it targeted that never confirmed the new CA (`unconfirmed`, a rollout
        `completed_with_timeouts`) are kept out of the retire, and the reason says so.
        """
        switched = self.activated_at is not None
        plan = self
        if unconfirmed:
            plan = replace(
                self,
                unconfirmed=tuple(sorted(unconfirmed)),
                reason=f"{len(unconfirmed)} devices did not confirm the new CA: "
                "the old CA is not retired on them",
            )
        return plan.moved_to(PlanState.SOAKING if switched else PlanState.AWAITING_SWITCH)

    def switched(self, *, now: datetime, cause: str, soak: timedelta) -> RenewalPlan:
        """The servers serve the new chain since `now`; the old CA may go after `soak`.

        A plan awaiting the switch starts its soak; one still adding keeps adding.
        """
        plan = replace(self, activated_at=now, activated_by=cause, retire_after=now + soak)
        if self.state is PlanState.AWAITING_SWITCH:
            return plan.moved_to(PlanState.SOAKING)
        return plan

    def retiring(self, rollout_id: str) -> RenewalPlan:
        """The trust.retire rollout of the old CA is planned."""
        return replace(self.moved_to(PlanState.RETIRING), retire_rollout=rollout_id)

    def waiting(self, reason: str) -> RenewalPlan:
        """The same state, with why the plan cannot move on yet."""
        return replace(self, reason=reason)

    # -- JSON -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON document stored and shown for this plan."""
        document: dict[str, Any] = {
            "id": self.id,
            "event": self.event,
            "created_at": self.created_at.isoformat(),
            "endpoints": list(self.endpoints),
            "staging_endpoint": self.staging_endpoint,
            "cutover_at": _time(self.cutover_at),
            "chain": self.chain.to_json(),
            "anchor_pem": self.anchor_pem,
            "impact": self.impact.to_json(),
            "add_rollout": self.add_rollout,
            "retire_rollout": self.retire_rollout,
            "state": self.state.value,
        }
        optional = {
            "reason": self.reason,
            "old_tag": self.old_tag,
            "new_tag": self.new_tag,
            "activated_at": _time(self.activated_at),
            "activated_by": self.activated_by,
            "retire_after": _time(self.retire_after),
            "unconfirmed": list(self.unconfirmed) or None,
        }
        document.update((name, value) for name, value in optional.items() if value is not None)
        return document

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RenewalPlan:
        """The plan `to_json` wrote (and every plan stored before this class existed)."""
        return cls(
            id=data["id"],
            event=data["event"],
            created_at=datetime.fromisoformat(data["created_at"]),
            endpoints=tuple(data["endpoints"]),
            staging_endpoint=data.get("staging_endpoint"),
            cutover_at=_parse_time(data.get("cutover_at")),
            chain=ChainSummary.from_json(data["chain"]),
            anchor_pem=data["anchor_pem"],
            impact=PlanImpact.from_json(data["impact"]),
            state=PlanState(data["state"]),
            add_rollout=data.get("add_rollout"),
            retire_rollout=data.get("retire_rollout"),
            reason=data.get("reason"),
            old_tag=data.get("old_tag"),
            new_tag=data.get("new_tag"),
            activated_at=_parse_time(data.get("activated_at")),
            activated_by=data.get("activated_by"),
            retire_after=_parse_time(data.get("retire_after")),
            unconfirmed=tuple(data.get("unconfirmed", ())),
        )
