"""`certfleet crl refresh` and `crl list` against the test Redis and a CRL file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from orchestrator.bootstrap import Container
from orchestrator.cli.crl import crl_app
from orchestrator.domain.identity import RevokedCertificate
from simulator.pki import make_ca

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
def crl_env(service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local issuer's CA files and the CRL file, in the settings; returns the CRL path."""
    ca = make_ca(
        "Device CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=90)
    )
    cert, key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert.write_bytes(ca.pem)
    key.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    crl = tmp_path / "crl" / "devices.crl.pem"
    crl.parent.mkdir()
    monkeypatch.setenv("CERTFLEET_ISSUER_CA_CERT_FILE", str(cert))
    monkeypatch.setenv("CERTFLEET_ISSUER_CA_KEY_FILE", str(key))
    monkeypatch.setenv("CERTFLEET_CRL_FILE", str(crl))
    monkeypatch.setenv("CERTFLEET_LOG_LEVEL", "WARNING")  # stdout holds the JSON alone
    return crl


def test_refresh_writes_the_crl_of_what_was_revoked(crl_env: Path, container: Container) -> None:
    """An empty CRL first; after a revocation it lists that serial, and `list` shows it."""
    runner = CliRunner()
    first = runner.invoke(crl_app, ["refresh", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["entries"] == 0
    assert list(x509.load_pem_x509_crl(crl_env.read_bytes())) == []

    container.identity.add_revoked(
        [
            RevokedCertificate(
                serial=0xC0FFEE,
                revoked_at=NOW,
                not_after=NOW + timedelta(days=30),
                device_id="dev-1",
            )
        ]
    )
    second = runner.invoke(crl_app, ["refresh"])
    assert second.exit_code == 0, second.output
    assert [r.serial_number for r in x509.load_pem_x509_crl(crl_env.read_bytes())] == [0xC0FFEE]
    listed = runner.invoke(crl_app, ["list", "--json"])
    assert [(r["serial"], r["device_id"]) for r in json.loads(listed.output)] == [
        ("c0ffee", "dev-1")
    ]


def test_refresh_without_a_crl_file_says_what_to_set(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CERTFLEET_CRL_FILE: exit 1 naming the setting, nothing written."""
    monkeypatch.delenv("CERTFLEET_CRL_FILE", raising=False)
    result = CliRunner().invoke(crl_app, ["refresh"])
    assert result.exit_code == 1
    assert "CERTFLEET_CRL_FILE" in result.output
