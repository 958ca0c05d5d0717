"""Revoking delegations: the fleet's revocation, and the root-signed revoke every device gets.

`certfleet keys revoke` records the new revocation (`DelegationRegistry`), then sends each
device a `revoke` bundle signed by the root key itself (a device refuses revoke under a
delegation) that carries the whole list, since a device replaces its list with the one it
gets (docs/protocol.md §5). Devices keep at most 8 revoked key ids, so a key id no longer
needed leaves the list: its delegation has expired, or the revocation by time covers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import get_logger
from orchestrator.ports import BundlePublisher, BundleSigner, InventoryStore, Metrics, SequenceStore
from orchestrator.ports.stores import DelegationRegistry, IssuedDelegation
from orchestrator.protocol.delegation import REVOKED_KIDS_MAX, DelegationError, Revocation
from orchestrator.services.bundles import bundle_template, revoke_body

__all__ = [
    "REVOKE_BATCH",
    "ROOT_SIGNATURES_METRIC",
    "RevocationDeps",
    "RevocationSent",
    "next_revocation",
    "record_revocation",
    "send_revocation",
]

log = get_logger(__name__)

REVOKE_BATCH: Final = 500
"""Devices signed for and published per round (one sequence call, one pipelined publish)."""
ROOT_SIGNATURES_METRIC: Final = "certfleet_root_signatures_total"
"""Signatures made with the root key, by purpose: `delegation` or `bundle` (a root op such as
a revoke, or development with CERTFLEET_DELEGATION_HOURS=0)."""


def next_revocation(
    current: Revocation,
    *,
    kids: Iterable[bytes],
    before: int,
    active: Sequence[IssuedDelegation],
) -> Revocation:
    """The fleet's revocation after revoking `kids` and everything issued before `before`.

    A key id from `current` is dropped when no longer needed: its delegation has expired
    (it is not in `active`, which holds every delegation not expired yet) or was issued
    before the new `before`. The key ids named now are always kept.

    Raises:
        DelegationError: more than 8 key ids would still be needed.
    """
    named = frozenset(kids)
    cut = max(current.before, before)
    issued_at = {issued.delegation.kid: issued.delegation.issued_at for issued in active}
    still_needed = {kid for kid in current.kids if kid in issued_at and issued_at[kid] >= cut}
    revoked = named | still_needed
    if len(revoked) > REVOKED_KIDS_MAX:
        raise DelegationError(
            f"{len(revoked)} delegations would be revoked by key id, and a device keeps "
            f"{REVOKED_KIDS_MAX}; revoke by time instead (--before a time after the oldest "
            "one's issue): it covers every delegation issued earlier"
        )
    return Revocation(revoked, cut)


def record_revocation(
    registry: DelegationRegistry, *, kids: Sequence[bytes], before: int, now: datetime
) -> Revocation:
    """Add `kids` and `before` to the fleet's revocation, recorded; the result."""
    revocation = next_revocation(
        registry.revocation(), kids=kids, before=before, active=registry.active(now)
    )
    registry.set_revocation(revocation)
    log.info(
        "revocation_recorded",
        kids=sorted(k.hex() for k in revocation.kids),
        before=revocation.before,
        named=sorted(k.hex() for k in kids),
    )
    return revocation


@dataclass(frozen=True, slots=True)
class RevocationDeps:
    """What sending a revocation uses: the ROOT signer, never a delegated one."""

    root: BundleSigner
    inventory: InventoryStore
    sequences: SequenceStore
    publisher: BundlePublisher
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class RevocationSent:
    """How many devices the broker took the revoke for, how many not, and why not."""

    sent: int
    not_sent: int
    error: str = ""


def send_revocation(
    deps: RevocationDeps,
    revocation: Revocation,
    device_ids: Sequence[str],
    *,
    now: datetime,
    ttl_seconds: int,
) -> RevocationSent:
    """Sign with the root and publish a revoke of `revocation` to each device, in batches;
    `sent` counts those the broker acknowledged, and the first failure stops it (the rest
    are counted as not sent)."""
    body = revoke_body(sorted(revocation.kids), revocation.before)
    acknowledged = 0  # devices whose revoke the broker took, before a failure too

    def taken(devices: list[str]) -> None:
        nonlocal acknowledged
        acknowledged += len(devices)

    for start in range(0, len(device_ids), REVOKE_BATCH):
        batch = list(device_ids[start : start + REVOKE_BATCH])
        try:
            versions = deps.inventory.protocol_versions(batch)
            seqs = deps.sequences.next_sequences(batch)
            by_version: dict[int, list[str]] = {}
            for device_id in batch:
                by_version.setdefault(versions.get(device_id, 1), []).append(device_id)
            for version, devices in sorted(by_version.items()):
                template = bundle_template(
                    signer=deps.root,
                    rollout_id="",
                    body=body,
                    now=now,
                    ttl_seconds=ttl_seconds,
                    version=version,
                    device_id=devices[0],
                )
                signed = [(d, template.issue(d, seqs[d])) for d in devices]
                deps.metrics.incr(ROOT_SIGNATURES_METRIC, {"purpose": "bundle"}, len(signed))
                deps.publisher.publish_bundles(signed, expiry_seconds=ttl_seconds, on_acked=taken)
        except CertfleetError as exc:
            result = RevocationSent(acknowledged, len(device_ids) - acknowledged, str(exc))
            break
    else:
        result = RevocationSent(acknowledged, len(device_ids) - acknowledged)
    log.info(
        "revocation_sent",
        kids=sorted(k.hex() for k in revocation.kids),
        before=revocation.before,
        devices=len(device_ids),
        sent=result.sent,
        not_sent=result.not_sent,
    )
    return result
