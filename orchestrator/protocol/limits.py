"""The version and every size limit of the device contract (docs/protocol.md §3, Limits).

A firmware sizes its static buffers from these, so each is a named constant that both
sides enforce: the device refuses a bundle past one with its reason, the orchestrator
refuses to build one.
"""

from __future__ import annotations

from typing import Final

from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES

__all__ = [
    "CA_CHAIN_MAX_BYTES",
    "CERT_ITEM_MAX_BYTES",
    "CLOCK_SKEW_SECONDS",
    "CREDS_MAX",
    "CSR_DER_MAX_BYTES",
    "CSR_FIELD_MAX_BYTES",
    "DETAIL_MAX_BYTES",
    "DEVICE_ID_MAX_CHARS",
    "MAX_BUNDLE_BYTES",
    "PROBE_HOST_MAX_BYTES",
    "PROTOCOL_VERSION",
    "QUEUED_BUNDLES_MAX",
    "REVOKED_KIDS_MAX",
    "RID_MAX_BYTES",
    "SIGNERS_MAX",
    "STATE_CREDENTIALS_MAX",
    "SUBJECT_MAX_BYTES",
    "SUPPORTED_VERSIONS",
    "TAG_LIST_MAX",
]

PROTOCOL_VERSION: Final = 2
"""The version this code speaks: bundles it builds and messages a v2 device sends carry it."""
SUPPORTED_VERSIONS: Final[tuple[int, ...]] = (1, 2)
"""Bundle versions a v2 device accepts (a v1 bundle carries no v2-only key)."""

CLOCK_SKEW_SECONDS: Final = 300
"""How far ahead of a device's clock a bundle's issued-at or a delegation's not-before may
lie (device clocks drift)."""
MAX_BUNDLE_BYTES: Final = 6 * 1024
"""The whole COSE_Sign1 as received; a device refuses a larger one before decoding it.

Contract v2 lowered it from v1's 12288 so that a device's RAM, this buffer included,
fits 8 KB (docs/protocol.md §3, Limits): the largest bundle certfleet builds is 4770
bytes, and a v1 device, which accepts up to 12288, gets nothing larger either.
"""
DEVICE_ID_MAX_CHARS: Final = 64
"""`dev`: the device id rules of docs/protocol.md §1."""
RID_MAX_BYTES: Final = 64
"""`rid`: UTF-8 bytes; may be empty (a manual send)."""
CREDS_MAX: Final = 4
"""`creds`: entries, at most one per credential type."""
PROBE_HOST_MAX_BYTES: Final = 253
"""`probe.host`: UTF-8 bytes (a DNS name's longest text form)."""
TAG_LIST_MAX: Final = 7
"""`probe.tags`, `active`, `tags`: distinct sec_tags; a modem socket takes at most 7."""
SIGNERS_MAX: Final = 4
"""Trusted signer keys a device holds; a trust-signer past it is `invalid_operation`."""
REVOKED_KIDS_MAX: Final = 8
"""Revoked delegated key ids a device keeps (a revoke's `kids`: 0 to 8, the whole list)."""
QUEUED_BUNDLES_MAX: Final = 4
"""Bundles in flight to a device: it connects with MQTT Receive Maximum 4."""
DETAIL_MAX_BYTES: Final = 1024
"""A report's `detail`, UTF-8 bytes; the device truncates a longer text."""
STATE_CREDENTIALS_MAX: Final = 256
"""Entries of a state message's `credentials`."""
CERT_ITEM_MAX_BYTES: Final = CA_CHAIN_MAX_BYTES
"""A client certificate item (type 1) in an identity stage: PEM bytes, counted like a CA item."""
SUBJECT_MAX_BYTES: Final = 64
"""`subject` of a `keygen` bundle: UTF-8 bytes of the CSR's common name (the device id)."""
CSR_DER_MAX_BYTES: Final = 1024
"""The CSR a `%KEYGEN` makes, DER bytes (a P-256 CSR with a 64-character CN is about 250)."""
CSR_FIELD_MAX_BYTES: Final = 2048
"""A `csr` report's `csr` field: `base64url(CSR DER).base64url(COSE_Sign1)`, bytes."""
