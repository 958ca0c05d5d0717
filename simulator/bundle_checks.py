"""What a device checks of a verified bundle against its own state, and how it names a refused one.

The signature, addressing, freshness and payload rules are `open_bundle`'s
(docs/protocol.md §4); these are the checks only the device's state can decide. A
rejection names the bundle's rollout and seq only if its signature verified: a
stranger's bundle must not be able to speak for a rollout.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
from simulator.modem import Modem

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
    healthy_stage: Bundle | None,
    modem: Modem,
    signers: Collection[bytes],
) -> None:
    """Raise `BundleRejectedError` when the operation makes no sense on this device.

    Args:
        healthy_stage: the stage bundle whose staged trust passed its probe, if any.
        signers: the key ids the device trusts now.
    """
    if bundle.op == "stage" and bundle.tag in active_tags:
        raise BundleRejectedError(
            Reason.TAG_IN_USE, f"sec_tag {bundle.tag} is active; a stage never overwrites it"
        )
    if bundle.op == "commit" and (healthy_stage is None or healthy_stage.tag != bundle.tag):
        raise BundleRejectedError(
            Reason.NOTHING_STAGED, f"no healthy stage of sec_tag {bundle.tag} to commit"
        )
    if bundle.op == "retire":
        missing = [t for t in bundle.active if not modem.exists(t, CredentialType.CA_CHAIN)]
        if missing or set(bundle.tags) & set(bundle.active):
            raise BundleRejectedError(
                Reason.INVALID_OPERATION,
                f"active list {list(bundle.active)} must hold CA chains and exclude "
                f"the retired tags {list(bundle.tags)}",
            )
    if bundle.op == "trust-signer":
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
