"""A client certificate and key presented in a TLS handshake, as the modem presents its own.

The modem signs its handshakes with a key that never leaves it; in the simulator the key
is an object inside the process, and OpenSSL, through Python's `ssl`, loads a key only
from a file path. `present` hands it over through an anonymous in-memory file
(`memfd_create`), so the key is never written to disk, a log or a message; where that
call is missing, a private temporary directory removed at once.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ClientIdentity", "present", "unknown_identity"]


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A sec_tag's client certificate (PEM) and private key, for the simulator's TLS code only."""

    certificate_pem: bytes
    key: ec.EllipticCurvePrivateKey = field(repr=False)


@contextlib.contextmanager
def _memory_file(name: str, data: bytes) -> Iterator[str]:
    """A path that reads as `data` while the block runs, kept in memory where possible."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create(name, 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="certfleet-identity-") as directory:
        path = Path(directory) / name
        path.touch(mode=0o600)
        path.write_bytes(data)
        yield str(path)


def present(context: ssl.SSLContext, identity: ClientIdentity) -> None:
    """Make `context` present `identity` when the server asks for a client certificate."""
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with (
        _memory_file("client-cert.pem", identity.certificate_pem) as certfile,
        _memory_file("client-key.pem", key_pem) as keyfile,
    ):
        context.load_cert_chain(certfile, keyfile)


def unknown_identity(subject: str) -> ClientIdentity:
    """A self-signed certificate for `CN=<subject>` of a fresh key: what no broker trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return ClientIdentity(certificate.public_bytes(serialization.Encoding.PEM), key)
