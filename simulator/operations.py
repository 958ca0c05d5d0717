"""What each operation decides once its bundle passed every check (docs/protocol.md §5).

Each function turns a bundle and the flash record into a `Decision`: the flash fields
to change, and the key store work (`Intent`) with the reports that follow it, all
persisted in one write before any of the work is done. The undo record rules live
here: a stage replaces the record, a commit turns it into a commit record, a rollback
undoes it, a retire drops it, a trust-signer leaves it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from orchestrator.protocol.bundle import Bundle, Reason
from orchestrator.protocol.report import Phase, ReportMessage
from simulator.flash import FlashRecord, Intent, Pending, UndoRecord

__all__ = ["OPERATIONS", "Decision", "MakeReport"]


class MakeReport(Protocol):
    """Words a report about a bundle, with the active list it leaves."""

    def __call__(
        self,
        bundle: Bundle | None,
        phase: Phase,
        reason: Reason = ...,
        detail: str = ...,
        *,
        active: tuple[int, ...] | None = ...,
    ) -> ReportMessage:
        """The report (kept in the device's history)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One flash write: `changes`, and `work` to do offline (or its reports, at once)."""

    what: str
    work: Intent
    changes: Mapping[str, object] = field(default_factory=dict)


def _stage(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    tag = bundle.tag
    assert tag is not None  # noqa: S101 -- required by the payload rules
    undo = record.undo
    earlier = (undo.tag,) if undo is not None and undo.kind == "stage" else ()
    stage = UndoRecord(
        rid=bundle.rollout_id, kind="stage", tag=tag, previous=record.active, stage=bundle
    )
    # Leftovers in the spare tag are never live; an earlier stage's tag goes with it.
    work = Intent(wipe=(*earlier, tag), write_tag=tag, items=bundle.credentials)
    return Decision("stage", work, {"last_seq": bundle.seq, "undo": stage})


def _commit(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation
    assert undo.stage is not None  # noqa: S101 -- a stage record's
    previous = record.active
    after = tuple(bundle.active or undo.stage.active)
    commit = UndoRecord(
        rid=bundle.rollout_id,
        kind="commit",
        tag=undo.tag,
        previous=previous,
        undo_by=bundle.undo_by,
    )
    changes: dict[str, object] = {"last_seq": bundle.seq, "active": after, "undo": commit}
    if tls:
        # The report waits for the reconnect, which publishes the state before it.
        wipe = (undo.tag,) if undo.tag not in previous else ()
        changes["pending"] = Pending(previous=previous, bundle=bundle, otherwise_wipe=wipe)
        return Decision("commit, to be proven", Intent(), changes)
    done = report(bundle, Phase.COMMITTED, active=after)
    return Decision("commit", Intent(reports=(done,)), changes)


def _rollback(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation
    if undo.kind == "stage":
        done = report(bundle, Phase.ROLLED_BACK, detail="staged item discarded")
        work = Intent(wipe=(undo.tag,), reports=(done,))
        return Decision("rollback of a stage", work, {"last_seq": bundle.seq, "undo": None})
    previous = undo.previous
    done = report(
        bundle, Phase.ROLLED_BACK, detail=f"active tags {list(previous)}", active=previous
    )
    work = Intent(wipe=(undo.tag,) if undo.tag not in previous else (), reports=(done,))
    changes = {"last_seq": bundle.seq, "active": previous, "undo": None}
    return Decision("rollback of a commit", work, changes)


def _retire(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    undo = record.undo
    staged = (undo.tag,) if undo is not None and undo.kind == "stage" else ()
    wipe = tuple(dict.fromkeys((*bundle.tags, *staged)))
    changes: dict[str, object] = {"last_seq": bundle.seq, "active": bundle.active, "undo": None}
    if tls:
        changes["pending"] = Pending(
            previous=record.active, bundle=bundle, then_wipe=wipe, otherwise_wipe=staged
        )
        return Decision("retire, to be proven", Intent(), changes)
    done = report(
        bundle, Phase.RETIRED, detail=f"deleted {list(bundle.tags)}", active=bundle.active
    )
    return Decision("retire", Intent(wipe=wipe, reports=(done,)), changes)


def _trust_signer(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    signer = bundle.signer
    assert signer is not None  # noqa: S101 -- checked in check_operation
    signers = dict(record.signers)
    signers[signer.kid] = signer.public_key()
    if bundle.retire_kid is not None:
        signers.pop(bundle.retire_kid, None)
    done = report(bundle, Phase.COMMITTED, detail=f"trusts signer {signer.kid.hex()}")
    changes = {"last_seq": bundle.seq, "signers": tuple(signers.items())}
    return Decision("trust-signer", Intent(reports=(done,)), changes)


Operation = Callable[[Bundle, FlashRecord, bool, MakeReport], Decision]
OPERATIONS: Final[Mapping[str, Operation]] = {
    "stage": _stage,
    "commit": _commit,
    "rollback": _rollback,
    "retire": _retire,
    "trust-signer": _trust_signer,
}
"""op -> (bundle, flash record, TLS broker?, report maker) -> decision."""
