"""What a device checks of a verified bundle against its own state, and how it names a refused one.

The signature, addressing, freshness and payload rules are `open_bundle`'s
(docs/protocol.md §4); these are the checks only the device's state can decide (check
13): that the active list an operation leaves is safe (`unsafe_active`), that a
rollback undoes the device's one undo record (`nothing_to_undo`, `superseded`), that
no change touches the active tags or the identity in use (`tag_in_use`), and that an
identity stage carries a certificate of the key its rollout's keygen made
(`nothing_staged`, `key_mismatch`). A
rejection names the bundle's rollout and seq only if its signature verified and its
delegation (if any) was accepted: a stranger's bundle, or one under a revoked or
expired delegation, must not be able to speak for a rollout. That a root-only op
(trust-signer, revoke) comes under no delegation is `open_bundle`'s (check 7a).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

import cbor2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from orchestrator.protocol import CredentialType, sha256_hex
from orchestrator.protocol.bundle import (
    MAX_BUNDLE_BYTES,
    UINT64_MAX,
    Bundle,
    BundleRejectedError,
    Reason,
)
from orchestrator.protocol.limits import CERT_ITEM_MAX_BYTES, SIGNERS_MAX, TAG_LIST_MAX
from orchestrator.protocol.reasons import UNVERIFIED_REASONS
from simulator.flash import UndoRecord

__all__ = ["DeviceView", "check_operation", "rejection_ids"]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What check 13 sees of the device: its flash record and, through callables, its modem.

    `undo` is the undo record (an expired one already dropped); `holds_ca(tag)` whether
    a tag holds a CA chain item that no decided work deletes, `holds_identity(tag)` a
    client certificate and key; `key_digest(tag)` the `%CMNG=1` digest of its key (of
    the public key's SPKI DER), if it holds one; `signers` the key ids trusted now.
    """

    active: tuple[int, ...]
    identity: int | None
    undo: UndoRecord | None
    holds_ca: Callable[[int], bool]
    holds_identity: Callable[[int], bool]
    key_digest: Callable[[int], str | None]
    signers: Collection[bytes]


def check_operation(bundle: Bundle, device: DeviceView) -> None:
    """Raise `BundleRejectedError` when the operation makes no sense on this device (check 13).

    Every refusal here comes before `received`: the seq is not consumed and nothing
    is written.
    """
    check = _CHECKS.get(bundle.op)
    if check is not None:
        check(bundle, device)


def _unsafe(detail: str) -> BundleRejectedError:
    return BundleRejectedError(Reason.UNSAFE_ACTIVE, detail)


def _in_use(tag: int | None, device: DeviceView, what: str) -> None:
    if tag in device.active:
        raise BundleRejectedError(
            Reason.TAG_IN_USE, f"sec_tag {tag} is active; {what} never overwrites it"
        )
    if tag is not None and tag == device.identity:
        raise BundleRejectedError(
            Reason.TAG_IN_USE, f"sec_tag {tag} is the identity in use; {what} never overwrites it"
        )


def _socket_fits(active: tuple[int, ...], device: DeviceView) -> None:
    """The MQTT socket takes the active list and the identity tag: at most 7 sec_tags."""
    tags = {*active, *(() if device.identity is None else (device.identity,))}
    if len(tags) > TAG_LIST_MAX:
        raise _unsafe(
            f"active list {list(active)} and identity sec_tag {device.identity} are "
            f"{len(tags)} sec_tags; a socket takes at most {TAG_LIST_MAX}"
        )


def _open_tag(undo: UndoRecord | None) -> int | None:
    """The tag of an open stage or keygen, deleted when another change replaces it."""
    return undo.tag if undo is not None and undo.open else None


def _stage(bundle: Bundle, device: DeviceView) -> None:
    if bundle.is_identity_stage:
        _identity_stage(bundle, device)
        return
    _in_use(bundle.tag, device, "a stage")
    brings_ca = any(c.type is CredentialType.CA_CHAIN for c in bundle.credentials)
    # A stage replaces the undo record: an open stage's tag is wiped with it.
    wiped = _open_tag(device.undo)
    for tag in bundle.active:
        staged = tag == bundle.tag and brings_ca
        if not staged and (tag in (wiped, bundle.tag) or not device.holds_ca(tag)):
            raise _unsafe(
                f"active list {list(bundle.active)} would name sec_tag {tag} without a CA"
            )
    _socket_fits(bundle.active, device)


def _spki_digest(pem: str) -> str:
    """SHA-256 of a PEM certificate's SubjectPublicKeyInfo DER, hex (`bad_payload` if none)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BundleRejectedError(Reason.BAD_PAYLOAD, f"not a PEM certificate: {exc}") from None
    return sha256_hex(spki)


def _identity_stage(bundle: Bundle, device: DeviceView) -> None:
    """A client certificate into the tag the keygen of this rollout made its key in."""
    undo = device.undo
    if len(bundle.credentials) != 1:
        raise BundleRejectedError(Reason.BAD_PAYLOAD, "a client certificate travels alone")
    (item,) = bundle.credentials
    if len(item.pem.encode()) > CERT_ITEM_MAX_BYTES:
        raise BundleRejectedError(
            Reason.TOO_LARGE, f"client certificate over {CERT_ITEM_MAX_BYTES} bytes"
        )
    if (
        undo is None
        or undo.kind != "keygen"
        or not undo.written
        or undo.rid != bundle.rollout_id
        or undo.tag != bundle.tag
    ):
        raise BundleRejectedError(
            Reason.NOTHING_STAGED, f"no key made in sec_tag {bundle.tag} by this rollout's keygen"
        )
    made = device.key_digest(undo.tag)
    if made is None or _spki_digest(item.pem) != made:
        raise BundleRejectedError(
            Reason.KEY_MISMATCH,
            f"the certificate's key is not the key made in sec_tag {undo.tag}",
        )
    for tag in bundle.active:
        if not device.holds_ca(tag):
            raise _unsafe(f"active list {list(bundle.active)} names sec_tag {tag} without a CA")


def _keygen(bundle: Bundle, device: DeviceView) -> None:
    _in_use(bundle.tag, device, "a keygen")


def _commit(bundle: Bundle, device: DeviceView) -> None:
    undo = device.undo
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
    if undo.identity:  # the active list stays; the identity becomes the staged tag
        _socket_fits(device.active, dataclasses.replace(device, identity=undo.tag))
        return
    after = bundle.active or undo.stage.active
    missing = [tag for tag in after if not device.holds_ca(tag)]
    if missing:
        raise _unsafe(f"active list {list(after)} names {missing}, which hold no CA chain")
    _socket_fits(tuple(after), device)


def _rollback(bundle: Bundle, device: DeviceView) -> None:
    undo = device.undo
    if undo is None:
        raise BundleRejectedError(Reason.NOTHING_TO_UNDO, "no change to undo")
    if undo.rid != bundle.rollout_id:
        owner = f"rollout {undo.rid!r}" if undo.rid else "a manual send"
        raise BundleRejectedError(
            Reason.SUPERSEDED, f"the latest change (sec_tag {undo.tag}) belongs to {owner}"
        )
    if undo.kind != "commit":
        return
    if undo.identity:
        previous = undo.previous_identity
        if previous is not None and not device.holds_identity(previous):
            raise _unsafe(f"the previous identity sec_tag {previous} lost its certificate or key")
        return
    missing = [tag for tag in undo.previous if not device.holds_ca(tag)]
    if missing or not undo.previous:
        raise _unsafe(f"the previous list {list(undo.previous)} lost its CA in {missing}")


def _retire(bundle: Bundle, device: DeviceView) -> None:
    if device.identity in bundle.tags:
        raise BundleRejectedError(
            Reason.TAG_IN_USE, f"sec_tag {device.identity} is the identity in use"
        )
    # A retire drops the undo record: an open stage's tag is wiped with it.
    wiped = {*bundle.tags, _open_tag(device.undo)}
    bad = [tag for tag in bundle.active if tag in wiped or not device.holds_ca(tag)]
    if bad:
        raise _unsafe(
            f"active list {list(bundle.active)} would name {bad} without a CA "
            f"after retiring {list(bundle.tags)}"
        )
    _socket_fits(bundle.active, device)


def _trust_signer(bundle: Bundle, device: DeviceView) -> None:
    signer = bundle.signer
    assert signer is not None  # noqa: S101 -- required by the payload rules
    try:
        signer.public_key()
    except ValueError:
        raise BundleRejectedError(Reason.BAD_PAYLOAD, "signer is not a P-256 point") from None
    remaining = set(device.signers) | {signer.kid}
    if bundle.retire_kid is not None:
        remaining.discard(bundle.retire_kid)
    if not remaining:
        raise BundleRejectedError(Reason.INVALID_OPERATION, "would trust no signer")
    if len(remaining) > SIGNERS_MAX:
        raise BundleRejectedError(
            Reason.INVALID_OPERATION,
            f"would trust {len(remaining)} signers; a device holds at most {SIGNERS_MAX}",
        )


_CHECKS: Final[dict[str, Callable[[Bundle, DeviceView], None]]] = {
    "stage": _stage,
    "commit": _commit,
    "rollback": _rollback,
    "retire": _retire,
    "trust-signer": _trust_signer,
    "keygen": _keygen,
}


def _verified(payload: bytes, reason: Reason) -> bool:
    """Whether a bundle refused for `reason` had passed signature verification (checks 1 to
    5d of docs/protocol.md §4: its delegation, if any, accepted too)."""
    if reason is Reason.TOO_LARGE:
        return len(payload) <= MAX_BUNDLE_BYTES  # check 12 (a CA chain item), not check 1
    return reason not in UNVERIFIED_REASONS


def rejection_ids(payload: bytes, reason: Reason) -> tuple[int, str, str | None]:
    """seq, rollout id and op a rejection for `reason` names, only to correlate it.

    A bundle refused before its signature verified, or under a delegation the device
    does not accept, could be anyone's: its rejection names no rollout (seq 0, rollout
    id '', no op). After verification the payload is
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
