"""Signed credential bundles: the CBOR payload inside a COSE_Sign1 (ES256) envelope.

The orchestrator builds a `Bundle`, encodes it with `encode_payload`, and signs it
(`orchestrator.services.bundles`), with a root key or a delegated key whose delegation
travels in the protected header (`orchestrator.protocol.delegation`). A device opens it
with `open_bundle`, which checks, in this order, everything that must hold before the
key store is touched: size, envelope, algorithm, signer (and delegation: its root, its
signature, its payload, revocation, validity), signature, payload, version, scope,
device, sequence, validity window, item sizes. Each failure has its own `Reason`. The
payload map's rules are `orchestrator.protocol.payload`'s, its limits
`orchestrator.protocol.limits`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES, CredentialType
from orchestrator.protocol.cose import (
    ALG_ES256,
    HEADER_ALG,
    HEADER_DELEGATION,
    HEADER_KID,
    CoseError,
    Sign1Message,
    SignatureMismatchError,
    UnsupportedAlgorithmError,
)
from orchestrator.protocol.delegation import Delegation, Revocation, accept_delegation
from orchestrator.protocol.limits import (
    CERT_ITEM_MAX_BYTES,
    CLOCK_SKEW_SECONDS,
    MAX_BUNDLE_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
)
from orchestrator.protocol.payload import (
    BUNDLE_VERSION,
    MAX_ACTIVE_TAGS,
    OPERATIONS,
    UINT64_MAX,
    V2_ONLY_KEYS,
    Bundle,
    Credential,
    Operation,
    PayloadTemplate,
    Probe,
    SignerKey,
    decode_payload,
    encode_payload,
)
from orchestrator.protocol.reasons import BundleRejectedError, Reason

__all__ = [
    "BUNDLE_VERSION",
    "CLOCK_SKEW_SECONDS",
    "MAX_ACTIVE_TAGS",
    "MAX_BUNDLE_BYTES",
    "OPERATIONS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "UINT64_MAX",
    "V2_ONLY_KEYS",
    "Bundle",
    "BundleRejectedError",
    "Credential",
    "Operation",
    "PayloadTemplate",
    "Probe",
    "Reason",
    "Revocation",
    "SignerKey",
    "decode_payload",
    "encode_payload",
    "open_bundle",
]


def _verified_payload(
    data: bytes,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey],
    revocation: Revocation,
    now: int,
) -> tuple[bytes, Delegation | None]:
    """The payload of an envelope signed ES256 by a trusted root key, or by a key its
    delegation names (checks 1 to 5d); or the reason why not."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRejectedError(
            Reason.TOO_LARGE, f"bundle of {len(data)} bytes, limit {MAX_BUNDLE_BYTES}"
        )
    try:
        message = Sign1Message.decode(data, max_bytes=MAX_BUNDLE_BYTES)
    except CoseError as exc:
        raise BundleRejectedError(Reason.BAD_ENVELOPE, str(exc)) from None
    if message.protected.get(HEADER_ALG) != ALG_ES256:
        raise BundleRejectedError(
            Reason.UNSUPPORTED_ALGORITHM, "the protected header must carry alg ES256 (-7)"
        )
    kid = message.protected.get(HEADER_KID)
    delegation = None
    if HEADER_DELEGATION in message.protected:
        delegation = accept_delegation(
            message.protected[HEADER_DELEGATION],
            bundle_kid=kid,
            roots=signers,
            revocation=revocation,
            now=now,
        )
        key = delegation.public_key()
    else:
        if not isinstance(kid, bytes):
            raise BundleRejectedError(Reason.UNKNOWN_KEY, "the protected header carries no key id")
        found = signers.get(kid)
        if found is None:
            raise BundleRejectedError(Reason.UNKNOWN_KEY, f"signer {kid.hex()} is not trusted")
        key = found
    try:
        message.verify(key)
    except UnsupportedAlgorithmError as exc:
        raise BundleRejectedError(Reason.UNSUPPORTED_ALGORITHM, str(exc)) from None
    except (SignatureMismatchError, CoseError) as exc:
        raise BundleRejectedError(Reason.BAD_SIGNATURE, str(exc)) from None
    return message.payload, delegation


def open_bundle(
    data: bytes,
    *,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey],
    device_id: str,
    last_seq: int,
    now: datetime,
    versions: Collection[int] = SUPPORTED_VERSIONS,
    revocation: Revocation = Revocation(),  # noqa: B008 - frozen, so one shared default is fine
) -> Bundle:
    """Everything a device checks before it acts on a bundle (checks 1 to 12).

    Args:
        signers: the root keys the device trusts, by key id.
        versions: the bundle versions the device supports (a v1 device: `(1,)`).
        revocation: the delegations the device refuses (its last `revoke` op's).

    Raises:
        BundleRejectedError: with the reason of the first check that failed.
    """
    timestamp = int(now.timestamp())
    payload, delegation = _verified_payload(data, signers, revocation, timestamp)
    bundle = decode_payload(payload, versions=versions)
    if delegation is not None:
        refusal = delegation.scope.refusal(bundle)
        if refusal is not None:
            raise BundleRejectedError(Reason.OUT_OF_SCOPE, refusal)
    if bundle.device_id != device_id:
        raise BundleRejectedError(
            Reason.WRONG_DEVICE, f"bundle is for {bundle.device_id!r}, this is {device_id!r}"
        )
    if bundle.seq <= last_seq:
        raise BundleRejectedError(
            Reason.REPLAY, f"sequence {bundle.seq} is not above the last accepted {last_seq}"
        )
    if timestamp >= bundle.expires_at:
        raise BundleRejectedError(Reason.BUNDLE_EXPIRED, f"expired at {bundle.expires.isoformat()}")
    if bundle.issued_at > timestamp + CLOCK_SKEW_SECONDS:
        raise BundleRejectedError(Reason.NOT_YET_VALID, "issued in the future")
    for credential in bundle.credentials:
        size = len(credential.pem.encode())
        limit = _ITEM_LIMITS.get(credential.type)
        if limit is not None and size > limit:
            raise BundleRejectedError(
                Reason.TOO_LARGE,
                f"{_ITEM_NAMES[credential.type]} of {size} bytes exceeds the modem's "
                f"{limit}-byte limit",
            )
    return bundle


_ITEM_LIMITS: Final[Mapping[CredentialType, int]] = {
    CredentialType.CA_CHAIN: CA_CHAIN_MAX_BYTES,
    CredentialType.CLIENT_CERT: CERT_ITEM_MAX_BYTES,
}
"""Check 12: the items a modem stores as PEM, and the most it stores of each."""
_ITEM_NAMES: Final[Mapping[CredentialType, str]] = {
    CredentialType.CA_CHAIN: "CA chain",
    CredentialType.CLIENT_CERT: "client certificate",
}
