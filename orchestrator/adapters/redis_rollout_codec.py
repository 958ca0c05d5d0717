"""How a rollout's meta hash in Redis reads as the `Rollout` aggregate and back.

The hash (`certfleet:ro:{id}:meta`) holds `id`, `kind`, `state`, `created_at`,
`seed`, `spec` (JSON), `sizes` (JSON), `current`, `awaiting_approval` ("1"/"0"),
`abort_reason`, `rollback_deadline`, `unconfirmed` (JSON), `finished_at`, and per
wave `wave:{i}:state`, `wave:{i}:started_at`, `wave:{i}:bake_until` and
`wave:{i}:dispatched_until`. Only this module spells those field names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from orchestrator.domain.rollout import RolloutSpec
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change, Expect, Wave, WaveChange
from orchestrator.domain.rollout_states import RolloutState, WaveState

__all__ = ["decode_rollout", "encode_change", "encode_expect", "encode_rollout"]

_EPOCH = datetime.fromtimestamp(0, UTC)


def _wave(index: int, name: str) -> str:
    return f"wave:{index}:{name}"


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None


def decode_rollout(meta: Mapping[str, str]) -> Rollout:
    """The aggregate a stored meta hash describes."""
    sizes: list[int] = json.loads(meta["sizes"])
    unconfirmed = meta.get("unconfirmed")
    return Rollout(
        id=meta["id"],
        spec=RolloutSpec.from_json(json.loads(meta["spec"])),
        state=RolloutState(meta["state"]),
        created_at=_time(meta.get("created_at")) or _EPOCH,
        seed=meta.get("seed", ""),
        waves=tuple(
            Wave(
                index=i,
                size=size,
                state=WaveState(meta.get(_wave(i, "state"), WaveState.PENDING)),
                started_at=_time(meta.get(_wave(i, "started_at"))),
                bake_until=_float(meta.get(_wave(i, "bake_until"))),
                dispatched_until=_float(meta.get(_wave(i, "dispatched_until"))),
            )
            for i, size in enumerate(sizes)
        ),
        current=int(meta.get("current", "0")),
        awaiting_approval=meta.get("awaiting_approval") == "1",
        abort_reason=meta.get("abort_reason") or None,
        rollback_deadline=_float(meta.get("rollback_deadline")),
        unconfirmed=tuple(json.loads(unconfirmed)) if unconfirmed else None,
        finished_at=_time(meta.get("finished_at")),
    )


def encode_rollout(rollout: Rollout) -> dict[str, str]:
    """The whole meta hash of `rollout` (what `decode_rollout` reads back to an equal one)."""
    return {
        "id": rollout.id,
        "kind": rollout.spec.kind,
        "created_at": rollout.created_at.isoformat(),
        "seed": rollout.seed,
        "spec": json.dumps(rollout.spec.to_json()),
        "sizes": json.dumps(rollout.sizes),
        **encode_change(
            Change(
                state=rollout.state,
                current=rollout.current,
                awaiting_approval=rollout.awaiting_approval or None,
                abort_reason=rollout.abort_reason,
                rollback_deadline=rollout.rollback_deadline,
                unconfirmed=rollout.unconfirmed,
                finished_at=rollout.finished_at,
                waves={
                    w.index: WaveChange(
                        state=w.state,
                        started_at=w.started_at,
                        bake_until=w.bake_until,
                        dispatched_until=w.dispatched_until,
                    )
                    for w in rollout.waves
                },
            )
        ),
    }


def encode_change(change: Change) -> dict[str, str]:
    """The meta fields a change writes."""
    fields: dict[str, str] = {}
    if change.state is not None:
        fields["state"] = change.state.value
    if change.current is not None:
        fields["current"] = str(change.current)
    if change.awaiting_approval is not None:
        fields["awaiting_approval"] = "1" if change.awaiting_approval else "0"
    if change.abort_reason is not None:
        fields["abort_reason"] = change.abort_reason
    if change.rollback_deadline is not None:
        fields["rollback_deadline"] = repr(change.rollback_deadline)
    if change.unconfirmed is not None:
        fields["unconfirmed"] = json.dumps(list(change.unconfirmed))
    if change.finished_at is not None:
        fields["finished_at"] = change.finished_at.isoformat()
    for index, wave in change.waves.items():
        if wave.state is not None:
            fields[_wave(index, "state")] = wave.state.value
        if wave.started_at is not None:
            fields[_wave(index, "started_at")] = wave.started_at.isoformat()
        if wave.bake_until is not None:
            fields[_wave(index, "bake_until")] = repr(wave.bake_until)
        if wave.dispatched_until is not None:
            fields[_wave(index, "dispatched_until")] = repr(wave.dispatched_until)
    return fields


def encode_expect(expect: Expect) -> list[tuple[str, frozenset[str | None]]]:
    """(field, the stored values that satisfy it) for each part of the guard."""
    checks: list[tuple[str, frozenset[str | None]]] = []
    if expect.state is not None:
        checks.append(("state", frozenset({expect.state.value})))
    if expect.wave is not None:
        index, state = expect.wave
        checks.append((_wave(index, "state"), frozenset({state.value})))
    if expect.awaiting_approval is not None:
        accepted: frozenset[str | None] = (
            frozenset({"1"}) if expect.awaiting_approval else frozenset({"0", None})
        )
        checks.append(("awaiting_approval", accepted))
    if expect.dispatched_until is not None:
        index, due = expect.dispatched_until
        checks.append((_wave(index, "dispatched_until"), frozenset({repr(due)})))
    return checks
