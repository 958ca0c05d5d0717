"""The token signer's PIN file: the first line, of a file nobody else may read; and a signer
is built without touching the token (its module and PIN file are checked at once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adapters.pkcs11_signer import (
    PinFileError,
    Pkcs11ModuleError,
    Pkcs11RootSigner,
    read_pin_file,
)

pytestmark = pytest.mark.unit


def pin_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    """A PIN file with `text` and `mode`."""
    path = tmp_path / "user.pin"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("text", "pin"),
    [("123456\n", "123456"), ("  s3cret  \r\n", "s3cret"), ("first\nsecond\n", "first")],
)
def test_the_pin_is_the_first_line_trimmed(tmp_path: Path, text: str, pin: str) -> None:
    """Trailing newline and spaces are not part of the PIN; later lines are ignored."""
    assert read_pin_file(pin_file(tmp_path, text)) == pin


def test_a_read_only_file_of_its_owner_is_fine(tmp_path: Path) -> None:
    """Mode 0400 is stricter than 0600 and accepted."""
    assert read_pin_file(pin_file(tmp_path, "1234\n", 0o400)) == "1234"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601])
def test_a_pin_file_open_to_others_is_refused_without_reading_it(tmp_path: Path, mode: int) -> None:
    """Any group or other permission: refused with the chmod to run, never the PIN."""
    with pytest.raises(PinFileError, match="chmod 600") as refused:
        read_pin_file(pin_file(tmp_path, "987654\n", mode))
    assert "987654" not in str(refused.value)


def test_missing_empty_or_directory_pin_files_say_what_to_do(tmp_path: Path) -> None:
    """Each names CERTFLEET_PKCS11_PIN_FILE or what to write."""
    with pytest.raises(PinFileError, match="CERTFLEET_PKCS11_PIN_FILE"):
        read_pin_file(tmp_path / "absent")
    with pytest.raises(PinFileError, match="empty"):
        read_pin_file(pin_file(tmp_path, "\n"))
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(PinFileError, match="not a file"):
        read_pin_file(directory)


def test_a_signer_is_built_without_opening_the_token(tmp_path: Path) -> None:
    """With a module file and a PIN file present, construction reads nothing from a token
    (a file that is no PKCS#11 library is only found out at first use)."""
    module = tmp_path / "module.so"
    module.write_bytes(b"not loaded yet")
    signer = Pkcs11RootSigner(module, "token", "label", pin_file(tmp_path, "1234\n"))
    assert "not read yet" in repr(signer)
    assert signer.signatures == 0
    with pytest.raises(Pkcs11ModuleError, match="could not be loaded"):
        _ = signer.key_id
