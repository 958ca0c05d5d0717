"""The CBOR payload map of a bundle: its values, their rules and their encoding.

The orchestrator builds a `Bundle` and encodes it with `encode_payload`; a device
decodes a verified payload with `decode_payload`. A `Bundle` validates itself,
every limit of `orchestrator.protocol.limits` included, so the orchestrator cannot
build one that a device would refuse as `bad_payload`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.credentials import SEC_TAG_MAX, SEC_TAG_MIN, CredentialType
from orchestrator.protocol.limits import (
    CREDS_MAX,
    PROBE_HOST_MAX_BYTES,
    PROTOCOL_VERSION,
    REVOKED_KIDS_MAX,
    RID_MAX_BYTES,
    SUBJECT_MAX_BYTES,
    SUPPORTED_VERSIONS,
    TAG_LIST_MAX,
)
from orchestrator.protocol.reasons import BundleRejectedError, Reason
from orchestrator.protocol.reasons import bad_payload as _bad
from orchestrator.protocol.topics import is_valid_device_id

__all__ = [
    "BUNDLE_VERSION",
    "MAX_ACTIVE_TAGS",
    "OPERATIONS",
    "UINT64_MAX",
    "V2_ONLY_KEYS",
    "Bundle",
    "Credential",
    "Operation",
    "PayloadTemplate",
    "Probe",
    "SignerKey",
    "decode_payload",
    "encode_payload",
]

BUNDLE_VERSION: Final = PROTOCOL_VERSION
"""The version of the bundles this code builds (a v1 device gets `version=1` ones)."""
UINT64_MAX: Final = 2**64 - 1  # the largest CBOR integer without a bignum tag
MAX_ACTIVE_TAGS: Final = TAG_LIST_MAX
"""A modem socket takes at most 7 sec_tags."""
V2_ONLY_KEYS: Final = frozenset({"undo_by"})
"""Payload keys a v1 bundle must not carry."""
KID_BYTES: Final = 8
"""A key id: the first 8 bytes of SHA-256 over the key's SubjectPublicKeyInfo DER."""

Operation = Literal["stage", "commit", "rollback", "retire", "trust-signer", "keygen", "revoke"]
OPERATIONS: Final[tuple[str, ...]] = get_args(Operation)


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
    undo_by: int | None = None
    subject: str | None = None
    """keygen: the common name of the CSR the device makes (certfleet sends the device id)."""
    revoke_kids: tuple[bytes, ...] = ()
    """revoke (wire `kids`): the delegated key ids the device refuses from now on, its whole
    list (0 to 8 distinct 8-byte ids: the device replaces its list with this one)."""
    revoke_before: int | None = None
    """revoke (wire `before`): delegations issued before this time (epoch seconds) are
    revoked; 0 revokes none by time, and the device never lowers its own."""
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
        self._check_limits()
        self._check_revoke()
        if self.undo_by is not None:
            if self.version == 1:
                raise _bad("undo_by is a v2 key; a v1 bundle cannot carry it")
            if self.op != "commit":
                raise _bad("undo_by belongs to a commit only")
            if not 0 <= self.undo_by <= UINT64_MAX:
                raise _bad("undo_by must be an unsigned integer")

    def _check_revoke(self) -> None:
        """`kids` and `before` belong to a revoke, which carries both (`kids` may be empty)."""
        if self.op != "revoke":
            if self.revoke_kids or self.revoke_before is not None:
                raise _bad("kids and before belong to a revoke only")
            return
        if self.revoke_before is None:
            raise _bad("revoke needs before (0: none)")
        if not 0 <= self.revoke_before <= UINT64_MAX:
            raise _bad("before must be an unsigned integer")
        kids = self.revoke_kids
        if len(kids) > REVOKED_KIDS_MAX or len(set(kids)) != len(kids):
            raise _bad(f"kids must list at most {REVOKED_KIDS_MAX} distinct key ids")
        if any(type(kid) is not bytes or len(kid) != KID_BYTES for kid in kids):
            raise _bad(f"each of kids is a {KID_BYTES}-byte key id")

    def _check_limits(self) -> None:
        """The limits of docs/protocol.md §3: a firmware's buffers hold no more."""
        if len(self.rollout_id.encode()) > RID_MAX_BYTES:
            raise _bad(f"rid is over {RID_MAX_BYTES} bytes")
        lists = {"tags": self.tags, "active": self.active}
        if self.probe is not None:
            lists["probe.tags"] = self.probe.tags
            if not 1 <= len(self.probe.host.encode()) <= PROBE_HOST_MAX_BYTES:
                raise _bad(f"probe.host must be 1 to {PROBE_HOST_MAX_BYTES} bytes")
        for key, tags in lists.items():
            if len(tags) > TAG_LIST_MAX or len(set(tags)) != len(tags):
                raise _bad(f"{key} must list at most {TAG_LIST_MAX} distinct sec_tags")
        if self.subject is not None and not _is_subject(self.subject):
            raise _bad(
                f"subject must be 1 to {SUBJECT_MAX_BYTES} bytes of UTF-8 without a control "
                "character (U+0000 to U+001F, U+007F)"
            )
        self._check_credentials()

    def _check_credentials(self) -> None:
        """One item per type, PEM items ASCII, and a client certificate alone (identity stage)."""
        if len(self.credentials) > CREDS_MAX:
            raise _bad(f"creds holds {len(self.credentials)} items, at most {CREDS_MAX}")
        types = [c.type for c in self.credentials]
        if len(set(types)) != len(types):
            raise _bad("creds names one credential type twice: a sec_tag holds one item per type")
        if CredentialType.CLIENT_CERT in types and len(types) != 1:
            raise _bad(
                "a client certificate (type 1) travels alone: an identity stage's creds is "
                "exactly that item, its key is the one the device's keygen made"
            )
        if (
            self.is_identity_stage
            and self.probe is not None
            and len(self.probe.tags) >= TAG_LIST_MAX
        ):
            raise _bad(
                f"an identity stage's probe.tags name at most {TAG_LIST_MAX - 1} sec_tags: "
                "the probe's socket takes them and the staged identity tag, 7 in all"
            )
        for credential in self.credentials:
            if credential.type in _PEM_ITEMS and (
                not credential.pem.isascii() or "\0" in credential.pem
            ):
                raise _bad(f"a type-{int(credential.type)} item is ASCII PEM text without NUL")

    @property
    def is_identity_stage(self) -> bool:
        """A stage of a client certificate into the tag a keygen made its key in."""
        return self.op == "stage" and any(
            c.type is CredentialType.CLIENT_CERT for c in self.credentials
        )

    @property
    def expires(self) -> datetime:
        """`expires_at` as a time."""
        return datetime.fromtimestamp(self.expires_at, UTC)


def _is_subject(text: str) -> bool:
    """1 to 64 bytes of UTF-8, no C0 control character or DEL (a firmware checks bytes)."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 at all
        return False
    return 1 <= size <= SUBJECT_MAX_BYTES and not any(c < " " or c == "\x7f" for c in text)


_PEM_ITEMS: Final = frozenset({CredentialType.CA_CHAIN, CredentialType.CLIENT_CERT})
"""Items the device stores as PEM text, counted in bytes against `CA_CHAIN_MAX_BYTES`."""

_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "stage": ("tag", "credentials", "probe", "active", "commit_by"),
    "commit": ("tag",),
    "rollback": (),
    "retire": ("tags", "active"),
    "trust-signer": ("signer",),
    "keygen": ("tag", "subject", "commit_by"),
    "revoke": (),
}
"""A revoke's `kids` may be empty and its `before` 0: `_check_revoke` checks them."""


def _document(bundle: Bundle) -> dict[str, Any]:
    """The payload map of a bundle, before encoding."""
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
    if bundle.undo_by is not None:
        document["undo_by"] = bundle.undo_by
    if bundle.subject is not None:
        document["subject"] = bundle.subject
    if bundle.op == "revoke":
        document["kids"] = list(bundle.revoke_kids)
        document["before"] = bundle.revoke_before
    return document


def encode_payload(bundle: Bundle) -> bytes:
    """The deterministic CBOR encoding of a bundle's payload map."""
    return cbor2.dumps(_document(bundle), canonical=True)


@dataclass(frozen=True, slots=True)
class PayloadTemplate:
    """One bundle's payload for many devices: checked and encoded once, `dev` and `seq` per device.

    `template.encode(d, n)` is `encode_payload(replace(template.bundle, device_id=d, seq=n))`
    byte for byte (the tests check it), without building and checking a `Bundle` per
    device: what varies per device is checked here (the device id, the seq's range), the
    rest was checked once, in `template.bundle`.
    """

    bundle: Bundle
    _head: bytes
    _between: bytes
    _tail: bytes

    @classmethod
    def of(cls, bundle: Bundle) -> PayloadTemplate:
        """The template of `bundle` (a checked `Bundle`: any device, any seq)."""
        # A canonical map (RFC 8949 §4.2.3, as cbor2's canonical encoder orders it): its
        # head, then the pairs sorted by their encoded key, shorter keys first.
        pairs = sorted(
            (
                (cbor2.dumps(key), cbor2.dumps(value, canonical=True))
                for key, value in _document(bundle).items()
            ),
            key=lambda pair: (len(pair[0]), pair[0]),
        )
        keys = [key for key, _ in pairs]
        dev, seq = keys.index(cbor2.dumps("dev")), keys.index(cbor2.dumps("seq"))
        if not dev < seq:
            raise AssertionError("a canonical map orders 'dev' before 'seq'")
        encoded = [key + value for key, value in pairs]
        return cls(
            bundle=bundle,
            _head=_map_head(len(pairs)) + b"".join(encoded[:dev]) + keys[dev],
            _between=b"".join(encoded[dev + 1 : seq]) + keys[seq],
            _tail=b"".join(encoded[seq + 1 :]),
        )

    def encode(self, device_id: str, seq: int) -> bytes:
        """The payload for `device_id` with `seq`; `BundleRejectedError` if either is invalid."""
        if not is_valid_device_id(device_id):
            raise _bad(f"not a device id: {device_id!r}")
        if not 1 <= seq <= UINT64_MAX:
            raise _bad("seq must be an integer from 1 to 2**64-1")
        return b"".join(
            (self._head, cbor2.dumps(device_id), self._between, cbor2.dumps(seq), self._tail)
        )


def _map_head(entries: int) -> bytes:
    """The CBOR head of a map of `entries` pairs (a payload has at most 17)."""
    return bytes([0xA0 | entries]) if entries < 24 else bytes([0xB8, entries])


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
        "undo_by",
        "subject",
        "kids",
        "before",
    }
)


def _revoke_kids(document: Mapping[str, Any], op: str) -> tuple[bytes, ...]:
    """A revoke's `kids` (required, may be empty); other ops ignore the key."""
    kids = _get(document, "kids", (list, tuple), required=op == "revoke")
    if kids is not None and not all(type(kid) is bytes for kid in kids):
        raise _bad("kids must be a list of byte strings")
    return tuple(kids) if op == "revoke" else ()


def decode_payload(data: bytes, *, versions: Collection[int] = SUPPORTED_VERSIONS) -> Bundle:
    """Parse and validate a payload; raises `BundleRejectedError` (bad_payload or version).

    Args:
        versions: the bundle versions the reader accepts (a v1 device: only 1).
    """
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
    if version not in versions:
        raise BundleRejectedError(
            Reason.UNSUPPORTED_VERSION,
            f"version {version} not supported (this device takes {sorted(versions)})",
        )
    if version == 1 and V2_ONLY_KEYS & set(document):
        raise _bad(f"a v1 bundle cannot carry {sorted(V2_ONLY_KEYS & set(document))}")
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
        undo_by=_get(document, "undo_by", int, required=False),
        subject=_get(document, "subject", str, required=False),
        revoke_kids=_revoke_kids(document, op),
        revoke_before=_get(document, "before", int, required=False) if op == "revoke" else None,
        version=version,
    )
