"""What each operation decides once its bundle passed every check (docs/protocol.md §5).

Each function turns a bundle and the flash record into a `Decision`: the flash fields
to change, and the key store work (`Intent`) with the reports that follow it, all
persisted in one write before any of the work is done. The undo record rules live
here: a stage or keygen replaces the record, an identity stage continues its keygen's,
a commit turns it into a commit record, a rollback undoes it, a retire drops it, a
trust-signer or a revoke leaves it alone.
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
        csr: str | None = ...,
    ) -> ReportMessage:
        """The report (kept in the device's history)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One flash write: `changes`, and `work` to do offline (or its reports, at once)."""

    what: str
    work: Intent
    changes: Mapping[str, object] = field(default_factory=dict)


def _earlier(record: FlashRecord) -> tuple[int, ...]:
    """The tag of an open stage or keygen, which a new change replaces (and deletes)."""
    undo = record.undo
    return (undo.tag,) if undo is not None and undo.open else ()


def _keygen(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    tag = bundle.tag
    assert tag is not None  # noqa: S101 -- required by the payload rules
    keygen = UndoRecord(
        rid=bundle.rollout_id,
        kind="keygen",
        tag=tag,
        previous=record.active,
        stage=bundle,
        identity=True,
        previous_identity=record.identity,
    )
    # %KEYGEN needs an empty slot: whatever the spare tag holds goes first.
    work = Intent(wipe=tuple(dict.fromkeys((*_earlier(record), tag))), keygen=bundle)
    return Decision("keygen", work, {"last_seq": bundle.seq, "undo": keygen})


def _identity_stage(bundle: Bundle, record: FlashRecord) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation: the keygen record of this tag
    stage = UndoRecord(
        rid=bundle.rollout_id,
        kind="stage",
        tag=undo.tag,
        previous=record.active,
        stage=bundle,
        identity=True,
        previous_identity=undo.previous_identity,
    )
    # The key stays: only the certificate is written next to it.
    work = Intent(write_tag=undo.tag, items=bundle.credentials)
    return Decision("identity stage", work, {"last_seq": bundle.seq, "undo": stage})


def _stage(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    if bundle.is_identity_stage:
        return _identity_stage(bundle, record)
    tag = bundle.tag
    assert tag is not None  # noqa: S101 -- required by the payload rules
    earlier = _earlier(record)
    stage = UndoRecord(
        rid=bundle.rollout_id, kind="stage", tag=tag, previous=record.active, stage=bundle
    )
    # Leftovers in the spare tag are never live; an earlier stage's tag goes with it.
    work = Intent(wipe=(*earlier, tag), write_tag=tag, items=bundle.credentials)
    return Decision("stage", work, {"last_seq": bundle.seq, "undo": stage})


def _identity_commit(
    bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport
) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation
    commit = UndoRecord(
        rid=bundle.rollout_id,
        kind="commit",
        tag=undo.tag,
        previous=record.active,
        undo_by=bundle.undo_by,
        identity=True,
        previous_identity=record.identity,
    )
    changes: dict[str, object] = {"last_seq": bundle.seq, "identity": undo.tag, "undo": commit}
    if tls:
        # Proven by reconnecting with it; refused, the old identity comes back.
        changes["pending"] = Pending(
            previous=record.active,
            bundle=bundle,
            otherwise_wipe=(undo.tag,),
            previous_identity=record.identity,
        )
        return Decision("identity commit, to be proven", Intent(), changes)
    done = report(bundle, Phase.COMMITTED, detail=f"identity sec_tag {undo.tag}")
    return Decision("identity commit", Intent(reports=(done,)), changes)


def _commit(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation
    assert undo.stage is not None  # noqa: S101 -- a stage record's
    if undo.identity:
        return _identity_commit(bundle, record, tls, report)
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
        changes["pending"] = Pending(
            previous=previous,
            bundle=bundle,
            otherwise_wipe=wipe,
            previous_identity=record.identity,
        )
        return Decision("commit, to be proven", Intent(), changes)
    done = report(bundle, Phase.COMMITTED, active=after)
    return Decision("commit", Intent(reports=(done,)), changes)


def _rollback(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    undo = record.undo
    assert undo is not None  # noqa: S101 -- check_operation
    if undo.open:
        done = report(bundle, Phase.ROLLED_BACK, detail="staged item discarded")
        work = Intent(wipe=(undo.tag,), reports=(done,))
        return Decision("rollback of a stage", work, {"last_seq": bundle.seq, "undo": None})
    if undo.identity:
        # check_operation saw the previous identity's certificate and key still there.
        detail = f"identity sec_tag {undo.previous_identity}"
        done = report(bundle, Phase.ROLLED_BACK, detail=detail)
        work = Intent(wipe=(undo.tag,), reports=(done,))
        restored = {"last_seq": bundle.seq, "identity": undo.previous_identity, "undo": None}
        return Decision("rollback of an identity commit", work, restored)
    previous = undo.previous
    done = report(
        bundle, Phase.ROLLED_BACK, detail=f"active tags {list(previous)}", active=previous
    )
    work = Intent(wipe=(undo.tag,) if undo.tag not in previous else (), reports=(done,))
    changes: dict[str, object] = {"last_seq": bundle.seq, "active": previous, "undo": None}
    return Decision("rollback of a commit", work, changes)


def _retire(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    staged = _earlier(record)
    wipe = tuple(dict.fromkeys((*bundle.tags, *staged)))
    changes: dict[str, object] = {"last_seq": bundle.seq, "active": bundle.active, "undo": None}
    if tls:
        changes["pending"] = Pending(
            previous=record.active,
            bundle=bundle,
            then_wipe=wipe,
            otherwise_wipe=staged,
            previous_identity=record.identity,
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


def _revoke(bundle: Bundle, record: FlashRecord, tls: bool, report: MakeReport) -> Decision:
    """The revoked key ids become the bundle's whole list; the revocation time only rises."""
    before = bundle.revoke_before
    assert before is not None  # noqa: S101 -- required by the payload rules
    revocation = record.revocation.applied(bundle.revoke_kids, before)
    kids = ", ".join(kid.hex() for kid in sorted(revocation.kids)) or "none"
    detail = f"revoked key ids {kids}; issued before {revocation.before}"
    done = report(bundle, Phase.COMMITTED, detail=detail)
    changes = {"last_seq": bundle.seq, "revocation": revocation}
    return Decision("revoke", Intent(reports=(done,)), changes)


Operation = Callable[[Bundle, FlashRecord, bool, MakeReport], Decision]
OPERATIONS: Final[Mapping[str, Operation]] = {
    "stage": _stage,
    "commit": _commit,
    "rollback": _rollback,
    "retire": _retire,
    "trust-signer": _trust_signer,
    "keygen": _keygen,
    "revoke": _revoke,
}
"""op -> (bundle, flash record, TLS broker?, report maker) -> decision."""
