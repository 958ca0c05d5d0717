"""Checking a device's CSR before any issuer sees it.

A `csr` report carries what `%KEYGEN` printed: the CSR and the modem's attestation over
it. certfleet gives it a certificate only if every check passes, in this order:

1. the field has the contract's form and limits;
2. it is a PKCS#10 CSR whose own signature verifies;
3. its key is an EC P-256 key (the only kind `%KEYGEN` makes), signing with SHA-256;
4. its subject is exactly `CN=<device id>`: one RDN of one attribute, and the request
   carries no attributes (no extension request an issuer might honour);
5. when an attestation key is configured for the device: the attestation names that
   key (kid), its signature verifies, and it binds this device, the keygen bundle's seq
   and tag, and the SHA-256 of this CSR's DER;
6. the public key is not the key of any client certificate certfleet knows of a device
   (`key_holders`: the inventory's, factory-provisioned ones included, which certfleet
   never claimed; the device's own current certificate as well), and was never seen
   before (`IdentityStore.claim_key`), checked last so that a CSR refused for another
   reason does not use up its key. The claim names the device and the
   rollout, so the same check run again (a retried task) passes, while the same key
   in another rollout (an old identity's key sent again) or from another device is
   refused.

A refusal is a `RefusedCsr`: the `CsrRefusal` the rollout counts and a detail for the
log. Nothing in a CSR is secret, and no detail quotes more than its public parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from orchestrator.domain.identity import CsrRefusal
from orchestrator.domain.identity_keys import certificate_matches_key, spki_sha256
from orchestrator.ports.identity import AttestationKeys, IdentityStore
from orchestrator.protocol.keygen import KeygenError, parse_keygen_output, verify_attestation

__all__ = ["CheckedCsr", "KeyHolders", "RefusedCsr", "check_csr"]

KeyHolders = Callable[[Sequence[str]], Mapping[str, str]]
"""Which device's reported client certificate carries each of these keys (SPKI SHA-256
hex), leaving out keys no certificate has: `InventoryStore.key_holders`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedCsr:
    """A CSR that passed every check; its key is claimed, the issuer may sign it."""

    device_id: str
    csr_pem: str
    """The CSR as PEM, what `Issuer.issue` takes."""
    spki_sha256: str
    """SHA-256 of the key's SubjectPublicKeyInfo DER, hex: the issued certificate must
    carry this key (`domain.identity_keys.certificate_matches_key`)."""
    attested: bool
    """Whether the modem's attestation was verified (an attestation key is configured)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusedCsr:
    """Why a CSR gets no certificate: the reason counted, and a detail for the log."""

    reason: CsrRefusal
    detail: str


class _Refused(Exception):
    """Raised inside the checks; `check_csr` turns it into a `RefusedCsr`."""

    def __init__(self, reason: CsrRefusal, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Refused(CsrRefusal.MALFORMED, f"not a DER PKCS#10 CSR: {exc}") from exc


def _check_signature(csr: x509.CertificateSigningRequest) -> x509.ObjectIdentifier:
    """Check the CSR's own signature; return its algorithm for `_check_algorithm`."""
    try:
        algorithm = csr.signature_algorithm_oid
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Refused(
            CsrRefusal.BAD_SIGNATURE, f"the CSR's signature cannot be checked: {exc}"
        ) from exc
    if not valid:
        raise _Refused(CsrRefusal.BAD_SIGNATURE, "the CSR's signature does not verify")
    return algorithm


def _check_algorithm(algorithm: x509.ObjectIdentifier) -> None:
    """A P-256 key's CSR signed with another digest is not what `%KEYGEN` makes."""
    if algorithm != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise _Refused(
            CsrRefusal.BAD_SIGNATURE,
            f"the CSR is signed with {algorithm.dotted_string}, not ECDSA with SHA-256",
        )


def _p256_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    try:
        key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _Refused(CsrRefusal.WRONG_KEY_TYPE, f"the CSR's key cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _Refused(CsrRefusal.WRONG_KEY_TYPE, f"the key is {type(key).__name__}, not EC P-256")
    if not isinstance(key.curve, ec.SECP256R1):
        raise _Refused(CsrRefusal.WRONG_KEY_TYPE, f"the key is on {key.curve.name}, not P-256")
    return key


def _check_subject(csr: x509.CertificateSigningRequest, device_id: str) -> None:
    try:
        rdns = list(csr.subject.rdns)
        attributes = list(csr.attributes)
    except (ValueError, TypeError) as exc:
        raise _Refused(CsrRefusal.WRONG_SUBJECT, f"the subject cannot be read: {exc}") from exc
    wanted = f"CN={device_id}"
    if len(rdns) != 1 or len(rdns[0]) != 1:
        raise _Refused(
            CsrRefusal.WRONG_SUBJECT,
            f"the subject has {len(rdns)} RDNs, {sum(map(len, rdns))} attributes; wanted {wanted}",
        )
    (attribute,) = rdns[0]
    if attribute.oid != NameOID.COMMON_NAME or attribute.value != device_id:
        raise _Refused(
            CsrRefusal.WRONG_SUBJECT,
            f"the subject is {csr.subject.rfc4514_string()!r}, not {wanted}",
        )
    if attributes:
        oids = ", ".join(sorted(item.oid.dotted_string for item in attributes))
        raise _Refused(
            CsrRefusal.WRONG_SUBJECT, f"the CSR carries attributes ({oids}); none allowed"
        )


def _check_attestation(
    attestation: bytes,
    key: ec.EllipticCurvePublicKey,
    *,
    csr_der: bytes,
    device_id: str,
    keygen_seq: int,
    keygen_tag: int,
) -> None:
    try:
        claims = verify_attestation(attestation, key)
        claims.check(device_id=device_id, seq=keygen_seq, tag=keygen_tag, csr_der=csr_der)
    except KeygenError as exc:
        raise _Refused(CsrRefusal.BAD_ATTESTATION, f"the attestation: {exc}") from exc


def _checked(
    csr_field: str,
    *,
    device_id: str,
    rollout_id: str,
    keygen_seq: int,
    keygen_tag: int,
    attestation_keys: AttestationKeys,
    identity_store: IdentityStore,
    current_certificate_pem: str | None,
    key_holders: KeyHolders | None,
) -> CheckedCsr:
    try:
        output = parse_keygen_output(csr_field)
    except KeygenError as exc:
        raise _Refused(CsrRefusal.MALFORMED, f"the csr field: {exc}") from exc
    csr = _load_csr(output.csr_der)
    algorithm = _check_signature(csr)
    key = _p256_key(csr)
    _check_algorithm(algorithm)
    _check_subject(csr, device_id)
    attestation_key = attestation_keys.key_for(device_id)
    if attestation_key is not None:
        _check_attestation(
            output.attestation,
            attestation_key,
            csr_der=output.csr_der,
            device_id=device_id,
            keygen_seq=keygen_seq,
            keygen_tag=keygen_tag,
        )
    digest = spki_sha256(key)
    if current_certificate_pem is not None and certificate_matches_key(
        current_certificate_pem, digest
    ):
        raise _Refused(CsrRefusal.KEY_REUSED, "the key is the one of the identity in use")
    holder = key_holders([digest]).get(digest) if key_holders is not None else None
    if holder is not None:
        whose = "its own" if holder == device_id else f"device {holder!r}'s"
        raise _Refused(CsrRefusal.KEY_REUSED, f"the key is the one of {whose} certificate")
    if not identity_store.claim_key(digest, device_id, rollout_id):
        raise _Refused(CsrRefusal.KEY_REUSED, f"the public key {digest[:16]}… was seen before")
    return CheckedCsr(
        device_id=device_id,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        spki_sha256=digest,
        attested=attestation_key is not None,
    )


def check_csr(
    csr_field: str,
    *,
    device_id: str,
    rollout_id: str,
    keygen_seq: int,
    keygen_tag: int,
    attestation_keys: AttestationKeys,
    identity_store: IdentityStore,
    current_certificate_pem: str | None = None,
    key_holders: KeyHolders | None = None,
) -> CheckedCsr | RefusedCsr:
    """Check a device's `csr` field (module docstring); claim its key if every check passes.

    `current_certificate_pem` is the device's certificate in use, when known: a CSR for its
    key is a reused key even if certfleet never claimed it. `key_holders` answers which
    device's known client certificate has a key (`InventoryStore.key_holders`): a CSR for
    any of them is a reused key too.

    Raises:
        StoreUnavailableError: the identity store is unreachable (nothing was claimed).
    """
    try:
        return _checked(
            csr_field,
            device_id=device_id,
            rollout_id=rollout_id,
            keygen_seq=keygen_seq,
            keygen_tag=keygen_tag,
            attestation_keys=attestation_keys,
            identity_store=identity_store,
            current_certificate_pem=current_certificate_pem,
            key_holders=key_holders,
        )
    except _Refused as refused:
        return RefusedCsr(reason=refused.reason, detail=refused.detail)
