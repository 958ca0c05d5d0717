"""Reason codes of device reports, and the error a refused bundle raises."""

from __future__ import annotations

import enum
from typing import Final

from orchestrator.domain.errors import CertfleetError

__all__ = ["UNVERIFIED_REASONS", "BundleRejectedError", "Reason", "bad_payload"]


class Reason(enum.StrEnum):
    """Reason codes of device reports (docs/protocol.md lists each with its meaning)."""

    OK = "ok"
    # rejected: the bundle was refused and nothing was written
    TOO_LARGE = "too_large"
    BAD_ENVELOPE = "bad_envelope"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_DELEGATION = "bad_delegation"
    """The bundle's delegation is malformed, breaks the rules of its payload, or is for
    another key than the one that signed the bundle (checks 4 and 5a)."""
    DELEGATION_REVOKED = "delegation_revoked"
    """The delegation's key id is revoked, or it was issued before the revocation time (5b)."""
    DELEGATION_EXPIRED = "delegation_expired"
    """The delegation is not valid now: past its `exp`, or its `nbf` is still ahead (5c)."""
    OUT_OF_SCOPE = "out_of_scope"
    """A delegated bundle its delegation does not cover: a root-only op, another op, a
    credential type or a rollout it does not name (7a)."""
    BAD_PAYLOAD = "bad_payload"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_DEVICE = "wrong_device"
    REPLAY = "replay"
    BUNDLE_EXPIRED = "bundle_expired"
    NOT_YET_VALID = "not_yet_valid"
    TAG_IN_USE = "tag_in_use"
    NOTHING_STAGED = "nothing_staged"
    INVALID_OPERATION = "invalid_operation"
    UNSAFE_ACTIVE = "unsafe_active"
    """The operation would leave the active list empty, over 7 tags, or naming a tag
    without a CA chain item."""
    NOTHING_TO_UNDO = "nothing_to_undo"
    """A rollback, and the device holds no undo record."""
    SUPERSEDED = "superseded"
    """A rollback whose rid is not the rid of the device's undo record."""
    KEY_MISMATCH = "key_mismatch"
    """An identity stage whose certificate does not carry the key the device's keygen made."""
    MODEM_ERROR = "modem_error"
    """The modem refused a write; the only rejection that may follow `received`."""
    # health_failed: the TLS probe with the staged trust failed
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    CHAIN_TOO_LARGE = "chain_too_large"
    TIMEOUT = "timeout"
    HANDSHAKE_ERROR = "handshake_error"
    IDENTITY_REFUSED = "identity_refused"
    """The server refused the staged client certificate (a TLS alert after the client sent it)."""
    # fallback: the device returned to its previous trust by itself
    COMMIT_TIMEOUT = "commit_timeout"
    BROKER_UNREACHABLE = "broker_unreachable"


UNVERIFIED_REASONS: Final[frozenset[Reason]] = frozenset(
    {
        Reason.BAD_ENVELOPE,
        Reason.UNSUPPORTED_ALGORITHM,
        Reason.UNKNOWN_KEY,
        Reason.BAD_SIGNATURE,
        Reason.BAD_DELEGATION,
        Reason.DELEGATION_REVOKED,
        Reason.DELEGATION_EXPIRED,
    }
)
"""The reasons of checks 2 to 5d (docs/protocol.md §4): the bundle's signature was not
verified with a trusted key, or its delegation not accepted, so its rejection names no
bundle. Check 1's `too_large` names none either, but `too_large` is also check 12's, which
names its bundle: a reader tells them apart by the bundle's size."""


class BundleRejectedError(CertfleetError):
    """A bundle the device must refuse; `reason` goes into the `rejected` report."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def bad_payload(detail: str) -> BundleRejectedError:
    """The refusal of a payload that breaks the rules of docs/protocol.md §3."""
    return BundleRejectedError(Reason.BAD_PAYLOAD, detail)
