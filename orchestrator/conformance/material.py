"""What the suite signs and stages besides the deployment's key: its own keys and certificates.

The temporary signer keys (trust-signer steps), the foreign key (never trusted), the
throwaway "bad" CA and filler certificates live only in the suite's memory; none of
them is ever left trusted by the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.protocol.cose import es256_sign, key_id

__all__ = [
    "IdentityIssuer",
    "KeyHolder",
    "SuiteKey",
    "chain_of_size",
    "foreign_identity",
    "throwaway_ca",
]


class KeyHolder(Protocol):
    """A signer the suite signs with: the deployment's (a file, an HSM) or one of its own."""

    @property
    def key_id(self) -> bytes:
        """The COSE key id."""
        ...

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, sent in trust-signer bundles."""
        ...

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256, raw r||s."""
        ...


@dataclass(frozen=True, slots=True)
class SuiteKey:
    """A P-256 key made for one run of the suite."""

    private: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> SuiteKey:
        """A fresh key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def key_id(self) -> bytes:
        """The COSE key id."""
        return key_id(self.private.public_key())

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half."""
        return self.private.public_key()

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256, raw r||s."""
        return es256_sign(self.private, to_be_signed)


def public_point(key: KeyHolder) -> bytes:
    """The uncompressed P-256 point a trust-signer bundle carries (`04||x||y`)."""
    return key.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _self_signed(common_name: str, now: datetime, *, padding: int = 0) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    units = [
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "f" * min(60, padding - n))
        for n in range(0, padding, 60)
    ]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), *units])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def throwaway_ca(now: datetime | None = None) -> str:
    """A self-signed CA that validates no server: the CA whose probe must fail."""
    return _self_signed("certfleet conformance throwaway CA", now or datetime.now(UTC))


def foreign_identity(device_id: str, now: datetime | None = None) -> str:
    """A client certificate for the device id and a key the device never made.

    An identity stage carrying it must be refused (`key_mismatch`): the certificate is
    not for the key the device's keygen made.
    """
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certfleet conformance")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class IdentityIssuer:
    """The CA the suite issues a device's new client certificate with (`--identity-ca`).

    The identity probe server, and a broker that requires client certificates, must
    accept what it issues: it stands in for certfleet's issuer, for one run.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, certificate_pem: bytes, key_pem: bytes) -> IdentityIssuer:
        """The CA from its PEM certificate and unencrypted PEM P-256 key.

        Raises:
            ValueError: not a certificate, not a P-256 key, or a key of another certificate.
        """
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("the identity CA's key must be an unencrypted P-256 key")
        if key.public_key() != certificate.public_key():
            raise ValueError("the identity CA's key is not the key of its certificate")
        return cls(certificate, key)

    def certify(self, csr_der: bytes, now: datetime | None = None) -> str:
        """A client certificate for the CSR's key and subject, valid for 30 days (PEM).

        Raises:
            ValueError: not a DER CSR.
        """
        now = now or datetime.now(UTC)
        csr = x509.load_der_x509_csr(csr_der)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()


def chain_of_size(first: str, size: int, *, filler: Callable[[int], str] | None = None) -> str:
    """`first` followed by filler CA certificates, exactly `size` bytes of PEM text.

    The last filler's name is lengthened until the text is within three bytes of
    `size`; newlines make up the rest (a PEM chain may end in blank lines).
    """
    now = datetime.now(UTC)
    make = filler or (lambda padding: _self_signed("certfleet filler", now, padding=padding))
    text = first
    while size - len(text) > 1200:  # room for one more filler of the longest name
        text += make(0)
    if len(text) > size:
        raise ValueError(f"the CA chain is already {len(text)} bytes, over {size}")
    for _attempt in range(8):  # signature lengths vary by a byte or two: try again
        for padding in range(700):
            candidate = text + make(padding)
            if 0 <= size - len(candidate) <= 3:
                return candidate + "\n" * (size - len(candidate))
            if len(candidate) > size:
                break
    return text + "\n" * (size - len(text))
