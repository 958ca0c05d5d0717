"""Issue and send signed bundles: sequence, payload, COSE_Sign1 envelope, publish.

The bodies of an identity rotation (docs/protocol.md §11), in the order a device gets them:
`keygen_body` (make a key in the spare identity tag, answer with the CSR),
`identity_stage_body` (the issued certificate into that tag, probed by a mutual-TLS
handshake), `identity_commit_body` (present it from now on), and after the soak
`identity_retire_body` (delete the old identity). On abort the rollback is the trust
kinds' `BundleBody(op="rollback", tag=spare)`: the device's undo record says what to undo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509

from orchestrator.domain.credentials import CredentialType, ca_chain_item
from orchestrator.domain.errors import BundleTooLargeError, InvalidCredentialError
from orchestrator.logs import get_logger
from orchestrator.ports import BundlePublisher, BundleSigner, SequenceStore
from orchestrator.protocol.bundle import (
    Bundle,
    Credential,
    Operation,
    PayloadTemplate,
    Probe,
    SignerKey,
    encode_payload,
)
from orchestrator.protocol.cose import sign1
from orchestrator.protocol.limits import (
    CERT_ITEM_MAX_BYTES,
    MAX_BUNDLE_BYTES,
    PROTOCOL_VERSION,
    TAG_LIST_MAX,
)

__all__ = [
    "UNDO_WINDOW_SECONDS",
    "BundleBody",
    "BundleTemplate",
    "IssuedBundle",
    "bundle_template",
    "identity_commit_body",
    "identity_retire_body",
    "identity_stage_body",
    "issue_bundle",
    "keygen_body",
    "revoke_body",
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
    subject: str | None = None
    """A keygen's CSR common name (certfleet sends the device id)."""
    revoke_kids: tuple[bytes, ...] = ()
    """A revoke's whole list of revoked delegated key ids (wire `kids`)."""
    revoke_before: int | None = None
    """A revoke's time: delegations issued before it are revoked, 0 for none (wire `before`)."""


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


def keygen_body(*, tag: int, subject: str, commit_by: datetime) -> BundleBody:
    """Make a P-256 key in the empty identity `tag` and report its CSR for `CN=subject`.

    `commit_by` bounds the whole exchange: without an identity stage by then, the
    device deletes the key and reports `fallback` (`commit_timeout`).
    """
    return BundleBody(op="keygen", tag=tag, subject=subject, commit_by=int(commit_by.timestamp()))


def identity_stage_body(
    *,
    cert_pem: str,
    tag: int,
    probe_host: str,
    probe_port: int,
    probe_tags: Sequence[int],
    active: Sequence[int],
    commit_by: datetime,
) -> BundleBody:
    """Write the certificate issued for the keygen's key into `tag`, and prove it.

    The probe presents `tag`'s certificate and key to `probe_host:probe_port` (the
    broker's mutual-TLS listener) and validates the server with `probe_tags` (the
    device's CA tags). `active` is the device's active list, unchanged: an identity
    is not a CA tag.

    Raises:
        InvalidCredentialError: `cert_pem` is not ASCII PEM certificates, or is over the
            modem's 4096-byte item, or the probe's socket would take more than 7 sec_tags
            (`probe_tags` and `tag`); nothing is signed.
    """
    if len(probe_tags) >= TAG_LIST_MAX:
        raise InvalidCredentialError(
            f"the identity probe presents sec_tag {tag} besides {len(probe_tags)} CA tags: "
            f"over the {TAG_LIST_MAX} sec_tags a modem socket takes (a device with an "
            f"identity keeps at most {TAG_LIST_MAX - 1} active tags)"
        )
    size = len(cert_pem.encode())
    if size > CERT_ITEM_MAX_BYTES:
        raise InvalidCredentialError(
            f"the client certificate for sec_tag {tag} is {size} bytes, over the "
            f"{CERT_ITEM_MAX_BYTES}-byte item a modem stores"
        )
    if not cert_pem.isascii() or "\0" in cert_pem:
        raise InvalidCredentialError("a client certificate item is ASCII PEM text without NUL")
    try:
        x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as exc:
        raise InvalidCredentialError(f"not PEM certificates: {exc}") from None
    return BundleBody(
        op="stage",
        tag=tag,
        credentials=(Credential(CredentialType.CLIENT_CERT, cert_pem),),
        probe=Probe(host=probe_host, port=probe_port, tags=tuple(probe_tags)),
        active=tuple(active),
        commit_by=int(commit_by.timestamp()),
    )


def identity_commit_body(*, tag: int, undo_by: int | None) -> BundleBody:
    """Present the staged identity `tag` from now on (no `active`: the CA tags stay).

    `undo_by` is as for a trust commit: until then a rollback returns the device to
    its previous identity.
    """
    return BundleBody(op="commit", tag=tag, undo_by=undo_by)


def identity_retire_body(*, old_tag: int, active: Sequence[int]) -> BundleBody:
    """Delete the old identity `old_tag` (certificate and key); `active` stays as it is.

    Sent only after the new identity was committed and proven by the reconnect, at the
    end of the wave's soak; a device refuses to retire the identity it uses (`tag_in_use`).
    """
    return BundleBody(op="retire", tags=(old_tag,), active=tuple(active))


def revoke_body(kids: Sequence[bytes], before: int) -> BundleBody:
    """Revoke delegations: the device's whole list of revoked key ids becomes `kids` (at
    most 8), and those issued before `before` (epoch seconds; 0: none) are revoked too.

    A root-only operation: the signer must be a root key, a device refuses it under a
    delegation (`out_of_scope`).
    """
    return BundleBody(op="revoke", revoke_kids=tuple(kids), revoke_before=before)


def _bundle(
    body: BundleBody,
    *,
    device_id: str,
    rollout_id: str,
    seq: int,
    now: datetime,
    ttl_seconds: int,
    version: int,
) -> Bundle:
    issued_at = int(now.timestamp())
    return Bundle(
        device_id=device_id,
        rollout_id=rollout_id,
        seq=seq,
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
        subject=body.subject,
        revoke_kids=body.revoke_kids,
        revoke_before=body.revoke_before,
        version=version,
    )


def _signed(signer: BundleSigner, payload: bytes, bundle: Bundle, device_id: str) -> bytes:
    delegation = signer.delegation_for(bundle.expires_at)
    data = sign1(payload, sign=signer.sign, kid=signer.key_id, delegation=delegation)
    if len(data) > MAX_BUNDLE_BYTES:
        # Unreachable with the bodies certfleet builds (protocol.md's budget, 4,770 bytes at
        # most, 5,418 with a delegation); kept so a new kind of body can never send what
        # every device refuses.
        raise BundleTooLargeError(
            f"the {bundle.op} bundle for {device_id} is {len(data)} bytes, over the "
            f"contract's {MAX_BUNDLE_BYTES}-byte limit; nothing was sent"
        )
    return data


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
    bundle = _bundle(
        body,
        device_id=device_id,
        rollout_id=rollout_id,
        seq=seq if seq is not None else sequences.next_sequence(device_id),
        now=now,
        ttl_seconds=ttl_seconds,
        version=version,
    )
    return IssuedBundle(
        bundle=bundle, data=_signed(signer, encode_payload(bundle), bundle, device_id)
    )


@dataclass(frozen=True, slots=True)
class BundleTemplate:
    """One body's bundle for many devices: checked and encoded once, signed per device.

    `issue(d, n)` gives what `issue_bundle` gives for device `d` with seq `n` (the same
    payload bytes, the same envelope), at the cost of a seq, a device id and a signature.
    """

    signer: BundleSigner
    payload: PayloadTemplate

    def issue(self, device_id: str, seq: int) -> bytes:
        """The signed bundle for `device_id` with `seq`.

        Raises:
            BundleRejectedError: `device_id` is not a device id, or `seq` is out of range.
        """
        bundle = self.payload.bundle
        return _signed(self.signer, self.payload.encode(device_id, seq), bundle, device_id)


def bundle_template(
    *,
    signer: BundleSigner,
    rollout_id: str,
    body: BundleBody,
    now: datetime,
    ttl_seconds: int,
    version: int = PROTOCOL_VERSION,
    device_id: str,
) -> BundleTemplate:
    """The template of the bundle `issue_bundle` makes from these (any device, any seq).

    `device_id` is one device it is for (a keygen's body names its device already): the
    whole bundle is checked with it, and a seq of 1, once.
    """
    bundle = _bundle(
        body,
        device_id=device_id,
        rollout_id=rollout_id,
        seq=1,
        now=now,
        ttl_seconds=ttl_seconds,
        version=version,
    )
    return BundleTemplate(signer=signer, payload=PayloadTemplate.of(bundle))


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
