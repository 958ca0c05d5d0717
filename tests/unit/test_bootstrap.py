"""The container hands each service the settings it is built from."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

import workers.app
from orchestrator.adapters import delegated_signer
from orchestrator.adapters.delegated_signer import DelegatedSigner, RootBundleSigner
from orchestrator.adapters.file_signer import FileSigner, generate_key_file
from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings
from orchestrator.domain.errors import SigningKeyError
from orchestrator.protocol.cose import key_id
from workers.app import prepare_delegation


def test_pushes_take_the_undo_window_from_settings(tmp_path: Path) -> None:
    """CERTFLEET_UNDO_WINDOW_SECONDS reaches the push (a v2 commit's undo_by)."""
    # given settings with an undo window of one hour (no Redis is contacted to build deps)
    key = tmp_path / "signing-key.pem"
    generate_key_file(key)
    settings = Settings(undo_window_seconds=3600, signing_key_file=key)
    container = bootstrap(settings, logging=False)
    try:
        # when the push dependencies are built, then they carry that window
        assert container.push_deps().undo_window_seconds == 3600
    finally:
        container.close()


def test_bundles_are_signed_under_a_delegation_of_the_root_by_default(tmp_path: Path) -> None:
    """By default the bundle signer is this process's own key delegated by the root key file
    for CERTFLEET_DELEGATION_HOURS, within the configured scope; nothing is signed yet."""
    # given
    key = tmp_path / "signing-key.pem"
    root_public = generate_key_file(key)
    settings = Settings(signing_key_file=key, delegation_hours=30, delegation_kinds="0")
    container = bootstrap(settings, logging=False)
    try:
        # when
        signer = container.signer
        # then
        assert isinstance(signer, DelegatedSigner)
        assert container.root_signer.key_id == key_id(root_public) != signer.key_id
        assert signer.delegation is None
        assert signer._lifetime == 30 * 3600
        assert signer._scope.kinds == (0,)
    finally:
        container.close()


def test_zero_delegation_hours_signs_bundles_with_the_root(tmp_path: Path) -> None:
    """CERTFLEET_DELEGATION_HOURS=0 (development): the root key signs bundles itself."""
    # given
    key = tmp_path / "signing-key.pem"
    root_public = generate_key_file(key)
    container = bootstrap(Settings(signing_key_file=key, delegation_hours=0), logging=False)
    try:
        # when
        signer = container.signer
        # then
        assert isinstance(signer, RootBundleSigner)
        assert signer.key_id == key_id(root_public)
        assert signer.delegation_for(0) is None
    finally:
        container.close()


def test_a_worker_without_its_delegation_at_start_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At worker process start the delegation is asked for; a root key that does not answer
    is logged (no key material), not raised."""
    # given a root whose token is away
    key = tmp_path / "signing-key.pem"
    generate_key_file(key)
    container = bootstrap(Settings(signing_key_file=key), logging=False)
    container.__dict__["root_signer"] = _TokenAway(FileSigner(key))
    try:
        captured = structlog.testing.CapturingLogger()  # whatever level logging is at
        monkeypatch.setattr(delegated_signer, "log", captured)
        monkeypatch.setattr(workers.app, "log", captured)
        # when
        prepare_delegation(container)
        logs = [{"event": c.args[0], **c.kwargs} for c in captured.calls]
        # then
        events = [e["event"] for e in logs]
        assert events == ["delegation_renewal_failed", "delegation_unavailable_at_start"]
        assert logs[-1]["error"] == "DelegationUnavailableError"
        assert "PRIVATE" not in repr(logs)
    finally:
        container.close()


class _TokenAway:
    """A root key whose token does not answer."""

    def __init__(self, root: FileSigner) -> None:
        self._root = root

    @property
    def key_id(self) -> bytes:
        return self._root.key_id

    def sign(self, to_be_signed: bytes) -> bytes:
        raise SigningKeyError("CKR_TOKEN_NOT_PRESENT: the token is away")
