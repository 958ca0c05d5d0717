"""The identity rotation's adapters, chosen and built from the settings (for bootstrap).

Each function returns None when the settings leave its part out, so a deployment that
never rotates identities starts without a CA key; a part configured by halves (a CA
certificate without its key, `cfssl` without a URL) is an error at start, not later.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from orchestrator.adapters.crl_file import CrlFilePublisher
from orchestrator.adapters.issuer_cfssl import CfsslIssuer
from orchestrator.adapters.issuer_local import LocalCaIssuer
from orchestrator.config import Settings
from orchestrator.domain.errors import CertfleetError
from orchestrator.ports.identity import AttestationKeys, CrlPublisher, CrlSigner, Issuer

__all__ = [
    "IssuerConfigError",
    "attestation_keys_from_settings",
    "crl_publisher_from_settings",
    "crl_signer_from_settings",
    "issuer_from_settings",
]

ATTESTATION_MODULE = "orchestrator.adapters.attestation_file"


class IssuerConfigError(CertfleetError, ValueError):
    """The issuer, CRL or attestation settings are incomplete or contradict each other."""


def _pair(cert: Path | None, key: Path | None, *, prefix: str) -> tuple[Path, Path] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise IssuerConfigError(
            f"set both {prefix}_CERT_FILE and {prefix}_KEY_FILE (the CA certificate and its key)"
        )
    return cert, key


def issuer_from_settings(settings: Settings) -> Issuer | None:
    """The configured `Issuer`: CFSSL, or the local CA (None when it has no CA files)."""
    if settings.issuer == "cfssl":
        if not settings.issuer_url:
            raise IssuerConfigError(
                "CERTFLEET_ISSUER=cfssl needs CERTFLEET_ISSUER_URL (e.g. http://cfssl:8888)"
            )
        return CfsslIssuer(
            settings.issuer_url,
            profile=settings.issuer_profile,
            timeout=settings.issuer_timeout_seconds,
        )
    files = _pair(
        settings.issuer_ca_cert_file, settings.issuer_ca_key_file, prefix="CERTFLEET_ISSUER_CA"
    )
    if files is None:
        return None
    return LocalCaIssuer(*files, cert_days=settings.issuer_cert_days)


def crl_signer_from_settings(settings: Settings) -> CrlSigner | None:
    """Who signs certfleet's CRL: the CRL CA when set, else the local issuer's CA, else None.

    With CFSSL the CRL CA is CFSSL's own CA (certificate and key), given to certfleet only
    to sign CRLs: CFSSL 1.2 makes none itself.
    """
    files = _pair(settings.crl_ca_cert_file, settings.crl_ca_key_file, prefix="CERTFLEET_CRL_CA")
    if files is not None:
        return LocalCaIssuer(*files)
    if settings.issuer == "local":
        issuer_files = _pair(
            settings.issuer_ca_cert_file, settings.issuer_ca_key_file, prefix="CERTFLEET_ISSUER_CA"
        )
        if issuer_files is not None:
            return LocalCaIssuer(*issuer_files, cert_days=settings.issuer_cert_days)
    return None


def crl_publisher_from_settings(settings: Settings) -> CrlPublisher | None:
    """The CRL file (and the broker to reload), or None when `CERTFLEET_CRL_FILE` is unset."""
    if settings.crl_file is None:
        if settings.crl_reload_pid_file is not None:
            raise IssuerConfigError(
                "CERTFLEET_CRL_RELOAD_PID_FILE is set but CERTFLEET_CRL_FILE is not"
            )
        return None
    return CrlFilePublisher(settings.crl_file, reload_pid_file=settings.crl_reload_pid_file)


def attestation_keys_from_settings(settings: Settings) -> AttestationKeys | None:
    """The modems' attestation keys from `CERTFLEET_ATTESTATION_KEYS_FILE`, None when unset."""
    if settings.attestation_keys_file is None:
        return None
    try:
        module: Any = importlib.import_module(ATTESTATION_MODULE)
    except ModuleNotFoundError:
        raise IssuerConfigError(
            "CERTFLEET_ATTESTATION_KEYS_FILE is set but this certfleet cannot read it"
        ) from None
    keys: AttestationKeys = module.attestation_keys_from_file(settings.attestation_keys_file)
    return keys
