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
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ClientIdentity", "present"]


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
