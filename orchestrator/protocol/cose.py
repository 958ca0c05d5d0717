"""COSE_Sign1 (RFC 9052) with ES256 only: strict decoding, Sig_structure, signing."""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from orchestrator.domain.errors import CertfleetError

__all__ = [
    "ALG_ES256",
    "COSE_SIGN1_TAG",
    "HEADER_ALG",
    "HEADER_DELEGATION",
    "HEADER_KID",
    "CoseError",
    "MalformedCoseError",
    "Sign1Message",
    "SignatureMismatchError",
    "UnsupportedAlgorithmError",
    "es256_sign",
    "es256_verify",
    "key_id",
    "sign1",
]

ALG_ES256: Final = -7
HEADER_ALG: Final = 1
HEADER_KID: Final = 4
HEADER_DELEGATION: Final = -65537
"""A private-use label (docs/protocol.md §3): a delegated bundle's delegation, a COSE_Sign1
by a root key in a byte string."""
COSE_SIGN1_TAG: Final = 18

_COORDINATE_BYTES: Final = 32
_MAX_DEPTH: Final = 32
_EMPTY_HEADER: Final[Mapping[int | str, Any]] = MappingProxyType({})

Header = Mapping[int | str, Any]


class CoseError(CertfleetError):
    """A COSE_Sign1 message or signature that certfleet cannot accept."""


class MalformedCoseError(CoseError):
    """Bytes that are not a well-formed COSE_Sign1 message."""


class UnsupportedAlgorithmError(CoseError):
    """A message without an algorithm, or with one other than ES256 (or a non-P-256 key)."""


class SignatureMismatchError(CoseError):
    """A signature that does not verify with the given key."""


class _RawTags(dict[int, Callable[[Any, bool], cbor2.CBORTag]]):
    """Keep every tag as a `CBORTag` (cbor2 turns bignums into ints, strips 28/256/55799)."""

    def __missing__(self, tag: int) -> Callable[[Any, bool], cbor2.CBORTag]:
        return lambda value, _immutable: cbor2.CBORTag(tag, value)


_RAW_TAGS: Final = _RawTags()


def _loads(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item: definite lengths, unique map keys, tags left raw."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            semantic_decoders=_RAW_TAGS,
            read_size=1,
            max_depth=_MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        item = decoder.decode(immutable=True)
    except (cbor2.CBORError, RecursionError, ValueError, TypeError, LookupError) as exc:
        raise MalformedCoseError(f"{what} is not strict CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise MalformedCoseError(f"{what} has {len(data) - stream.tell()} trailing bytes")
    return item


def _dumps(item: object) -> bytes:
    """Encode deterministically (RFC 8949 §4.2)."""
    try:
        return cbor2.dumps(item, canonical=True)
    except (cbor2.CBORError, RecursionError, ValueError, TypeError) as exc:
        raise MalformedCoseError(f"cannot encode {type(item).__name__} as CBOR: {exc}") from exc


def _decode_protected(protected_bytes: bytes) -> Header:
    """The protected header map; the zero-length bstr stands for the empty map."""
    if not protected_bytes:
        return _EMPTY_HEADER
    header = _loads(protected_bytes, "protected header")
    if not isinstance(header, Mapping):
        raise MalformedCoseError("protected header does not decode to a map")
    return header


def _check_header(header: object, where: str) -> Header:
    """Labels are ints or text; alg is an int or text; kid is a bstr."""
    if not isinstance(header, Mapping):
        raise MalformedCoseError(f"{where} header is not a map")
    for label in header:
        if type(label) not in (int, str):
            raise MalformedCoseError(f"{where} header label {label!r} is not an int or text")
    if HEADER_ALG in header and type(header[HEADER_ALG]) not in (int, str):
        raise MalformedCoseError(f"{where} alg {header[HEADER_ALG]!r} is not an int or text")
    if HEADER_KID in header and type(header[HEADER_KID]) is not bytes:
        raise MalformedCoseError(f"{where} kid {header[HEADER_KID]!r} is not a byte string")
    return header


def _require_p256(key: object) -> None:
    if not isinstance(getattr(key, "curve", None), ec.SECP256R1):
        raise UnsupportedAlgorithmError(f"ES256 needs a P-256 key, not {type(key).__name__}")


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """First 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo DER."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:8]


def es256_sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Sign `data` with ECDSA P-256/SHA-256; raw r||s (RFC 9053 §2.1), not DER."""
    _require_p256(private_key)
    r, s = utils.decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")


def es256_verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> None:
    """Check a raw r||s ES256 signature; raise `SignatureMismatchError` if it fails."""
    _require_p256(public_key)
    if len(signature) != 2 * _COORDINATE_BYTES:
        raise SignatureMismatchError(f"an ES256 signature is 64 bytes, not {len(signature)}")
    r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
    s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
    try:
        public_key.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureMismatchError("the signature does not verify with this key") from exc


@dataclass(frozen=True, slots=True)
class Sign1Message:
    """A COSE_Sign1 message; `decode` does not verify, `verify` does."""

    protected_bytes: bytes
    protected: Header
    unprotected: Header
    payload: bytes
    signature: bytes

    def __post_init__(self) -> None:
        for name in ("protected_bytes", "payload", "signature"):
            if type(getattr(self, name)) is not bytes:
                raise MalformedCoseError(f"{name} is not a byte string")
        decoded = _check_header(_decode_protected(self.protected_bytes), "protected")
        if _dumps(dict(decoded)) != _dumps(dict(_check_header(self.protected, "protected"))):
            raise MalformedCoseError("protected does not match protected_bytes")
        shared = set(decoded) & set(_check_header(self.unprotected, "unprotected"))
        if shared:
            labels = sorted(map(repr, shared))
            raise MalformedCoseError(f"labels {labels} are both protected and unprotected")

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = 65536) -> Sign1Message:
        """Parse a COSE_Sign1 message, tagged 18 or untagged, strictly."""
        if not isinstance(data, bytes | bytearray):
            raise MalformedCoseError(f"expected bytes, not {type(data).__name__}")
        if len(data) > max_bytes:
            raise MalformedCoseError(f"message of {len(data)} bytes exceeds {max_bytes} bytes")
        item = _loads(bytes(data), "message")
        if isinstance(item, cbor2.CBORTag):
            if item.tag != COSE_SIGN1_TAG:
                raise MalformedCoseError(f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
            item = item.value
        if not isinstance(item, list | tuple) or len(item) != 4:
            raise MalformedCoseError("COSE_Sign1 is an array of 4 items")
        protected_bytes, unprotected, payload, signature = item
        if payload is None:
            raise MalformedCoseError("detached payloads (nil) are not supported")
        if type(protected_bytes) is not bytes:
            raise MalformedCoseError("protected_bytes is not a byte string")
        return cls(
            protected_bytes=protected_bytes,
            protected=_decode_protected(protected_bytes),
            unprotected=unprotected,
            payload=payload,
            signature=signature,
        )

    @property
    def algorithm(self) -> int | str | None:
        """The protected alg, else the unprotected one."""
        alg: int | str | None = self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))
        return alg

    @property
    def kid(self) -> bytes | None:
        """The protected kid, else the unprotected one."""
        kid: bytes | None = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        return kid

    def sig_structure(self, external_aad: bytes = b"") -> bytes:
        """The to-be-signed bytes: ["Signature1", body_protected, external_aad, payload]."""
        body_protected = self.protected_bytes if self.protected else b""
        return _dumps(["Signature1", body_protected, external_aad, self.payload])

    def verify(self, public_key: ec.EllipticCurvePublicKey, external_aad: bytes = b"") -> None:
        """Raise unless the message is ES256 and its signature verifies with `public_key`."""
        if self.algorithm != ALG_ES256:
            raise UnsupportedAlgorithmError(f"algorithm {self.algorithm!r} is not ES256 (-7)")
        es256_verify(public_key, self.sig_structure(external_aad), self.signature)

    def encode(self, *, tagged: bool = True) -> bytes:
        """The message as CBOR, with tag 18 unless `tagged` is false."""
        body = [self.protected_bytes, dict(self.unprotected), self.payload, self.signature]
        return _dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body) if tagged else body)


def sign1(
    payload: bytes,
    *,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    sign: Callable[[bytes], bytes] | None = None,
    kid: bytes,
    external_aad: bytes = b"",
    tagged: bool = True,
    delegation: bytes | None = None,
) -> bytes:
    """Sign `payload` as COSE_Sign1 with protected {alg: ES256, kid}.

    Args:
        private_key: a P-256 key; or else
        sign: a callable (an HSM) returning raw r||s over the to-be-signed bytes.
        delegation: a delegation (`orchestrator.protocol.delegation`) for the key `kid`,
            carried in the protected header under label -65537: {1: -7, 4: kid, -65537: ...}.
    """
    if sign is None:
        if private_key is None:
            raise TypeError("pass exactly one of private_key or sign")
        sign = functools.partial(es256_sign, private_key)
    elif private_key is not None:
        raise TypeError("pass exactly one of private_key or sign")
    if type(kid) is not bytes:
        raise TypeError(f"kid must be bytes, not {type(kid).__name__}")
    if type(payload) is not bytes or type(external_aad) is not bytes:
        raise TypeError("payload and external_aad must be bytes")
    if delegation is not None and type(delegation) is not bytes:
        raise TypeError(f"delegation must be bytes, not {type(delegation).__name__}")
    # Built directly, byte for byte what `Sign1Message(...).encode()` and `_dumps` of the
    # Sig_structure give (the tests check both): validating a message we are composing
    # ourselves, or encoding the payload into CBOR twice more, costs more than the
    # signature (BENCHMARKS.md, bundle push).
    protected = _es256_protected(kid, delegation)
    payload_bstr = _bstr_head(len(payload)) + payload
    signature = sign(b"".join((_SIG_STRUCTURE_HEAD, protected, _bstr(external_aad), payload_bstr)))
    if type(signature) is not bytes or len(signature) != 2 * _COORDINATE_BYTES:
        raise CoseError("the signer must return a 64-byte raw r||s ES256 signature")
    head = _TAGGED_HEAD if tagged else _ARRAY4
    return b"".join((head, protected, _EMPTY_MAP, payload_bstr, _SIGNATURE_HEAD, signature))


_ARRAY4: Final = b"\x84"
_TAGGED_HEAD: Final = bytes([0xC0 | COSE_SIGN1_TAG]) + _ARRAY4
_EMPTY_MAP: Final = b"\xa0"
_SIG_STRUCTURE_HEAD: Final = _ARRAY4 + cbor2.dumps("Signature1")
_SIGNATURE_HEAD: Final = b"\x58\x40"
"""A 64-byte byte string's head."""


def _bstr_head(length: int) -> bytes:
    """The CBOR head of a byte string of `length` bytes (major type 2, shortest form)."""
    if length < 24:
        return bytes([0x40 | length])
    for code, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * size):
            return bytes([0x40 | code]) + length.to_bytes(size, "big")
    raise MalformedCoseError(f"a byte string of {length} bytes does not fit CBOR")


def _bstr(data: bytes) -> bytes:
    return _bstr_head(len(data)) + data


@functools.lru_cache(maxsize=64)
def _es256_protected(kid: bytes, delegation: bytes | None) -> bytes:
    """The protected header {alg: ES256, kid} (and the delegation, if any), serialized and
    wrapped as a byte string (a signer has one kid, and one delegation for hours)."""
    header: dict[int, object] = {HEADER_ALG: ALG_ES256, HEADER_KID: kid}
    if delegation is not None:
        header[HEADER_DELEGATION] = delegation
    return _bstr(_dumps(header))
