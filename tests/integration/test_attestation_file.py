"""The attestation keys file is read once into P-256 public keys; a bad file stops with a
clear error naming what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from orchestrator.adapters.attestation_file import (
    AttestationKeysFileError,
    attestation_keys_document,
    attestation_keys_from_file,
)
from orchestrator.adapters.issuers import attestation_keys_from_settings
from orchestrator.config import Settings
from orchestrator.domain.identity_keys import spki_sha256
from tests.csr_fields import attestation_key

pytestmark = pytest.mark.integration


def pem(key: object) -> str:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "attestation.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_read_back_per_device(tmp_path: Path) -> None:
    """Each device's key reads back as the same public key; an absent device has none."""
    # given
    keys = {d: attestation_key(d).public_key() for d in ("dev-0001", "dev-0002")}
    path = written(tmp_path, attestation_keys_document(keys))
    # when
    loaded = attestation_keys_from_file(path)
    path.unlink()
    # then
    assert len(loaded) == 2
    found = loaded.key_for("dev-0002")
    assert found is not None
    assert spki_sha256(found) == spki_sha256(keys["dev-0002"])
    assert loaded.key_for("dev-0003") is None


def test_the_settings_build_the_file_keys(tmp_path: Path) -> None:
    """CERTFLEET_ATTESTATION_KEYS_FILE set: the keys come from this file; unset: none."""
    # given
    path = written(
        tmp_path, attestation_keys_document({"dev-1": attestation_key("dev-1").public_key()})
    )
    # when
    keys = attestation_keys_from_settings(Settings(attestation_keys_file=path))
    # then
    assert keys is not None
    assert keys.key_for("dev-1") is not None
    assert attestation_keys_from_settings(Settings(attestation_keys_file=None)) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("{not json", "not JSON", id="not-json"),
        pytest.param("[]", "JSON object", id="not-an-object"),
        pytest.param(json.dumps({"dev-1": 5}), "PEM text", id="not-text"),
        pytest.param(json.dumps({"dev-1": "hello"}), "not a PEM public key", id="not-pem"),
        pytest.param(json.dumps({"a/b": "x"}), "not a valid device id", id="bad-device-id"),
        pytest.param(
            json.dumps({"dev-1": pem(ec.generate_private_key(ec.SECP384R1()).public_key())}),
            "P-256",
            id="p384",
        ),
        pytest.param(
            json.dumps(
                {
                    "dev-1": pem(
                        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
                    )
                }
            ),
            "P-256",
            id="rsa",
        ),
        pytest.param(
            json.dumps(
                {
                    "dev-1": attestation_key("dev-1")
                    .private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                    .decode()
                }
            ),
            "private key",
            id="private-key",
        ),
    ],
)
def test_a_bad_file_is_refused_with_what_to_fix(tmp_path: Path, text: str, says: str) -> None:
    """A malformed file, a wrong key type or a private key stops the start, saying so."""
    # given
    path = written(tmp_path, text)
    # when / then
    with pytest.raises(AttestationKeysFileError, match=says) as raised:
        attestation_keys_from_file(path)
    assert str(path) in str(raised.value)
    assert "BEGIN" not in str(raised.value)


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    """No file at the path: the error names CERTFLEET_ATTESTATION_KEYS_FILE."""
    with pytest.raises(AttestationKeysFileError, match="CERTFLEET_ATTESTATION_KEYS_FILE"):
        attestation_keys_from_file(tmp_path / "absent.json")
