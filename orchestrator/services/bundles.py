"""Issue and send signed bundles: sequence, payload, COSE_Sign1 envelope, publish."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from orchestrator.domain.credentials import CredentialType, ca_chain_item
from orchestrator.domain.errors import BundleTooLargeError
from orchestrator.logs import get_logger
from orchestrator.ports import BundlePublisher, BundleSigner, SequenceStore
from orchestrator.protocol.bundle import (
    Bundle,
    Credential,
    Operation,
    Probe,
    SignerKey,
    encode_payload,
)
from orchestrator.protocol.cose import sign1
from orchestrator.protocol.limits import MAX_BUNDLE_BYTES, PROTOCOL_VERSION

__all__ = [
    "UNDO_WINDOW_SECONDS",
    "BundleBody",
    "IssuedBundle",
    "issue_bundle",
    "send_bundle",
    "stage_body",
]

log = get_logger(__name__)

UNDO_WINDOW_SECONDS: Final = 7 * 24 * 3600
"""The contract's default undo window: a v2 commit's `undo_by` is its time plus this
(`CERTFLEET_UNDO_WINDOW_SECONDS` sets it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleBody:
    """The operation-specific part of a bundle (see `Bundle`)."""

    op: Operation
    tag: int | None = None
    tags: tuple[int, ...] = ()
    credentials: tuple[Credential, ...] = ()
    probe: Probe | None = None
    active: tuple[int, ...] = ()
    commit_by: int | None = None
    signer: SignerKey | None = None
    retire_kid: bytes | None = None
    undo_by: int | None = None
    """A commit's end of undo (epoch seconds); a v2 key, left out of a v1 bundle."""


@dataclass(frozen=True, slots=True)
class IssuedBundle:
    """A signed bundle and what it says."""

    bundle: Bundle
    data: bytes


def stage_body(
    *,
    ca_pems: Sequence[str],
    tag: int,
    probe_host: str,
    probe_port: int,
    probe_tags: Sequence[int],
    active_after: Sequence[int],
    commit_by: datetime,
) -> BundleBody:
    """Stage the CAs in `tag`, probe with `probe_tags`, and make `active_after` live on commit.

    The CAs go as one CA chain item (`ca_chain_item`): a modem holds one per sec_tag.

    Raises:
        CaChainTooLargeError: the item is over the modem's limit; nothing is signed.
    """
    return BundleBody(
        op="stage",
        tag=tag,
        credentials=(
            Credential(
                CredentialType.CA_CHAIN, ca_chain_item(ca_pems, what=f"the CAs for sec_tag {tag}")
            ),
        ),
        probe=Probe(host=probe_host, port=probe_port, tags=tuple(probe_tags)),
        active=tuple(active_after),
        commit_by=int(commit_by.timestamp()),
    )


def issue_bundle(
    *,
    signer: BundleSigner,
    sequences: SequenceStore,
    device_id: str,
    rollout_id: str,
    body: BundleBody,
    now: datetime,
    ttl_seconds: int,
    seq: int | None = None,
    version: int = PROTOCOL_VERSION,
) -> IssuedBundle:
    """Sign the bundle with `seq`, or the device's next sequence number if none is given.

    `version` is the device's protocol version: a v1 device gets a v1 bundle, without
    the v2-only keys (`undo_by`), which it would refuse (`unsupported_version`).
    """
    issued_at = int(now.timestamp())
    bundle = Bundle(
        device_id=device_id,
        rollout_id=rollout_id,
        seq=seq if seq is not None else sequences.next_sequence(device_id),
        op=body.op,
        issued_at=issued_at,
        expires_at=issued_at + ttl_seconds,
        tag=body.tag,
        tags=body.tags,
        credentials=body.credentials,
        probe=body.probe,
        active=body.active,
        commit_by=body.commit_by,
        signer=body.signer,
        retire_kid=body.retire_kid,
        undo_by=body.undo_by if version > 1 else None,
        version=version,
    )
    data = sign1(encode_payload(bundle), sign=signer.sign, kid=signer.key_id)
    if len(data) > MAX_BUNDLE_BYTES:
        # Unreachable with the bodies certfleet builds (protocol.md's budget, 4,770 bytes at
        # most); kept so a new kind of body can never send what every device refuses.
        raise BundleTooLargeError(
            f"the {bundle.op} bundle for {device_id} is {len(data)} bytes, over the "
            f"contract's {MAX_BUNDLE_BYTES}-byte limit; nothing was sent"
        )
    return IssuedBundle(bundle=bundle, data=data)


def send_bundle(publisher: BundlePublisher, issued: IssuedBundle, *, now: datetime) -> None:
    """Publish with a message expiry that ends when the bundle does."""
    bundle = issued.bundle
    expiry = max(1, bundle.expires_at - int(now.timestamp()))
    publisher.publish_bundle(bundle.device_id, issued.data, expiry_seconds=expiry)
    log.info(
        "bundle_sent",
        device_id=bundle.device_id,
        rollout_id=bundle.rollout_id,
        seq=bundle.seq,
        op=bundle.op,
        bytes=len(issued.data),
    )
