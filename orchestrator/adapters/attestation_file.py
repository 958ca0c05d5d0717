"""The modems' attestation keys from a JSON file (`CERTFLEET_ATTESTATION_KEYS_FILE`).

The file is what provisioning knows of each modem: a JSON object mapping a device id to
the PEM of its attestation public key,

    {"dev-0001": "-----BEGIN PUBLIC KEY-----\\n...\\n-----END PUBLIC KEY-----\\n", ...}

It is read once per process; a file that is missing, not such an object, or holds a key
that is not P-256 (the only kind a modem attests with, ES256) raises an error naming the
device and what to fix, rather than leave that device's CSRs unattested. Only public keys
are read: a private key in the file is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.topics import is_valid_device_id

__all__ = [
    "AttestationKeysFileError",
    "FileAttestationKeys",
    "attestation_keys_document",
    "attestation_keys_from_file",
]


class AttestationKeysFileError(CertfleetError, ValueError):
    """The attestation keys file cannot be used as it is (the text says what to fix)."""


def _public_key(path: Path, device_id: str, pem: object) -> ec.EllipticCurvePublicKey:
    where = f"{path}: device {device_id!r}"
    if not isinstance(pem, str):
        raise AttestationKeysFileError(f"{where}: the key must be a PEM text string")
    if "PRIVATE KEY" in pem:
        raise AttestationKeysFileError(
            f"{where}: this is a private key; the file holds the modems' public keys only"
        )
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise AttestationKeysFileError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationKeysFileError(
            f"{where}: the key is {type(key).__name__}; a modem attests with a P-256 key only"
        )
    return key


def _read(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise AttestationKeysFileError(
            f"cannot read the attestation keys file {path} ({exc}); fix "
            "CERTFLEET_ATTESTATION_KEYS_FILE or unset it to check CSRs without attestation"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AttestationKeysFileError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise AttestationKeysFileError(
            f"{path} must hold a JSON object of device id -> PEM public key, "
            f"not a {type(document).__name__}"
        )
    keys = {}
    for device_id, pem in document.items():
        if not is_valid_device_id(device_id):
            raise AttestationKeysFileError(f"{path}: {device_id!r} is not a valid device id")
        keys[device_id] = _public_key(path, device_id, pem)
    return keys


class FileAttestationKeys:
    """`AttestationKeys` read once from a file; a device absent from it has none."""

    def __init__(self, path: Path) -> None:
        self._keys: Mapping[str, ec.EllipticCurvePublicKey] = MappingProxyType(_read(path))

    def __len__(self) -> int:
        return len(self._keys)

    def key_for(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """The device's attestation key, or None when the file has none for it."""
        return self._keys.get(device_id)


def attestation_keys_from_file(path: Path) -> FileAttestationKeys:
    """The attestation keys in `path` (what `issuers.attestation_keys_from_settings` builds).

    Raises:
        AttestationKeysFileError: the file is missing, malformed or holds a wrong key.
    """
    return FileAttestationKeys(path)


def attestation_keys_document(keys: Mapping[str, ec.EllipticCurvePublicKey]) -> str:
    """The file's JSON for these keys (provisioning tools and tests write it with this)."""
    return json.dumps(
        {
            device_id: key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii")
            for device_id, key in sorted(keys.items())
        },
        indent=1,
    )
