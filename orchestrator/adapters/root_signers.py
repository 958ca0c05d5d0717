"""The root signer and the delegations' scope, from settings.

`CERTFLEET_ROOT_SIGNER=pkcs11` (the deployments): the root key in a PKCS#11 token
(`Pkcs11RootSigner`); `dev-file` (development only): the P-256 key file
`CERTFLEET_SIGNING_KEY_FILE` (`FileSigner`). The root signs delegations and the root-only
operations (trust-signer, revoke); workers sign bundles under their delegation, whose
scope `CERTFLEET_DELEGATION_OPS`, `_KINDS` and `_ROLLOUTS` give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.file_signer import FileSigner
from orchestrator.adapters.pkcs11_signer import Pkcs11RootSigner
from orchestrator.config import Settings
from orchestrator.domain.errors import SigningKeyError
from orchestrator.protocol.delegation import DelegationError, Scope

__all__ = [
    "RootSigner",
    "RootSignerNotConfiguredError",
    "delegation_scope_from_settings",
    "parse_delegation_kinds",
    "parse_delegation_ops",
    "parse_delegation_rollouts",
    "root_signer_from_settings",
]


class RootSignerNotConfiguredError(SigningKeyError):
    """CERTFLEET_ROOT_SIGNER=pkcs11 without the module, token or PIN file to reach it."""


class RootSigner(Protocol):
    """A root key: signs delegations and root operations (ES256, raw r||s), never under a
    delegation; its public key is what devices are provisioned to trust."""

    @property
    def key_id(self) -> bytes:
        """The COSE key id devices look the root key up by."""
        ...

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half."""
        ...

    def sign(self, to_be_signed: bytes, /) -> bytes:
        """ES256 over the to-be-signed bytes: the raw 64-byte r||s."""
        ...

    def delegation_for(self, expires_at: int) -> bytes | None:
        """Always None: a root key signs directly."""
        ...


def root_signer_from_settings(settings: Settings) -> RootSigner:
    """The configured root signer; nothing is read from the token before its first use."""
    if settings.root_signer == "dev-file":
        return FileSigner(settings.signing_key_file)
    module, token, pin_file = (
        settings.pkcs11_module,
        settings.pkcs11_token,
        settings.pkcs11_pin_file,
    )
    if module is None or not token or pin_file is None:
        missing = [
            name
            for name, value in (
                ("CERTFLEET_PKCS11_MODULE", module),
                ("CERTFLEET_PKCS11_TOKEN", token),
                ("CERTFLEET_PKCS11_PIN_FILE", pin_file),
            )
            if not value
        ]
        raise RootSignerNotConfiguredError(
            f"CERTFLEET_ROOT_SIGNER=pkcs11 needs {', '.join(missing)} (the token's PKCS#11 "
            "module, its label and a 0600 file holding its user PIN); or set "
            "CERTFLEET_ROOT_SIGNER=dev-file for development"
        )
    return Pkcs11RootSigner(module, token, settings.pkcs11_key_label, pin_file)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_delegation_ops(text: str) -> tuple[str, ...]:
    """`CERTFLEET_DELEGATION_OPS`: operations a delegated key may sign, e.g. `stage,commit`."""
    ops = tuple(_items(text))
    _check("CERTFLEET_DELEGATION_OPS", lambda: Scope(ops, (0,)))
    return ops


def parse_delegation_kinds(text: str) -> tuple[int, ...]:
    """`CERTFLEET_DELEGATION_KINDS`: credential types (0..5) a delegated stage may carry."""
    try:
        kinds = tuple(int(item) for item in _items(text))
    except ValueError:
        raise DelegationError(
            f"CERTFLEET_DELEGATION_KINDS: it takes credential types 0 to 5 separated by commas "
            f"(0 CA chain, 1 client certificate, ...), not {text!r}"
        ) from None
    _check("CERTFLEET_DELEGATION_KINDS", lambda: Scope(("stage",), kinds))
    return kinds


def parse_delegation_rollouts(text: str) -> tuple[str, ...]:
    """`CERTFLEET_DELEGATION_ROLLOUTS`: rollout ids a delegation is limited to (none: any)."""
    rollouts = tuple(_items(text))
    _check("CERTFLEET_DELEGATION_ROLLOUTS", lambda: Scope(("stage",), (0,), rollouts))
    return rollouts


def _check(setting: str, build: Callable[[], Scope]) -> None:
    try:
        build()
    except DelegationError as exc:
        raise DelegationError(f"{setting}: {exc}") from None


def delegation_scope_from_settings(settings: Settings) -> Scope:
    """The scope of every worker's delegation, from the three comma lists."""
    return Scope(
        parse_delegation_ops(settings.delegation_ops),
        parse_delegation_kinds(settings.delegation_kinds),
        parse_delegation_rollouts(settings.delegation_rollouts),
    )
