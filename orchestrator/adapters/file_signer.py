"""The file signer: a P-256 private key in a 0600 PEM file (a development root key)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.errors import SigningKeyError
from orchestrator.protocol.cose import es256_sign, key_id

__all__ = ["FileSigner", "generate_key_file", "load_public_key"]


def _check_private_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SigningKeyError(
            f"no signing key at {path}; create one with `certfleet keys generate --out {path}` "
            "or point CERTFLEET_SIGNING_KEY_FILE at yours"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    _check_private_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"{path} must hold a P-256 (ES256) key")
    return key


class FileSigner:
    """`BundleSigner` over a key file; the key never leaves this object or reaches a log."""

    def __init__(self, path: Path) -> None:
        self._key = _load_private_key(path)
        self._kid = key_id(self._key.public_key())

    @property
    def key_id(self) -> bytes:
        """Key id of the public half."""
        return self._kid

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, to provision into devices."""
        return self._key.public_key()

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256, raw r||s."""
        return es256_sign(self._key, to_be_signed)

    def delegation_for(self, expires_at: int) -> bytes | None:
        """None: this is a root key, its bundles carry no delegation."""
        return None

    def __repr__(self) -> str:
        return f"FileSigner(kid={self._kid.hex()})"


def generate_key_file(path: Path, *, overwrite: bool = False) -> ec.EllipticCurvePublicKey:
    """Create a new P-256 key in `path`, mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} exists; pass --force to replace it") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(pem)
    return key.public_key()


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from a PEM file (public key, or the private key file itself)."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return _load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"{path} must hold a P-256 public key")
    return key
