"""Certificates made for simulations and tests: CAs with chosen validity windows, server
certificates, and the client certificates of devices' identities."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "IssuedCA",
    "IssuedCert",
    "issue_client_cert",
    "issue_intermediate",
    "issue_server_cert",
    "load_ca",
    "make_ca",
]


@dataclass(frozen=True, slots=True)
class IssuedCA:
    """A self-signed CA certificate and its key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        """The certificate, PEM-encoded."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str,
    *,
    not_before: datetime,
    not_after: datetime,
    organization: str = "certfleet simulation",
) -> IssuedCA:
    """A P-256 root CA valid from `not_before` through `not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedCA(certificate=certificate, key=key)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """An end-entity certificate and its key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        """The certificate, PEM-encoded."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _signed_by(
    issuer: IssuedCA,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """A builder for a certificate of `key` that `issuer` signs, with the key identifiers."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )


def _subject_alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server_cert(
    ca: IssuedCA,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    not_before: datetime,
    not_after: datetime,
) -> IssuedCert:
    """A P-256 TLS server certificate for `hosts` (IPs and DNS names), signed by `ca`.

    Signing ignores the CA's own validity, so an expired CA still issues.
    """
    if not hosts:
        raise ValueError("a server certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    certificate = (
        _signed_by(ca, subject, key, not_before=not_before, not_after=not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_subject_alt_name(host) for host in hosts]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCert(certificate=certificate, key=key)


def issue_intermediate(
    ca: IssuedCA,
    common_name: str,
    *,
    not_before: datetime,
    not_after: datetime,
) -> IssuedCA:
    """A P-256 intermediate CA signed by `ca`, to build chains of any length."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            *ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        _signed_by(ca, subject, key, not_before=not_before, not_after=not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCA(certificate=certificate, key=key)


def load_ca(cert_file: Path, key_file: Path) -> IssuedCA:
    """A CA from its PEM certificate and unencrypted PEM P-256 key files."""
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file} must hold an EC private key")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]  # an EC certificate, else not equal
        raise ValueError(f"{key_file} is not the key of {cert_file}")
    return IssuedCA(certificate=certificate, key=key)


def issue_client_cert(
    ca: IssuedCA,
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A TLS client certificate of `public_key` for `CN=<subject>`, signed by `ca`.

    The key is the device's (made in its modem): the CA never sees the private half.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
