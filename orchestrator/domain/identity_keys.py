"""Public keys of device identities, named by the SHA-256 of their SubjectPublicKeyInfo.

A key made by `%KEYGEN` never leaves the modem; what both sides can see of it is its
public half. The modem's `%CMNG=1` digest of a keygen'd key item is SHA-256 over that
key's SPKI DER, the CSR carries the same SPKI, and so does the certificate issued for
it: one hex digest names the key everywhere. certfleet uses it to refuse a key seen
before and to make sure an issuer signed the key the device made; a device uses it to
refuse a certificate for another key (`key_mismatch`).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["certificate_matches_key", "certificate_spki_sha256", "spki_sha256"]


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 over the key's SubjectPublicKeyInfo DER, lowercase hex."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def certificate_spki_sha256(certificate_pem: str | bytes) -> str | None:
    """The `spki_sha256` of the first certificate in `certificate_pem`; None when the text
    is not a PEM certificate (a caller refuses it rather than crash on it)."""
    data = certificate_pem.encode("utf-8") if isinstance(certificate_pem, str) else certificate_pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
        return spki_sha256(certificate.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def certificate_matches_key(certificate_pem: str | bytes, key_spki_sha256: str) -> bool:
    """Whether the certificate certifies the key named by `key_spki_sha256` (hex, any case)."""
    digest = certificate_spki_sha256(certificate_pem)
    return digest is not None and digest == key_spki_sha256.lower()
