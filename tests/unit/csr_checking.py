"""Checking CSR fields in unit tests: one device, its keygen and a fresh identity store."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.identity import CsrRefusal
from orchestrator.services.identity import CheckedCsr, RefusedCsr, check_csr
from tests.csr_fields import FixedAttestationKeys, attestation_key, common_name, keygen_field
from tests.fakes import FakeIdentityStore

__all__ = [
    "DEVICE",
    "ROLLOUT",
    "SEQ",
    "TAG",
    "attested",
    "check",
    "issued_certificate",
    "refusal",
    "with_der",
]

DEVICE = "dev-0001"
SEQ = 7
TAG = 45
ROLLOUT = "ro-identity-1"


def attested() -> FixedAttestationKeys:
    """Attestation keys with one configured for DEVICE."""
    return FixedAttestationKeys({DEVICE: attestation_key(DEVICE).public_key()})


def check(
    field: str,
    *,
    store: FakeIdentityStore | None = None,
    keys: FixedAttestationKeys | None = None,
    device_id: str = DEVICE,
    rollout_id: str = ROLLOUT,
) -> CheckedCsr | RefusedCsr:
    return check_csr(
        field,
        device_id=device_id,
        rollout_id=rollout_id,
        keygen_seq=SEQ,
        keygen_tag=TAG,
        attestation_keys=keys if keys is not None else attested(),
        identity_store=store if store is not None else FakeIdentityStore(),
    )


def refusal(field: str, **kwargs: object) -> CsrRefusal:
    """The reason `field` is refused, failing the test if it passes."""
    store = FakeIdentityStore()
    result = check(field, store=store, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, RefusedCsr), f"expected a refusal, got {result!r}"
    assert result.detail
    assert store.keys == {}, "a refused CSR must not use up its key"
    return result.reason


def with_der(der: bytes) -> str:
    """A field for `der`, honestly attested (so only the CSR itself is at fault)."""
    return keygen_field(DEVICE, seq=SEQ, tag=TAG, der=der).field


CA_KEY = ec.generate_private_key(ec.SECP256R1())


def issued_certificate(public_key: ec.EllipticCurvePublicKey) -> str:
    """A certificate for `public_key`, as an issuer would return it (PEM)."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(common_name(DEVICE))
        .issuer_name(common_name("ca"))
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(CA_KEY, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
