"""The one error root of certfleet and its specific subclasses."""

from __future__ import annotations

__all__ = [
    "BundleTooLargeError",
    "CaChainTooLargeError",
    "CertfleetError",
    "DelegationUnavailableError",
    "DeviceUnknownError",
    "InvalidCredentialError",
    "InvalidGateInputError",
    "InvalidRolloutSpecError",
    "InvalidSecTagError",
    "IssuerRefusedError",
    "IssuerUnavailableError",
    "SigningKeyError",
    "StoreUnavailableError",
    "TransientError",
]


class CertfleetError(Exception):
    """Base of every error certfleet raises on purpose."""


class InvalidSecTagError(CertfleetError, ValueError):
    """A sec_tag outside the range a modem accepts."""


class InvalidCredentialError(CertfleetError, ValueError):
    """Content that is not a credential certfleet can use."""


class CaChainTooLargeError(InvalidCredentialError):
    """A CA chain item larger than the modem stores; refused before anything is sent."""


class BundleTooLargeError(CertfleetError, ValueError):
    """A signed bundle over the contract's size limit; never sent (a device would refuse it)."""


class TransientError(CertfleetError):
    """A dependency is unreachable for now; the operation may be retried as it is."""


class StoreUnavailableError(TransientError):
    """The state store (Redis) could not be reached; the operation may be retried."""


class IssuerUnavailableError(TransientError):
    """The certificate issuer could not be reached or failed for now; retried with backoff."""


class IssuerRefusedError(CertfleetError):
    """The certificate issuer refused the request for good (its answer says why)."""


class SigningKeyError(CertfleetError):
    """The bundle signing key is missing, unreadable, exposed or of the wrong kind."""


class DelegationUnavailableError(TransientError):
    """A worker has no delegation from the root key that covers the bundle it would sign.

    Nothing is signed or sent: the push stops and its task is retried later, when the
    root key (its token) may answer again.
    """


class DeviceUnknownError(CertfleetError):
    """certfleet has no record of the device."""


class InvalidRolloutSpecError(CertfleetError, ValueError):
    """A rollout spec (waves, selector, window, tags, thresholds) that cannot be run."""


class InvalidGateInputError(CertfleetError, ValueError):
    """Rollout counters a gate cannot judge: negative counts or unknown device states."""
