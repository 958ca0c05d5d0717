"""The `%KEYGEN` output a device reports, and the modem's attestation inside it.

A `keygen` bundle makes the modem generate a P-256 key in the spare identity tag
(`AT%KEYGEN=<tag>,2,0`); the device reports the result in the `csr` field of its `csr`
report, as the modem gives it: `base64url(CSR DER) "." base64url(COSE_Sign1)`, both
without padding (docs/protocol.md §7). The COSE_Sign1 is the modem's attestation: ES256
by the modem's own attestation key, protected `{1: -7, 4: kid}`, over the CBOR map
`{"dev": device id, "seq": the keygen bundle's seq, "tag": the tag, "csr": SHA-256 of
the CSR DER}`. It binds the key to the device, the bundle that asked for it and the
CSR, so certfleet can tell a key this modem made for this request from any other.

Both sides use this module: the simulated modem builds the output with
`encode_keygen_output` and `sign_attestation`; certfleet reads it with
`parse_keygen_output` and `verify_attestation`. Every refusal carries a
`KeygenFault`, so what was wrong is logged and counted by name.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.cose import (
    ALG_ES256,
    HEADER_ALG,
    HEADER_KID,
    CoseError,
    Sign1Message,
    SignatureMismatchError,
    UnsupportedAlgorithmError,
    key_id,
    sign1,
)
from orchestrator.protocol.limits import CSR_DER_MAX_BYTES, CSR_FIELD_MAX_BYTES

__all__ = [
    "ATTESTATION_CLAIMS",
    "AttestationClaims",
    "KeygenError",
    "KeygenFault",
    "KeygenOutput",
    "attestation_kid",
    "attestation_payload",
    "decode_attestation_claims",
    "encode_keygen_output",
    "parse_keygen_output",
    "sign_attestation",
    "verify_attestation",
]

ATTESTATION_CLAIMS: Final = frozenset({"dev", "seq", "tag", "csr"})
"""The keys of the attestation payload map, every one required, no other allowed."""
_SHA256_BYTES: Final = 32
_UINT64_MAX: Final = 2**64 - 1
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_MAX_DEPTH: Final = 4


class KeygenFault(enum.StrEnum):
    """What is wrong with a `%KEYGEN` output or its attestation (a log and metric label)."""

    FIELD_TOO_LARGE = "field_too_large"
    """The whole `csr` field is over `CSR_FIELD_MAX_BYTES`."""
    NOT_TWO_PARTS = "not_two_parts"
    """Not exactly two parts separated by one `.`."""
    NOT_BASE64URL = "not_base64url"
    """A part is not the canonical unpadded base64url of its bytes."""
    CSR_SIZE = "csr_size"
    """The CSR DER is empty or over `CSR_DER_MAX_BYTES`."""
    NOT_COSE = "not_cose"
    """The attestation is not a well-formed COSE_Sign1."""
    WRONG_KEY = "wrong_key"
    """The attestation's protected kid is not the attestation key's, or there is none."""
    BAD_ALGORITHM = "bad_algorithm"
    """The attestation is not ES256 (protected alg -7)."""
    BAD_SIGNATURE = "bad_signature"
    """The attestation's signature does not verify with the attestation key."""
    BAD_CLAIMS = "bad_claims"
    """The attestation payload is not the claims map of this module's docstring."""
    MISMATCH = "mismatch"
    """The claims are valid but name another device, bundle, tag or CSR."""


class KeygenError(CertfleetError, ValueError):
    """A `%KEYGEN` output or attestation that breaks the contract; `fault` says how."""

    def __init__(self, fault: KeygenFault, detail: str) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class KeygenOutput:
    """The two parts of a `%KEYGEN` output: the CSR (DER) and the attestation (COSE_Sign1)."""

    csr_der: bytes
    attestation: bytes

    def encode(self) -> str:
        """The `csr` field text (see `encode_keygen_output`)."""
        return encode_keygen_output(self.csr_der, self.attestation)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationClaims:
    """What the modem attests: this device made a key for this keygen bundle, with this CSR."""

    dev: str
    seq: int
    tag: int
    csr_sha256: bytes

    def check(self, *, device_id: str, seq: int, tag: int, csr_der: bytes) -> None:
        """Raise `KeygenError(MISMATCH)` unless the claims bind exactly this request and CSR."""
        if self.dev != device_id:
            raise KeygenError(KeygenFault.MISMATCH, f"attests device {self.dev!r}")
        if (self.seq, self.tag) != (seq, tag):
            raise KeygenError(
                KeygenFault.MISMATCH,
                f"answers seq {self.seq} tag {self.tag}, not the keygen's seq {seq} tag {tag}",
            )
        if self.csr_sha256 != hashlib.sha256(csr_der).digest():
            raise KeygenError(KeygenFault.MISMATCH, "attests another CSR")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    """Strict unpadded base64url: its alphabet only, and the one encoding of its bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise KeygenError(KeygenFault.NOT_BASE64URL, f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeygenError(KeygenFault.NOT_BASE64URL, f"{what}: {exc}") from None
    if _b64url_encode(data) != text:
        # Unused low bits set: another text for the same bytes; a modem writes one form.
        raise KeygenError(KeygenFault.NOT_BASE64URL, f"{what} is not canonical base64url")
    return data


def _check_csr_size(csr_der: bytes) -> None:
    if not 1 <= len(csr_der) <= CSR_DER_MAX_BYTES:
        raise KeygenError(
            KeygenFault.CSR_SIZE, f"the CSR is {len(csr_der)} bytes, not 1..{CSR_DER_MAX_BYTES}"
        )


def encode_keygen_output(csr_der: bytes, attestation: bytes) -> str:
    """`base64url(csr_der) "." base64url(attestation)`, unpadded, as `%KEYGEN` prints it.

    Raises:
        KeygenError: an empty part, a CSR over 1024 bytes or a field over 2048 bytes.
    """
    _check_csr_size(csr_der)
    if not attestation:
        raise KeygenError(KeygenFault.NOT_TWO_PARTS, "the attestation is empty")
    text = f"{_b64url_encode(csr_der)}.{_b64url_encode(attestation)}"
    if len(text) > CSR_FIELD_MAX_BYTES:
        raise KeygenError(
            KeygenFault.FIELD_TOO_LARGE,
            f"the output is {len(text)} bytes, over the report field's {CSR_FIELD_MAX_BYTES}",
        )
    return text


def parse_keygen_output(text: str) -> KeygenOutput:
    """The CSR DER and the attestation bytes of a `csr` field, within the contract's limits.

    Nothing is verified here but the form: the CSR is checked by certfleet's CSR checks,
    the attestation by `verify_attestation`.

    Raises:
        KeygenError: `FIELD_TOO_LARGE`, `NOT_TWO_PARTS`, `NOT_BASE64URL` or `CSR_SIZE`.
    """
    if not isinstance(text, str):
        raise KeygenError(KeygenFault.NOT_TWO_PARTS, f"a string, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > CSR_FIELD_MAX_BYTES:
        raise KeygenError(
            KeygenFault.FIELD_TOO_LARGE, f"{size} bytes, over the {CSR_FIELD_MAX_BYTES} allowed"
        )
    parts = text.split(".")
    if len(parts) != 2:
        raise KeygenError(KeygenFault.NOT_TWO_PARTS, f"{len(parts)} dot-separated parts, not 2")
    csr_der = _b64url_decode(parts[0], "the CSR part")
    _check_csr_size(csr_der)
    return KeygenOutput(csr_der=csr_der, attestation=_b64url_decode(parts[1], "the attestation"))


def attestation_kid(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The attestation key's id: first 8 bytes of SHA-256 over its SPKI DER (as a signer's)."""
    return key_id(public_key)


def attestation_payload(device_id: str, seq: int, tag: int, csr_der: bytes) -> bytes:
    """The claims map, deterministically encoded: what the modem signs."""
    claims = {"dev": device_id, "seq": seq, "tag": tag, "csr": hashlib.sha256(csr_der).digest()}
    return cbor2.dumps(claims, canonical=True)


def sign_attestation(
    private_key: ec.EllipticCurvePrivateKey, device_id: str, seq: int, tag: int, csr_der: bytes
) -> bytes:
    """The modem's attestation of `csr_der`: COSE_Sign1, ES256, kid of the attestation key."""
    return sign1(
        attestation_payload(device_id, seq, tag, csr_der),
        private_key=private_key,
        kid=attestation_kid(private_key.public_key()),
    )


def _strict_cbor(data: bytes) -> Any:
    """One definite-length CBOR item with unique keys and nothing after it."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(
            stream, allow_indefinite=False, allow_duplicate_keys=False, max_depth=_MAX_DEPTH
        ).decode()
    except (cbor2.CBORError, RecursionError, ValueError, TypeError, LookupError) as exc:
        raise KeygenError(
            KeygenFault.BAD_CLAIMS, f"the payload is not strict CBOR: {exc}"
        ) from None
    if stream.tell() != len(data):
        raise KeygenError(KeygenFault.BAD_CLAIMS, "the payload has trailing bytes")
    return item


def _uint(claims: Mapping[str, Any], key: str) -> int:
    value = claims[key]
    if type(value) is not int or not 0 <= value <= _UINT64_MAX:
        raise KeygenError(KeygenFault.BAD_CLAIMS, f"{key!r} is not an unsigned 64-bit integer")
    return value


def decode_attestation_claims(payload: bytes) -> AttestationClaims:
    """The claims map `{"dev": tstr, "seq": uint, "tag": uint, "csr": bstr .size 32}`."""
    claims = _strict_cbor(payload)
    if not isinstance(claims, Mapping) or set(claims) != ATTESTATION_CLAIMS:
        raise KeygenError(KeygenFault.BAD_CLAIMS, "not a map of exactly dev, seq, tag and csr")
    dev, csr = claims["dev"], claims["csr"]
    if type(dev) is not str:
        raise KeygenError(KeygenFault.BAD_CLAIMS, "'dev' is not a text string")
    if type(csr) is not bytes or len(csr) != _SHA256_BYTES:
        raise KeygenError(KeygenFault.BAD_CLAIMS, "'csr' is not a 32-byte SHA-256")
    return AttestationClaims(
        dev=dev, seq=_uint(claims, "seq"), tag=_uint(claims, "tag"), csr_sha256=csr
    )


def verify_attestation(
    cose_bytes: bytes, public_key: ec.EllipticCurvePublicKey
) -> AttestationClaims:
    """The claims of an attestation signed by `public_key`; whom they bind is `check`'s job.

    Raises:
        KeygenError: `NOT_COSE`, `BAD_ALGORITHM`, `WRONG_KEY`, `BAD_SIGNATURE` or `BAD_CLAIMS`.
    """
    try:
        message = Sign1Message.decode(cose_bytes, max_bytes=CSR_FIELD_MAX_BYTES)
    except CoseError as exc:
        raise KeygenError(KeygenFault.NOT_COSE, str(exc)) from None
    if message.protected.get(HEADER_ALG) != ALG_ES256:
        raise KeygenError(KeygenFault.BAD_ALGORITHM, "the protected header must carry alg -7")
    if message.protected.get(HEADER_KID) != attestation_kid(public_key):
        raise KeygenError(
            KeygenFault.WRONG_KEY, "the protected kid is not the device's attestation key"
        )
    try:
        message.verify(public_key)
    except UnsupportedAlgorithmError as exc:
        raise KeygenError(KeygenFault.BAD_ALGORITHM, str(exc)) from None
    except (SignatureMismatchError, CoseError) as exc:
        raise KeygenError(KeygenFault.BAD_SIGNATURE, str(exc)) from None
    return decode_attestation_claims(message.payload)
