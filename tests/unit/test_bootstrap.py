"""The container hands each service the settings it is built from."""

from __future__ import annotations

from pathlib import Path

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.bootstrap import bootstrap
from orchestrator.config import Settings


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
