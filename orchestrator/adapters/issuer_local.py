"""The local issuer: a CA certificate and its key in files, for labs, tests and small fleets.

It signs device CSRs itself and keeps no revocation list of its own: a certificate it
revokes is listed in the CRL certfleet signs with the same CA (`sign_crl`) and writes
for the broker. The CA key stays inside this object, in memory only: it is never logged
and never part of an error message.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from orchestrator.domain.errors import IssuerRefusedError, SigningKeyError
from orchestrator.domain.identity import IssuedCertificate, RevokedCertificate

__all__ = ["LocalCaIssuer", "crl_reason", "issued_certificate", "load_ca"]

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

BACKDATE: Final = timedelta(minutes=5)
"""A new certificate is valid from a little before now: a device whose clock runs
behind the CA's by a few minutes must not see a certificate from the future."""

REASONS: Final[dict[str, x509.ReasonFlags | None]] = {
    "unspecified": None,  # RFC 5280 5.3.1: leave the reasonCode out rather than say this
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}
"""RFC 5280 reason names as `RevokedCertificate.reason` spells them."""


def crl_reason(reason: str) -> x509.ReasonFlags | None:
    """The CRL reason code for a reason name (None: no reasonCode entry).

    Raises:
        ValueError: not an RFC 5280 reason name.
    """
    try:
        return REASONS[reason]
    except KeyError:
        raise ValueError(
            f"unknown revocation reason {reason!r}; one of {sorted(REASONS)}"
        ) from None


def issued_certificate(pem: str) -> IssuedCertificate:
    """What certfleet keeps of a certificate an issuer returned: PEM, serial, end of validity."""
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return IssuedCertificate(
        pem=pem, serial=certificate.serial_number, not_after=certificate.not_valid_after_utc
    )


def _load_key(path: Path) -> CaKey:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SigningKeyError(
            f"no CA key at {path}; point CERTFLEET_ISSUER_CA_KEY_FILE (or "
            "CERTFLEET_CRL_CA_KEY_FILE) at the key of the CA that issues device certificates"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):  # the exception text is not repeated: it may quote the file
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise SigningKeyError(f"{path} must hold an EC or RSA key")
    return key


def load_ca(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, CaKey]:
    """A CA certificate and its key, checked to belong together and to be a CA."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"{cert_file} is not a readable PEM certificate: {exc}") from None
    key = _load_key(key_file)
    if certificate.public_key() != key.public_key():
        raise SigningKeyError(f"{key_file} is not the key of the CA certificate {cert_file}")
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise SigningKeyError(f"{cert_file} is not a CA certificate (basicConstraints CA:true)")
    return certificate, key


def _now() -> datetime:
    return datetime.now(UTC)


class LocalCaIssuer:
    """`Issuer` and `CrlSigner` over a CA certificate and key file."""

    name = "local"

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        cert_days: int = 365,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._certificate, self._key = load_ca(cert_file, key_file)
        self._cert_days = cert_days
        self._clock = clock

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate (what the broker's `cafile` must hold)."""
        return self._certificate

    def issue(self, csr_pem: str, *, device_id: str) -> IssuedCertificate:
        """A TLS client certificate for the CSR's key and subject, valid `cert_days`."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            raise IssuerRefusedError(
                f"the CSR of {device_id} is not a PEM PKCS#10 request"
            ) from None
        if not csr.is_signature_valid:
            raise IssuerRefusedError(f"the CSR of {device_id} has a bad signature")
        now = self._clock()
        # A certificate that outlives its CA would not validate past the CA's end anyway.
        not_after = min(
            now + timedelta(days=self._cert_days), self._certificate.not_valid_after_utc
        )
        public_key = csr.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())  # 159 random bits
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return IssuedCertificate(
            pem=pem, serial=certificate.serial_number, not_after=certificate.not_valid_after_utc
        )

    def revoke(self, certificate_pem: str, *, reason: str) -> bool:
        """Nothing to do here: the local CA's revocations live in certfleet's CRL only."""
        crl_reason(reason)  # an unknown reason is a bug of the caller, found here too
        return False

    def crl(self) -> bytes | None:
        """None: certfleet signs the CRL itself (`sign_crl`)."""
        return None

    def sign_crl(
        self, revoked: Sequence[RevokedCertificate], *, now: datetime, next_update: datetime
    ) -> bytes:
        """A PEM CRL of `revoked`, valid from `now` until `next_update`."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now)
            .next_update(next_update)
            .add_extension(self._authority_key_identifier(), critical=False)
            # Increases with every CRL as long as the clock does (RFC 5280 5.2.3).
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        )
        for entry in sorted(revoked, key=lambda item: item.serial):
            revoked_builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
            )
            reason = crl_reason(entry.reason)
            if reason is not None:
                revoked_builder = revoked_builder.add_extension(
                    x509.CRLReason(reason), critical=False
                )
            builder = builder.add_revoked_certificate(revoked_builder.build())
        crl = builder.sign(self._key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self._certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def __repr__(self) -> str:
        return f"LocalCaIssuer(ca={self._certificate.subject.rfc4514_string()!r})"
