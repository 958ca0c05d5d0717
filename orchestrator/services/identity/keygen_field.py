"""Reading the `csr` field of a report: `base64url(CSR DER) "." base64url(COSE_Sign1)`.

The form belongs to the protocol (the `%KEYGEN` output, docs/protocol.md); until its
codec lives there, the CSR checks read it through these two functions only, so the
switch is one import.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from orchestrator.protocol.limits import CSR_DER_MAX_BYTES, CSR_FIELD_MAX_BYTES

__all__ = [
    "AttestationClaims",
    "KeygenFieldError",
    "KeygenOutput",
    "decode_attestation_claims",
    "split_keygen_field",
]

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_CSR_HASH_BYTES: Final = 32
_UINT_MAX: Final = 2**64 - 1
_CLAIM_KEYS: Final = frozenset({"dev", "seq", "tag", "csr"})


class KeygenFieldError(ValueError):
    """A `csr` field or attestation payload not in the contract's form (the text says how)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeygenOutput:
    """The two parts of a `%KEYGEN` output, decoded from base64url."""

    csr_der: bytes
    attestation: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationClaims:
    """What the modem's attestation says: which device, bundle and tag made which CSR."""

    dev: str
    seq: int
    tag: int
    csr_sha256: bytes


def _b64url(text: str, what: str) -> bytes:
    """Strict unpadded base64url: its alphabet only, and the one encoding of its bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise KeygenFieldError(f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeygenFieldError(f"{what} is not unpadded base64url: {exc}") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise KeygenFieldError(f"{what} is not the canonical base64url of its bytes")
    return data


def split_keygen_field(field: str) -> KeygenOutput:
    """The CSR DER and the attestation of a `csr` field, within the contract's limits."""
    if not isinstance(field, str):
        raise KeygenFieldError(f"the csr field is a string, not {type(field).__name__}")
    size = len(field.encode("utf-8", "surrogatepass"))
    if size > CSR_FIELD_MAX_BYTES:
        raise KeygenFieldError(f"the csr field has {size} bytes, over {CSR_FIELD_MAX_BYTES}")
    parts = field.split(".")
    if len(parts) != 2:
        raise KeygenFieldError(f"the csr field has {len(parts)} dot-separated parts, not 2")
    csr_der = _b64url(parts[0], "the CSR part")
    if not csr_der or len(csr_der) > CSR_DER_MAX_BYTES:
        raise KeygenFieldError(f"the CSR has {len(csr_der)} bytes, not 1..{CSR_DER_MAX_BYTES}")
    attestation = _b64url(parts[1], "the attestation part")
    return KeygenOutput(csr_der=csr_der, attestation=attestation)


def _strict_cbor(data: bytes) -> Any:
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(
            stream, allow_indefinite=False, allow_duplicate_keys=False, max_depth=4
        ).decode()
    except (cbor2.CBORError, RecursionError, ValueError, TypeError, LookupError) as exc:
        raise KeygenFieldError(f"the attestation payload is not strict CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise KeygenFieldError("the attestation payload has trailing bytes")
    return item


def _uint(claims: Mapping[str, Any], key: str) -> int:
    value = claims[key]
    if type(value) is not int or not 0 <= value <= _UINT_MAX:
        raise KeygenFieldError(f"attestation {key!r} is not an unsigned integer")
    return value


def decode_attestation_claims(payload: bytes) -> AttestationClaims:
    """The attestation payload `{"dev": tstr, "seq": uint, "tag": uint, "csr": bstr .size 32}`."""
    claims = _strict_cbor(payload)
    if not isinstance(claims, Mapping) or set(claims) != _CLAIM_KEYS:
        raise KeygenFieldError("the attestation payload is not a map of dev, seq, tag and csr")
    dev, csr_hash = claims["dev"], claims["csr"]
    if type(dev) is not str:
        raise KeygenFieldError("attestation 'dev' is not a text string")
    if type(csr_hash) is not bytes or len(csr_hash) != _CSR_HASH_BYTES:
        raise KeygenFieldError("attestation 'csr' is not a 32-byte SHA-256")
    return AttestationClaims(
        dev=dev, seq=_uint(claims, "seq"), tag=_uint(claims, "tag"), csr_sha256=csr_hash
    )
