"""Device identities: certificates issued for keys made in the modem, and their revocation.

Values only; checking a CSR and talking to an issuer live in `services/identity`, the
issuers themselves behind `ports.identity`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = ["CsrRefusal", "IssuedCertificate", "RevokedCertificate"]


class CsrRefusal(enum.StrEnum):
    """Why certfleet gave a device's CSR no certificate (the device keeps its old identity)."""

    MALFORMED = "csr_malformed"
    """Not `base64url(CSR DER).base64url(COSE_Sign1)`, not a PKCS#10 CSR, or over its limit."""
    BAD_SIGNATURE = "csr_bad_signature"
    """The CSR's own signature does not verify with the key it carries."""
    WRONG_KEY_TYPE = "csr_wrong_key_type"
    """The key is not an EC P-256 key (the only kind `%KEYGEN` makes)."""
    WRONG_SUBJECT = "csr_wrong_subject"
    """The subject is not exactly `CN=<device id>`."""
    KEY_REUSED = "csr_key_reused"
    """The public key was seen before (another certificate, another device, the old identity)."""
    BAD_ATTESTATION = "csr_bad_attestation"
    """The modem's attestation does not verify, or binds another device, bundle or CSR."""
    ISSUER_REFUSED = "issuer_refused"
    """The issuer refused to sign it for good."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """A certificate an issuer signed: its PEM, serial and end of validity."""

    pem: str
    serial: int
    not_after: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedCertificate:
    """A certificate certfleet revoked, as its CRL lists it until the certificate expires."""

    serial: int
    revoked_at: datetime
    not_after: datetime
    device_id: str
    reason: str = "superseded"
    """An RFC 5280 reason name: `superseded` (rotated away), `cessation_of_operation`
    (issued to a device that was rolled back), `key_compromise` (by an operator)."""
