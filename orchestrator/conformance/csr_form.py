"""What a device's `csr` report must carry: the `%KEYGEN` output of docs/protocol.md §7.

The suite checks the field as certfleet would before issuing: its form and limits, a
PKCS#10 CSR signed by its own P-256 key with the subject exactly `CN=<device id>` and
nothing else, and an attestation whose claims name this device, this keygen and this
CSR. The attestation's signature is the modem's, with a key the suite does not hold:
it checks the envelope and the claims, and certfleet checks the signature when an
attestation key is configured for the device.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from orchestrator.conformance.inbox import Heard
from orchestrator.protocol.cose import ALG_ES256, HEADER_ALG, HEADER_KID, CoseError, Sign1Message
from orchestrator.protocol.keygen import KeygenError, decode_attestation_claims, parse_keygen_output

__all__ = ["csr_problems"]


def _csr_problems(csr: x509.CertificateSigningRequest, device_id: str) -> list[str]:
    problems = []
    if not csr.is_signature_valid:
        problems.append("the CSR's signature does not verify with its own key")
    if csr.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        problems.append(
            f"the CSR is signed {csr.signature_algorithm_oid.dotted_string}, not ECDSA-SHA256"
        )
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        problems.append("the CSR's key is not a P-256 key")
    expected = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    if csr.subject != expected:
        problems.append(
            f"the CSR's subject is {csr.subject.rfc4514_string()!r}, not CN={device_id}"
        )
    if len(csr.extensions) or len(csr.attributes):
        problems.append("the CSR carries attributes or extensions; none are allowed")
    return problems


def _attestation_problems(attestation: bytes, csr_der: bytes, report: Heard) -> list[str]:
    try:
        message = Sign1Message.decode(attestation)
    except CoseError as exc:
        return [f"the attestation is not a COSE_Sign1: {exc}"]
    if message.protected.get(HEADER_ALG) != ALG_ES256 or not isinstance(
        message.protected.get(HEADER_KID), bytes
    ):
        return ["the attestation's protected header is not {1: -7, 4: kid}"]
    try:
        claims = decode_attestation_claims(message.payload)
    except KeygenError as exc:
        return [f"the attestation's claims: {exc}"]
    problems = []
    if claims.dev != report.get("device_id"):
        problems.append(f"the attestation names device {claims.dev!r}")
    if claims.seq != report.get("seq"):
        problems.append(f"the attestation names seq {claims.seq}, the report {report.get('seq')}")
    if claims.csr_sha256 != hashlib.sha256(csr_der).digest():
        problems.append("the attestation is over another CSR")
    return problems


def csr_problems(report: Heard) -> list[str]:
    """Everything wrong with a `csr` report's field (empty: as the contract says)."""
    field = report.get("csr")
    if not isinstance(field, str):
        return ["the csr report carries no csr field"]
    try:
        output = parse_keygen_output(field)
    except KeygenError as exc:
        return [f"the csr field: {exc}"]
    try:
        csr = x509.load_der_x509_csr(output.csr_der)
    except ValueError as exc:
        return [f"the csr field's first part is not a PKCS#10 CSR: {exc}"]
    device_id = str(report.get("device_id"))
    return [
        *_csr_problems(csr, device_id),
        *_attestation_problems(output.attestation, output.csr_der, report),
    ]
