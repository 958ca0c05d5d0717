"""What a device checks of a verified bundle against its own state, and how it names a refused one.

The signature, addressing, freshness and payload rules are `open_bundle`'s
(docs/protocol.md §4); these are the checks only the device's state can decide (check
13): that the active list an operation leaves is safe (`unsafe_active`), and that a
rollback undoes the device's one undo record (`nothing_to_undo`, `superseded`). A
rejection names the bundle's rollout and seq only if its signature verified: a
stranger's bundle must not be able to speak for a rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Final

import cbor2

from orchestrator.protocol import CredentialType
from orchestrator.protocol.bundle import (
    MAX_BUNDLE_BYTES,
    UINT64_MAX,
    Bundle,
    BundleRejectedError,
    Reason,
)
from orchestrator.protocol.limits import SIGNERS_MAX
from simulator.flash import UndoRecord

__all__ = ["UNVERIFIED", "check_operation", "rejection_ids"]

UNVERIFIED: Final = frozenset(
    {Reason.BAD_ENVELOPE, Reason.UNSUPPORTED_ALGORITHM, Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE}
)
"""Refusals before the signature verified (checks 2 to 5 of docs/protocol.md §4; check 1,
`too_large`, too when the whole bundle is over its limit)."""


def check_operation(
    bundle: Bundle,
    *,
    active_tags: Sequence[int],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    """Raise `BundleRejectedError` when the operation makes no sense on this device (check 13).

    Every refusal here comes before `received`: the seq is not consumed and nothing
    is written.

    Args:
        undo: the device's undo record (an expired one already dropped).
        holds_ca: whether a sec_tag holds a CA chain item that no decided work deletes.
        signers: the key ids the device trusts now.
    """
    check = _CHECKS.get(bundle.op)
    if check is not None:
        check(bundle, tuple(active_tags), undo, holds_ca, signers)


def _unsafe(detail: str) -> BundleRejectedError:
    return BundleRejectedError(Reason.UNSAFE_ACTIVE, detail)


def _stage(
    bundle: Bundle,
    active: tuple[int, ...],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    if bundle.tag in active:
        raise BundleRejectedError(
            Reason.TAG_IN_USE, f"sec_tag {bundle.tag} is active; a stage never overwrites it"
        )
    brings_ca = any(c.type is CredentialType.CA_CHAIN for c in bundle.credentials)
    # A stage replaces the undo record: an open stage's tag is wiped with it.
    wiped = undo.tag if undo is not None and undo.kind == "stage" else None
    for tag in bundle.active:
        staged = tag == bundle.tag and brings_ca
        if not staged and (tag in (wiped, bundle.tag) or not holds_ca(tag)):
            raise _unsafe(
                f"active list {list(bundle.active)} would name sec_tag {tag} without a CA"
            )


def _commit(
    bundle: Bundle,
    active: tuple[int, ...],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    if (
        undo is None
        or undo.kind != "stage"
        or not undo.health_ok
        or undo.tag != bundle.tag
        or undo.stage is None
    ):
        raise BundleRejectedError(
            Reason.NOTHING_STAGED, f"no healthy stage of sec_tag {bundle.tag} to commit"
        )
    after = bundle.active or undo.stage.active
    missing = [tag for tag in after if not holds_ca(tag)]
    if missing:
        raise _unsafe(f"active list {list(after)} names {missing}, which hold no CA chain")


def _rollback(
    bundle: Bundle,
    active: tuple[int, ...],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    if undo is None:
        raise BundleRejectedError(Reason.NOTHING_TO_UNDO, "no change to undo")
    if undo.rid != bundle.rollout_id:
        owner = f"rollout {undo.rid!r}" if undo.rid else "a manual send"
        raise BundleRejectedError(
            Reason.SUPERSEDED, f"the latest change (sec_tag {undo.tag}) belongs to {owner}"
        )
    missing = [tag for tag in undo.previous if not holds_ca(tag)]
    if undo.kind == "commit" and (missing or not undo.previous):
        raise _unsafe(f"the previous list {list(undo.previous)} lost its CA in {missing}")


def _retire(
    bundle: Bundle,
    active: tuple[int, ...],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    # A retire drops the undo record: an open stage's tag is wiped with it.
    wiped = {*bundle.tags, *([undo.tag] if undo is not None and undo.kind == "stage" else [])}
    bad = [tag for tag in bundle.active if tag in wiped or not holds_ca(tag)]
    if bad:
        raise _unsafe(
            f"active list {list(bundle.active)} would name {bad} without a CA "
            f"after retiring {list(bundle.tags)}"
        )


def _trust_signer(
    bundle: Bundle,
    active: tuple[int, ...],
    undo: UndoRecord | None,
    holds_ca: Callable[[int], bool],
    signers: Collection[bytes],
) -> None:
    signer = bundle.signer
    assert signer is not None  # noqa: S101 -- required by the payload rules
    try:
        signer.public_key()
    except ValueError:
        raise BundleRejectedError(Reason.BAD_PAYLOAD, "signer is not a P-256 point") from None
    remaining = set(signers) | {signer.kid}
    if bundle.retire_kid is not None:
        remaining.discard(bundle.retire_kid)
    if not remaining:
        raise BundleRejectedError(Reason.INVALID_OPERATION, "would trust no signer")
    if len(remaining) > SIGNERS_MAX:
        raise BundleRejectedError(
            Reason.INVALID_OPERATION,
            f"would trust {len(remaining)} signers; a device holds at most {SIGNERS_MAX}",
        )


_Check = Callable[
    [Bundle, tuple[int, ...], UndoRecord | None, Callable[[int], bool], Collection[bytes]], None
]
_CHECKS: Final[dict[str, _Check]] = {
    "stage": _stage,
    "commit": _commit,
    "rollback": _rollback,
    "retire": _retire,
    "trust-signer": _trust_signer,
}


def _verified(payload: bytes, reason: Reason) -> bool:
    """Whether a bundle refused for `reason` had passed signature verification."""
    if reason is Reason.TOO_LARGE:
        return len(payload) <= MAX_BUNDLE_BYTES  # check 12 (a CA chain item), not check 1
    return reason not in UNVERIFIED


def rejection_ids(payload: bytes, reason: Reason) -> tuple[int, str, str | None]:
    """seq, rollout id and op a rejection for `reason` names, only to correlate it.

    A bundle refused before its signature verified could be anyone's: its rejection
    names no rollout (seq 0, rollout id '', no op). After verification the payload is
    the signer's, read best effort (a bad payload may not say).
    """
    if not _verified(payload, reason):
        return 0, "", None
    try:
        envelope = cbor2.loads(payload)
        if isinstance(envelope, cbor2.CBORTag):
            envelope = envelope.value
        document = cbor2.loads(envelope[2])
        seq, rid, op = document.get("seq", 0), document.get("rid", ""), document.get("op")
        if (
            isinstance(seq, int)
            and not isinstance(seq, bool)  # CBOR true decodes to a bool, an int subclass
            and 0 <= seq <= UINT64_MAX
            and isinstance(rid, str)
            and len(rid) <= 128
        ):
            return seq, rid, op if isinstance(op, str) and len(op) <= 32 else None
    except Exception:  # noqa: S110 -- best effort on a payload already refused
        pass
    return 0, "", None
