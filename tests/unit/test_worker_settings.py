"""A worker refuses to start on a bad identity setting, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.app import check_worker_settings

pytestmark = pytest.mark.unit


def test_a_bad_attestation_keys_file_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not JSON: SystemExit with the file's setting's problem, before any task runs."""
    bad = tmp_path / "attestation.json"
    bad.write_text("not json")
    monkeypatch.setenv("CERTFLEET_ATTESTATION_KEYS_FILE", str(bad))
    with pytest.raises(SystemExit, match=r"certfleet worker: .*attestation"):
        check_worker_settings()


def test_a_half_set_issuer_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA certificate without its key: SystemExit naming both settings."""
    monkeypatch.setenv("CERTFLEET_ISSUER_CA_CERT_FILE", "/nonexistent/ca.pem")
    monkeypatch.delenv("CERTFLEET_ISSUER_CA_KEY_FILE", raising=False)
    with pytest.raises(SystemExit, match="CERTFLEET_ISSUER_CA_KEY_FILE"):
        check_worker_settings()


def test_no_identity_settings_start_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing about identities configured: nothing to check, the worker starts."""
    for name in (
        "CERTFLEET_ATTESTATION_KEYS_FILE",
        "CERTFLEET_ISSUER_CA_CERT_FILE",
        "CERTFLEET_ISSUER_CA_KEY_FILE",
        "CERTFLEET_CRL_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    check_worker_settings()
