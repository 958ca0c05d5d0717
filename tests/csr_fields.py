"""Build `csr` report fields (`%KEYGEN` output) for tests, honest or broken on purpose.

`keygen_field` makes what a modem prints: a P-256 CSR for `CN=<device id>` and the
modem's COSE_Sign1 attestation over it. Every knob breaks one thing, so a test names
the one check it is about.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from orchestrator.protocol.cose import key_id, sign1

__all__ = [
    "FixedAttestationKeys",
    "KeygenOutput",
    "attestation",
    "attestation_key",
    "b64url",
    "common_name",
    "csr_der",
    "keygen_field",
]

FLEET_SEED = "certfleet"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    """Unpadded base64url, as `%KEYGEN` prints."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def attestation_key(device_id: str, *, fleet_seed: str = FLEET_SEED) -> ec.EllipticCurvePrivateKey:
    """A simulated modem's attestation key, derived as the simulator derives it."""
    digest = hashlib.sha256(f"certfleet-attestation:{fleet_seed}:{device_id}".encode()).digest()
    scalar = int.from_bytes(digest, "big") % P256_ORDER
    return ec.derive_private_key(scalar, ec.SECP256R1())


def csr_der(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *,
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> bytes:
    """A PKCS#10 CSR's DER, signed by `key` (SHA-256 unless told)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    chosen = algorithm if algorithm is not None else hashes.SHA256()
    return builder.sign(key, chosen).public_bytes(serialization.Encoding.DER)


def common_name(device_id: str) -> x509.Name:
    """The subject `%KEYGEN` makes: `CN=<device id>`."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])


def attestation(
    signer: ec.EllipticCurvePrivateKey,
    *,
    claims: dict[str, Any],
    kid: bytes | None = None,
) -> bytes:
    """The modem's COSE_Sign1 over `claims` (kid: the signer's unless told)."""
    payload = cbor2.dumps(claims, canonical=True)
    return sign1(
        payload, private_key=signer, kid=kid if kid is not None else key_id(signer.public_key())
    )


@dataclass(frozen=True, slots=True)
class KeygenOutput:
    """One made field and what went into it."""

    field: str
    der: bytes
    key: CertificateIssuerPrivateKeyTypes


def keygen_field(
    device_id: str,
    *,
    seq: int = 7,
    tag: int = 45,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    der: bytes | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
    claims: dict[str, Any] | None = None,
) -> KeygenOutput:
    """What a modem prints after `%KEYGEN`, honest unless a knob says otherwise.

    Args:
        key: the CSR's key (a fresh P-256 key by default).
        der: the CSR DER to print instead of an honest one for `key`.
        signer: the attestation key (the device's derived one by default).
        claims: replaces the attestation claims (or some of them).
    """
    csr_key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    request = der if der is not None else csr_der(csr_key, common_name(device_id))
    honest = {"dev": device_id, "seq": seq, "tag": tag, "csr": hashlib.sha256(request).digest()}
    made = attestation(
        signer if signer is not None else attestation_key(device_id),
        claims={**honest, **(claims or {})},
    )
    return KeygenOutput(field=f"{b64url(request)}.{b64url(made)}", der=request, key=csr_key)


@dataclass
class FixedAttestationKeys:
    """`AttestationKeys` from a dict (the file adapter reads the same from JSON)."""

    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)

    def key_for(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        return self.keys.get(device_id)
