"""What a simulated modem's `AT%KEYGEN` returns: a CSR and the modem's signature over it.

Every simulated modem has its own P-256 attestation key, derived from the fleet seed and
the device id (docs/protocol.md, `keygen`), so certfleet can be given the fleet's public
attestation keys ahead (`attestation_keys`) and the simulator need keep none of them.
The attestation and the `%KEYGEN` output are `orchestrator.protocol.keygen`'s, the
same code certfleet reads them with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.protocol.cose import sign1
from orchestrator.protocol.keygen import (
    attestation_kid,
    attestation_payload,
    encode_keygen_output,
    sign_attestation,
)

__all__ = [
    "DEFAULT_FLEET_SEED",
    "attestation_key",
    "attestation_keys_json",
    "keygen_output",
    "make_csr",
]

DEFAULT_FLEET_SEED: Final = "certfleet"
"""The fleet seed a simulated modem derives its attestation key from, unless given another."""

_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def attestation_key(
    device_id: str, fleet_seed: str = DEFAULT_FLEET_SEED
) -> ec.EllipticCurvePrivateKey:
    """The modem's attestation key: scalar SHA-256("certfleet-attestation:seed:id") mod n."""
    digest = hashlib.sha256(f"certfleet-attestation:{fleet_seed}:{device_id}".encode()).digest()
    scalar = int.from_bytes(digest) % _P256_ORDER or 1  # 0 has odds 2**-256; 1 keeps it a key
    return ec.derive_private_key(scalar, ec.SECP256R1())


def attestation_keys_json(
    device_ids: Iterable[str], fleet_seed: str = DEFAULT_FLEET_SEED
) -> dict[str, str]:
    """{device id: PEM public attestation key}, as certfleet's attestation keys file holds them."""
    return {
        device_id: attestation_key(device_id, fleet_seed)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        for device_id in device_ids
    }


def make_csr(key: ec.EllipticCurvePrivateKey, subject: str) -> bytes:
    """A PKCS#10 request of `key` for exactly `CN=<subject>`, no attributes, ECDSA-SHA256; DER."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def keygen_output(
    csr_der: bytes,
    *,
    attestation: ec.EllipticCurvePrivateKey,
    device_id: str,
    seq: int,
    tag: int,
    forged_by: ec.EllipticCurvePrivateKey | None = None,
) -> str:
    """`base64url(CSR DER).base64url(COSE_Sign1)`, the attestation signed with `attestation`.

    `forged_by` (fault injection) signs instead, under the kid of `attestation`: only the
    signature gives it away, as a cloned modem's would.
    """
    if forged_by is None:
        signed = sign_attestation(attestation, device_id, seq, tag, csr_der)
    else:
        payload = attestation_payload(device_id, seq, tag, csr_der)
        kid = attestation_kid(attestation.public_key())
        signed = sign1(payload, private_key=forged_by, kid=kid)
    return encode_keygen_output(csr_der, signed)
