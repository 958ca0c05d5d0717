"""The root signer and the delegations' scope come from settings, with errors naming the
setting to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adapters.file_signer import FileSigner, generate_key_file
from orchestrator.adapters.pkcs11_signer import PinFileError, Pkcs11ModuleError
from orchestrator.adapters.root_signers import (
    RootSignerNotConfiguredError,
    delegation_scope_from_settings,
    root_signer_from_settings,
)
from orchestrator.config import Settings
from orchestrator.protocol.cose import key_id
from orchestrator.protocol.delegation import DelegationError, Scope

pytestmark = pytest.mark.unit


def test_the_dev_file_root_is_the_key_file(tmp_path: Path) -> None:
    """CERTFLEET_ROOT_SIGNER=dev-file signs with CERTFLEET_SIGNING_KEY_FILE, as before."""
    public = generate_key_file(tmp_path / "root.pem")
    signer = root_signer_from_settings(
        Settings(root_signer="dev-file", signing_key_file=tmp_path / "root.pem")
    )
    assert isinstance(signer, FileSigner)
    assert signer.key_id == key_id(public)
    assert signer.delegation_for(2**31) is None


def test_pkcs11_without_its_settings_names_what_is_missing(tmp_path: Path) -> None:
    """pkcs11 without module, token or PIN file names each missing setting."""
    with pytest.raises(RootSignerNotConfiguredError) as missing:
        root_signer_from_settings(Settings(root_signer="pkcs11"))
    message = str(missing.value)
    for name in ("CERTFLEET_PKCS11_MODULE", "CERTFLEET_PKCS11_TOKEN", "CERTFLEET_PKCS11_PIN_FILE"):
        assert name in message
    with pytest.raises(RootSignerNotConfiguredError, match="PIN_FILE") as only_pin:
        root_signer_from_settings(
            Settings(root_signer="pkcs11", pkcs11_module=tmp_path / "m.so", pkcs11_token="t")
        )
    assert "PKCS11_MODULE" not in str(only_pin.value)


def test_pkcs11_checks_module_and_pin_file_without_touching_a_token(tmp_path: Path) -> None:
    """A missing module or PIN file is refused when the signer is built."""
    settings = Settings(
        root_signer="pkcs11",
        pkcs11_module=tmp_path / "absent.so",
        pkcs11_token="t",
        pkcs11_pin_file=tmp_path / "pin",
    )
    with pytest.raises(Pkcs11ModuleError, match="no PKCS#11 module"):
        root_signer_from_settings(settings)
    module = tmp_path / "module.so"
    module.write_bytes(b"")
    with pytest.raises(PinFileError, match="no PIN file"):
        root_signer_from_settings(
            Settings(
                root_signer="pkcs11",
                pkcs11_module=module,
                pkcs11_token="t",
                pkcs11_pin_file=tmp_path / "pin",
            )
        )


def test_the_default_scope_is_every_delegable_op_and_ca_and_client_certs() -> None:
    """The defaults delegate stage..keygen for CA chains and client certificates, any rollout."""
    assert delegation_scope_from_settings(Settings()) == Scope(
        ("stage", "commit", "rollback", "retire", "keygen"), (0, 1), ()
    )


def test_scope_lists_are_trimmed() -> None:
    """Spaces and empty items in the comma lists are ignored."""
    scope = delegation_scope_from_settings(
        Settings(
            delegation_ops=" stage, commit ,",
            delegation_kinds="0, 1,5",
            delegation_rollouts="r-1, r-2",
        )
    )
    assert scope == Scope(("stage", "commit"), (0, 1, 5), ("r-1", "r-2"))


@pytest.mark.parametrize(
    ("field", "value", "setting", "words"),
    [
        ("delegation_ops", "stage,trust-signer", "CERTFLEET_DELEGATION_OPS", "root key only"),
        ("delegation_ops", "stage,revoke", "CERTFLEET_DELEGATION_OPS", "root key only"),
        ("delegation_ops", "stage,deploy", "CERTFLEET_DELEGATION_OPS", "distinct operations"),
        ("delegation_ops", "stage,stage", "CERTFLEET_DELEGATION_OPS", "distinct operations"),
        ("delegation_ops", "", "CERTFLEET_DELEGATION_OPS", "1 to 5"),
        ("delegation_kinds", "0,ca", "CERTFLEET_DELEGATION_KINDS", "0 to 5"),
        ("delegation_kinds", "0,6", "CERTFLEET_DELEGATION_KINDS", "credential types"),
        ("delegation_kinds", "1,1", "CERTFLEET_DELEGATION_KINDS", "distinct"),
        ("delegation_kinds", "", "CERTFLEET_DELEGATION_KINDS", "1 to 6"),
        ("delegation_rollouts", "a,b,c,d,e", "CERTFLEET_DELEGATION_ROLLOUTS", "at most 4"),
        ("delegation_rollouts", "a,a", "CERTFLEET_DELEGATION_ROLLOUTS", "distinct"),
        ("delegation_rollouts", "x" * 65, "CERTFLEET_DELEGATION_ROLLOUTS", "64 bytes"),
    ],
)
def test_a_bad_scope_setting_is_named(field: str, value: str, setting: str, words: str) -> None:
    """Each bad list is refused with the setting's name and what it takes."""
    with pytest.raises(DelegationError, match=words) as refused:
        delegation_scope_from_settings(Settings(**{field: value}))  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"{setting}: ")
