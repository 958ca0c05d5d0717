"""The identity rotation ports: the certificate issuer, the CRL signer, the devices'
attestation keys and what certfleet keeps about identities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.identity import IssuedCertificate, RevokedCertificate

__all__ = [
    "AttestationKeys",
    "CrlPublications",
    "CrlPublisher",
    "CrlSigner",
    "IdentityStore",
    "Issuer",
]


class Issuer(Protocol):
    """A certificate authority that signs device CSRs and revokes what it signed."""

    name: str
    """For logs and status: `local`, `cfssl`."""

    def issue(self, csr_pem: str, *, device_id: str) -> IssuedCertificate:
        """Sign a checked CSR for `device_id`.

        Raises:
            IssuerUnavailableError: unreachable, timed out or failing for now (retried).
            IssuerRefusedError: the issuer refused this request for good.
        """
        ...

    def revoke(self, certificate_pem: str, *, reason: str) -> bool:
        """Revoke a certificate at the issuer; False when the issuer keeps no revocations
        (the CRL certfleet writes still lists it).

        Raises:
            IssuerUnavailableError: unreachable or failing for now (retried).
        """
        ...

    def crl(self) -> bytes | None:
        """The issuer's own current CRL (PEM), or None when it cannot make one."""
        ...


class CrlSigner(Protocol):
    """Signs the CRL the broker reads, with the key of the CA that issued the certificates."""

    def sign_crl(
        self, revoked: Sequence[RevokedCertificate], *, now: datetime, next_update: datetime
    ) -> bytes:
        """A PEM CRL listing `revoked`."""
        ...


class CrlPublisher(Protocol):
    """Puts a signed CRL where the broker reads it (a file written atomically, then a reload)."""

    def publish(self, pem: bytes) -> None:
        """Replace the published CRL with `pem`; the broker sees the old or the new, never half.

        Raises:
            OSError: the CRL could not be written (the old one stays in place).
        """
        ...


class CrlPublications(Protocol):
    """What was last published of the CRL, and the debounce of refreshes (Redis).

    A publish makes the broker reload (SIGHUP), which Mosquitto 2.0 does not always survive
    while clients come and go: certfleet publishes only a changed CRL, or one half through
    its lifetime, and coalesces the refreshes a burst of revocations asks for.
    """

    def last_published(self) -> tuple[str, float] | None:
        """(digest of the revoked serials it listed, when, epoch seconds) of the last publish."""
        ...

    def record_published(self, digest: str, at: float) -> None:
        """Remember the CRL just published."""
        ...

    def claim_refresh(self, ttl_ms: int) -> bool:
        """True for the first caller in `ttl_ms` (who enqueues the one coalesced refresh)."""
        ...


class AttestationKeys(Protocol):
    """The modems' attestation public keys, by device id (from provisioning)."""

    def key_for(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """The device's attestation key, or None when none is configured for it."""
        ...


class IdentityStore(Protocol):
    """What certfleet keeps about identity rotations (Redis in production)."""

    def put_csrs(self, rollout_id: str, csrs: Mapping[str, str]) -> None:
        """Keep each device's reported `csr` field for the rollout (public data only)."""
        ...

    def csrs(self, rollout_id: str, device_ids: Sequence[str]) -> dict[str, str]:
        """The kept `csr` fields of these devices (absent: none kept)."""
        ...

    def claim_key(self, spki_sha256: str, device_id: str, rollout_id: str) -> bool:
        """Record a public key (SHA-256 of its SPKI DER, hex) as certified for `device_id` in
        `rollout_id`; True when new or already claimed by this same device and rollout (a
        retried task), False if claimed by anything else before (then nothing changes)."""
        ...

    def put_certificates(
        self, rollout_id: str, certificates: Mapping[str, tuple[str | None, str]]
    ) -> None:
        """Per device: (the old certificate's PEM or None when unknown, the new one's PEM)."""
        ...

    def certificates(
        self, rollout_id: str, device_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str]]:
        """What `put_certificates` kept for these devices."""
        ...

    def add_revoked(self, revoked: Sequence[RevokedCertificate]) -> int:
        """Record revocations (by serial; a repeat changes nothing); return how many were new."""
        ...

    def revoked(self, *, now: datetime) -> list[RevokedCertificate]:
        """Every revocation whose certificate has not expired by `now` (the CRL's content)."""
        ...
