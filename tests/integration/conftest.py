"""Fixtures shared by the integration tests of the device protocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.mqtt import MqttSession
from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from tests.integration.devices import Orchestrator


@pytest.fixture
def orchestrator(
    service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Orchestrator]:
    """A signing key of its own, sequences in the test Redis, a publisher on the test broker."""
    key = tmp_path / "signing-key.pem"
    generate_key_file(key)
    monkeypatch.setenv("CERTFLEET_SIGNING_KEY_FILE", str(key))
    container = bootstrap(Settings(), logging=False)
    session = MqttSession(container.settings)
    yield Orchestrator(container, session)
    session.close()
    container.close()
