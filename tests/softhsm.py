"""A SoftHSM2 token in a temporary directory, holding certfleet's root key in tests.

    @pytest.fixture
    def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
        with softhsm_token(tmp_path / "hsm") as token:   # skips the test without softhsm2
            yield token

    token.create_root()      # the root pair, made in the token as `certfleet keys create-root` does
    token.import_root(key)   # or a known P-256 key (a test that searches records for its scalar)
    token.env                # CERTFLEET_ROOT_SIGNER=pkcs11, CERTFLEET_PKCS11_MODULE/_TOKEN/
                             # _KEY_LABEL/_PIN_FILE and SOFTHSM2_CONF: for subprocesses
    token.signer()           # a Pkcs11RootSigner over it, in this process
    token.settings()         # Settings() with token.env on top of the environment

Inside the `with`, `token.env` is also set in os.environ (this process and the children it
starts), and the PKCS#11 module is re-initialized so it reads this token's SOFTHSM2_CONF;
on exit both are undone. The token lives in its own directory (`directories.tokendir`),
its user PIN in a 0600 file beside it. Debian's package: `apt-get install softhsm2`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass

from orchestrator.adapters.pkcs11_signer import (
    P256_EC_PARAMS,
    Pkcs11RootSigner,
    create_root_key,
    release_tokens,
)
from orchestrator.config import Settings
from orchestrator.protocol.cose import key_id

__all__ = ["SoftHsmToken", "softhsm_module", "softhsm_token"]

MODULE_CANDIDATES: Final = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
SKIP_REASON: Final = "softhsm2 is not installed (apt-get install softhsm2; .ci/run installs it)"


def softhsm_module() -> Path | None:
    """SoftHSM2's PKCS#11 module on this machine, or None."""
    for candidate in MODULE_CANDIDATES:
        if candidate.is_file():
            return candidate
    for package in ("softhsm2", "libsofthsm2"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", package], capture_output=True, text=True, check=False, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in listing.splitlines():
            if line.endswith("/libsofthsm2.so") and Path(line).is_file():
                return Path(line)
    return None


@dataclass(frozen=True)
class SoftHsmToken:
    """One initialized SoftHSM2 token of a test (see the module docstring)."""

    directory: Path
    module: Path
    label: str
    key_label: str
    pin_file: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        """The settings that make certfleet's root signer this token, and SOFTHSM2_CONF."""
        return {
            "CERTFLEET_ROOT_SIGNER": "pkcs11",
            "CERTFLEET_PKCS11_MODULE": str(self.module),
            "CERTFLEET_PKCS11_TOKEN": self.label,
            "CERTFLEET_PKCS11_KEY_LABEL": self.key_label,
            "CERTFLEET_PKCS11_PIN_FILE": str(self.pin_file),
            "SOFTHSM2_CONF": str(self.conf),
        }

    def settings(self, **overrides: object) -> Settings:
        """Settings of this environment with this token as the root signer."""
        values: dict[str, object] = {
            "root_signer": "pkcs11",
            "pkcs11_module": self.module,
            "pkcs11_token": self.label,
            "pkcs11_key_label": self.key_label,
            "pkcs11_pin_file": self.pin_file,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]  # checked by pydantic

    def signer(self) -> Pkcs11RootSigner:
        """A root signer over this token's key pair."""
        return Pkcs11RootSigner(self.module, self.label, self.key_label, self.pin_file)

    def create_root(self, *, force: bool = False) -> ec.EllipticCurvePublicKey:
        """Make the root pair in the token (non-extractable, sensitive), as the CLI does."""
        return create_root_key(self.module, self.label, self.key_label, self.pin_file, force=force)

    def import_root(self, private_key: ec.EllipticCurvePrivateKey) -> bytes:
        """Put a known P-256 key into the token as the root pair (sensitive, non-extractable
        from then on); returns its key id. For tests that must know the scalar."""
        scalar = private_key.private_numbers().private_value.to_bytes(32, "big")
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        kid = key_id(private_key.public_key())
        release_tokens()  # PKCS#11 logs in per process: our own session, then a clean slate
        lib = pkcs11.lib(str(self.module))
        pin = self.pin_file.read_text().strip()
        with lib.get_token(token_label=self.label).open(user_pin=pin, rw=True) as session:
            common = {
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: P256_EC_PARAMS,
                Attribute.LABEL: self.key_label,
                Attribute.ID: kid,
                Attribute.TOKEN: True,
            }
            session.create_object(
                {
                    **common,
                    Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                    Attribute.VALUE: scalar,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                }
            )
            session.create_object(
                {
                    **common,
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.EC_POINT: b"\x04\x41" + point,
                    Attribute.VERIFY: True,
                }
            )
        lib.finalize()  # the next user initializes it afresh
        return kid


def _init_token(directory: Path, module: Path, label: str) -> SoftHsmToken:
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    pin = secrets.token_hex(8)
    pin_file = directory / "user.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pin + "\n")
    tool = shutil.which("softhsm2-util")
    assert tool is not None
    subprocess.run(
        [
            tool,
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return SoftHsmToken(
        directory=directory,
        module=module,
        label=label,
        key_label="certfleet-root",
        pin_file=pin_file,
        conf=conf,
    )


@contextmanager
def softhsm_token(
    directory: Path, *, label: str = "certfleet-test", set_env: bool = True
) -> Iterator[SoftHsmToken]:
    """A fresh token in `directory` (made if missing), skipping the test if SoftHSM2 is absent.

    With `set_env` (the default) its `env` is put into os.environ while inside; without,
    only subprocesses given `token.env` see it.
    """
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip(SKIP_REASON)
    token = _init_token(directory, module, label)
    saved = {name: os.environ.get(name) for name in token.env}
    if set_env:
        os.environ.update(token.env)
        release_tokens()  # the module reads SOFTHSM2_CONF when initialized: this token's
    try:
        yield token
    finally:
        release_tokens()
        if set_env:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
