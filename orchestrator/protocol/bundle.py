"""Signed credential bundles: the CBOR payload inside a COSE_Sign1 (ES256) envelope.

The orchestrator builds a `Bundle`, encodes it with `encode_payload`, and signs it
(`orchestrator.services.bundles`). A device opens it with `open_bundle`, which
checks, in this order, everything that must hold before the key store is touched:
size, envelope, algorithm, signer, signature, payload, version, device, sequence,
validity window, item sizes. Each failure has its own `Reason`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.credentials import (
    CA_CHAIN_MAX_BYTES,
    SEC_TAG_MAX,
    SEC_TAG_MIN,
    CredentialType,
)
from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.cose import (
    ALG_ES256,
    HEADER_ALG,
    HEADER_KID,
    CoseError,
    Sign1Message,
    SignatureMismatchError,
    UnsupportedAlgorithmError,
)
from orchestrator.protocol.topics import is_valid_device_id

__all__ = [
    "BUNDLE_VERSION",
    "CLOCK_SKEW_SECONDS",
    "MAX_ACTIVE_TAGS",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "BundleRejectedError",
    "Credential",
    "Operation",
    "Probe",
    "Reason",
    "SignerKey",
    "decode_payload",
    "encode_payload",
    "open_bundle",
]

BUNDLE_VERSION: Final = 1
UINT64_MAX: Final = 2**64 - 1  # the largest CBOR integer without a bignum tag
MAX_BUNDLE_BYTES: Final = 12 * 1024
"""A device refuses a bundle larger than this before decoding it."""
MAX_ACTIVE_TAGS: Final = 7
"""A modem socket takes at most 7 sec_tags."""
CLOCK_SKEW_SECONDS: Final = 300
"""How far in the future a bundle's issued-at may lie (device clocks drift)."""

Operation = Literal["stage", "commit", "rollback", "retire", "trust-signer"]
OPERATIONS: Final[tuple[str, ...]] = get_args(Operation)


class Reason(enum.StrEnum):
    """Reason codes of device reports (docs/protocol.md lists each with its meaning)."""

    OK = "ok"
    # rejected: the bundle was refused and nothing was written
    TOO_LARGE = "too_large"
    BAD_ENVELOPE = "bad_envelope"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_PAYLOAD = "bad_payload"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_DEVICE = "wrong_device"
    REPLAY = "replay"
    BUNDLE_EXPIRED = "bundle_expired"
    NOT_YET_VALID = "not_yet_valid"
    TAG_IN_USE = "tag_in_use"
    NOTHING_STAGED = "nothing_staged"
    INVALID_OPERATION = "invalid_operation"
    MODEM_ERROR = "modem_error"
    # health_failed: the TLS probe with the staged trust failed
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    CHAIN_TOO_LARGE = "chain_too_large"
    TIMEOUT = "timeout"
    HANDSHAKE_ERROR = "handshake_error"
    # fallback: the device returned to its previous trust by itself
    COMMIT_TIMEOUT = "commit_timeout"
    BROKER_UNREACHABLE = "broker_unreachable"


class BundleRejectedError(CertfleetError):
    """A bundle the device must refuse; `reason` goes into the `rejected` report."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _bad(detail: str) -> BundleRejectedError:
    return BundleRejectedError(Reason.BAD_PAYLOAD, detail)


@dataclass(frozen=True, slots=True)
class Credential:
    """One item to write: its type and content (PEM text)."""

    type: CredentialType
    pem: str


@dataclass(frozen=True, slots=True)
class Probe:
    """The TLS health check: connect to host:port validating with these sec_tags only."""

    host: str
    port: int
    tags: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SignerKey:
    """A bundle signer key a device may trust: key id and SEC1 uncompressed P-256 point."""

    kid: bytes
    public_point: bytes

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key as a cryptography object (raises ValueError if not a P-256 point)."""
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.public_point)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    """The signed payload. Which optional fields an operation needs is in `_REQUIRED`."""

    device_id: str
    rollout_id: str
    seq: int
    op: Operation
    issued_at: int
    expires_at: int
    tag: int | None = None
    tags: tuple[int, ...] = ()
    credentials: tuple[Credential, ...] = ()
    probe: Probe | None = None
    active: tuple[int, ...] = ()
    commit_by: int | None = None
    signer: SignerKey | None = None
    retire_kid: bytes | None = None
    version: int = field(default=BUNDLE_VERSION)

    def __post_init__(self) -> None:
        if not is_valid_device_id(self.device_id):
            raise _bad(f"not a device id: {self.device_id!r}")
        if self.op not in OPERATIONS:
            raise _bad(f"unknown operation {self.op!r}")
        if not 1 <= self.seq <= UINT64_MAX:
            raise _bad("seq must be an integer from 1 to 2**64-1")
        if self.expires_at <= self.issued_at:
            raise _bad("exp must be after iat")
        for name in _REQUIRED[self.op]:
            value = getattr(self, name)
            if value is None or value == ():
                raise _bad(f"{self.op} needs {name}")
        for tag in (self.tag, *self.tags, *self.active, *(self.probe.tags if self.probe else ())):
            if tag is not None and not SEC_TAG_MIN <= tag <= SEC_TAG_MAX:
                raise _bad(f"sec_tag {tag} out of range")
        if len(self.active) > MAX_ACTIVE_TAGS or len(set(self.active)) != len(self.active):
            raise _bad(f"active must list 1..{MAX_ACTIVE_TAGS} distinct sec_tags")

    @property
    def expires(self) -> datetime:
        """`expires_at` as a time."""
        return datetime.fromtimestamp(self.expires_at, UTC)


_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "stage": ("tag", "credentials", "probe", "active", "commit_by"),
    "commit": ("tag",),
    "rollback": (),
    "retire": ("tags", "active"),
    "trust-signer": ("signer",),
}


def encode_payload(bundle: Bundle) -> bytes:
    """The deterministic CBOR encoding of a bundle's payload map."""
    document: dict[str, Any] = {
        "v": bundle.version,
        "dev": bundle.device_id,
        "rid": bundle.rollout_id,
        "seq": bundle.seq,
        "op": bundle.op,
        "iat": bundle.issued_at,
        "exp": bundle.expires_at,
    }
    if bundle.tag is not None:
        document["tag"] = bundle.tag
    if bundle.tags:
        document["tags"] = list(bundle.tags)
    if bundle.credentials:
        document["creds"] = [{"type": int(c.type), "pem": c.pem} for c in bundle.credentials]
    if bundle.probe is not None:
        p = bundle.probe
        document["probe"] = {"host": p.host, "port": p.port, "tags": list(p.tags)}
    if bundle.active:
        document["active"] = list(bundle.active)
    if bundle.commit_by is not None:
        document["commit_by"] = bundle.commit_by
    if bundle.signer is not None:
        document["signer"] = {"kid": bundle.signer.kid, "pub": bundle.signer.public_point}
    if bundle.retire_kid is not None:
        document["retire_kid"] = bundle.retire_kid
    return cbor2.dumps(document, canonical=True)


def _get(
    document: Mapping[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool
) -> Any:
    if key not in document:
        if required:
            raise _bad(f"missing {key!r}")
        return None
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _bad(f"{key!r} has the wrong type")
    if isinstance(value, int) and not -UINT64_MAX - 1 <= value <= UINT64_MAX:
        raise _bad(f"{key!r} does not fit a 64-bit CBOR integer")
    return value


def _tag_list(value: Any, key: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        raise _bad(f"{key!r} must be a list of sec_tags")
    return tuple(value)


_KNOWN_KEYS: Final = frozenset(
    {
        "v",
        "dev",
        "rid",
        "seq",
        "op",
        "iat",
        "exp",
        "tag",
        "tags",
        "creds",
        "probe",
        "active",
        "commit_by",
        "signer",
        "retire_kid",
    }
)


def decode_payload(data: bytes) -> Bundle:
    """Parse and validate a payload; raises `BundleRejectedError` (bad_payload or version)."""
    try:
        document = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, EOFError) as exc:
        raise _bad(f"payload is not CBOR: {exc}") from None
    if not isinstance(document, Mapping):
        raise _bad("payload must be a CBOR map")
    unknown = set(document) - _KNOWN_KEYS
    if unknown:
        raise _bad(f"unknown payload keys: {sorted(map(str, unknown))}")
    version = _get(document, "v", int, required=True)
    if version != BUNDLE_VERSION:
        raise BundleRejectedError(Reason.UNSUPPORTED_VERSION, f"version {version} not supported")
    creds: list[Credential] = []
    for item in _get(document, "creds", (list, tuple), required=False) or ():
        if not isinstance(item, Mapping):
            raise _bad("each credential must be a map")
        try:
            cred_type = CredentialType(_get(item, "type", int, required=True))
        except ValueError:
            raise _bad("unknown credential type") from None
        creds.append(Credential(cred_type, _get(item, "pem", str, required=True)))
    probe = None
    if (raw_probe := _get(document, "probe", Mapping, required=False)) is not None:
        port = _get(raw_probe, "port", int, required=True)
        if not 1 <= port <= 65535:
            raise _bad("probe port out of range")
        probe = Probe(
            host=_get(raw_probe, "host", str, required=True),
            port=port,
            tags=_tag_list(_get(raw_probe, "tags", (list, tuple), required=True), "probe.tags"),
        )
    signer = None
    if (raw_signer := _get(document, "signer", Mapping, required=False)) is not None:
        signer = SignerKey(
            kid=_get(raw_signer, "kid", bytes, required=True),
            public_point=_get(raw_signer, "pub", bytes, required=True),
        )
    op = _get(document, "op", str, required=True)
    if op not in OPERATIONS:
        raise _bad(f"unknown operation {op!r}")
    return Bundle(
        device_id=_get(document, "dev", str, required=True),
        rollout_id=_get(document, "rid", str, required=True),
        seq=_get(document, "seq", int, required=True),
        op=op,
        issued_at=_get(document, "iat", int, required=True),
        expires_at=_get(document, "exp", int, required=True),
        tag=_get(document, "tag", int, required=False),
        tags=_tag_list(_get(document, "tags", (list, tuple), required=False), "tags"),
        credentials=tuple(creds),
        probe=probe,
        active=_tag_list(_get(document, "active", (list, tuple), required=False), "active"),
        commit_by=_get(document, "commit_by", int, required=False),
        signer=signer,
        retire_kid=_get(document, "retire_kid", bytes, required=False),
    )


def _verified_payload(data: bytes, signers: Mapping[bytes, ec.EllipticCurvePublicKey]) -> bytes:
    """The payload of an envelope signed ES256 by a trusted key, or the reason why not."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleRejectedError(
            Reason.TOO_LARGE, f"bundle of {len(data)} bytes, limit {MAX_BUNDLE_BYTES}"
        )
    try:
        message = Sign1Message.decode(data, max_bytes=MAX_BUNDLE_BYTES)
    except CoseError as exc:
        raise BundleRejectedError(Reason.BAD_ENVELOPE, str(exc)) from None
    if message.protected.get(HEADER_ALG) != ALG_ES256:
        raise BundleRejectedError(
            Reason.UNSUPPORTED_ALGORITHM, "the protected header must carry alg ES256 (-7)"
        )
    kid = message.protected.get(HEADER_KID)
    if not isinstance(kid, bytes):
        raise BundleRejectedError(Reason.UNKNOWN_KEY, "the protected header carries no key id")
    key = signers.get(kid)
    if key is None:
        raise BundleRejectedError(Reason.UNKNOWN_KEY, f"signer {kid.hex()} is not trusted")
    try:
        message.verify(key)
    except UnsupportedAlgorithmError as exc:
        raise BundleRejectedError(Reason.UNSUPPORTED_ALGORITHM, str(exc)) from None
    except (SignatureMismatchError, CoseError) as exc:
        raise BundleRejectedError(Reason.BAD_SIGNATURE, str(exc)) from None
    return message.payload


def open_bundle(
    data: bytes,
    *,
    signers: Mapping[bytes, ec.EllipticCurvePublicKey],
    device_id: str,
    last_seq: int,
    now: datetime,
) -> Bundle:
    """Everything a device checks before it acts on a bundle.

    Raises:
        BundleRejectedError: with the reason of the first check that failed.
    """
    bundle = decode_payload(_verified_payload(data, signers))
    if bundle.device_id != device_id:
        raise BundleRejectedError(
            Reason.WRONG_DEVICE, f"bundle is for {bundle.device_id!r}, this is {device_id!r}"
        )
    if bundle.seq <= last_seq:
        raise BundleRejectedError(
            Reason.REPLAY, f"sequence {bundle.seq} is not above the last accepted {last_seq}"
        )
    timestamp = int(now.timestamp())
    if timestamp >= bundle.expires_at:
        raise BundleRejectedError(Reason.BUNDLE_EXPIRED, f"expired at {bundle.expires.isoformat()}")
    if bundle.issued_at > timestamp + CLOCK_SKEW_SECONDS:
        raise BundleRejectedError(Reason.NOT_YET_VALID, "issued in the future")
    for credential in bundle.credentials:
        size = len(credential.pem.encode())
        if credential.type is CredentialType.CA_CHAIN and size > CA_CHAIN_MAX_BYTES:
            raise BundleRejectedError(
                Reason.TOO_LARGE,
                f"CA chain of {size} bytes exceeds the modem's {CA_CHAIN_MAX_BYTES}-byte limit",
            )
    return bundle
