"""Delegations: a root key lets a short-lived key sign bundles within a scope (issue 17).

A device opens a delegated bundle with checks 4 to 5d and 7a of docs/protocol.md §4:
the delegation's root, its signature, its payload, its revocation, its validity, the
bundle's signature with the delegated key, and the scope. Each refusal has its reason,
and the first failing check gives it (`test_each_check_refuses_before_the_next`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.file_signer import FileSigner, generate_key_file
from orchestrator.domain.credentials import CredentialType
from orchestrator.protocol.bundle import (
    Bundle,
    BundleRejectedError,
    Credential,
    Probe,
    Reason,
    SignerKey,
    encode_payload,
    open_bundle,
)
from orchestrator.protocol.cose import Sign1Message, es256_sign, key_id, sign1
from orchestrator.protocol.delegation import (
    DELEGABLE_OPS,
    DELEGATION_LABEL,
    DELEGATION_MAX_BYTES,
    REVOKED_KIDS_MAX,
    ROOT_OPS,
    Delegation,
    DelegationError,
    Revocation,
    Scope,
    decode_delegation,
    delegation_of,
    sign_delegation,
)
from orchestrator.protocol.payload import UINT64_MAX
from orchestrator.protocol.reasons import UNVERIFIED_REASONS
from orchestrator.services.bundles import BundleBody, issue_bundle, revoke_body
from tests.fake_rollouts import FakeSequences

pytestmark = pytest.mark.unit

NOW: Final = 1_800_000_000
WHEN: Final = datetime.fromtimestamp(NOW, UTC)
DEVICE: Final = "nrf-1"
ROOT_KEY: Final = ec.derive_private_key(0x5EED0001, ec.SECP256R1())
STRANGER_KEY: Final = ec.derive_private_key(0x5EED0002, ec.SECP256R1())
WORKER_KEY: Final = ec.derive_private_key(0x5EED0003, ec.SECP256R1())
OTHER_WORKER_KEY: Final = ec.derive_private_key(0x5EED0004, ec.SECP256R1())
ROOT_KID: Final = key_id(ROOT_KEY.public_key())
WORKER_KID: Final = key_id(WORKER_KEY.public_key())
ROOTS: Final = {ROOT_KID: ROOT_KEY.public_key()}
EVERYTHING: Final = Scope(ops=DELEGABLE_OPS, kinds=(0, 1))
CA_PEM: Final = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Root:
    """A root key as `sign_delegation` takes it: a key id and ES256."""

    key: ec.EllipticCurvePrivateKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.key.public_key())

    def sign(self, to_be_signed: bytes) -> bytes:
        return es256_sign(self.key, to_be_signed)


ROOT: Final = Root(ROOT_KEY)


def delegate(
    *,
    root: Root = ROOT,
    key: ec.EllipticCurvePrivateKey = WORKER_KEY,
    scope: Scope = EVERYTHING,
    not_before: int = NOW - 60,
    expires_at: int = NOW + 48 * 3600,
    issued_at: int = NOW - 60,
) -> bytes:
    """A delegation of `key` by `root` (valid at NOW, everything delegable, by default)."""
    return sign_delegation(
        root=root,
        public_key=key.public_key(),
        not_before=not_before,
        expires_at=expires_at,
        issued_at=issued_at,
        scope=scope,
    )


def payload_document(delegation: bytes) -> dict[str, Any]:
    """The payload map of a delegation, as a dict to change."""
    document: dict[str, Any] = cbor2.loads(Sign1Message.decode(delegation).payload)
    return document


def signed_by_root(payload: bytes | dict[str, Any], *, root: Root = ROOT) -> bytes:
    """A delegation of any payload, signed by `root` (to test the payload's rules)."""
    data = payload if isinstance(payload, bytes) else cbor2.dumps(payload, canonical=True)
    return sign1(data, sign=root.sign, kid=root.key_id)


def bundle(**changes: Any) -> Bundle:
    """A rollback for DEVICE, valid at NOW (seq 7)."""
    fields: dict[str, Any] = {
        "device_id": DEVICE,
        "rollout_id": "ro-1",
        "seq": 7,
        "op": "rollback",
        "issued_at": NOW,
        "expires_at": NOW + 600,
    }
    return Bundle(**(fields | changes))


def stage(**changes: Any) -> Bundle:
    """A trust stage of one CA chain item for DEVICE."""
    fields: dict[str, Any] = {
        "op": "stage",
        "tag": 43,
        "credentials": (Credential(CredentialType.CA_CHAIN, CA_PEM),),
        "probe": Probe(host="probe.example", port=443, tags=(43,)),
        "active": (43,),
        "commit_by": NOW + 3600,
    }
    return bundle(**(fields | changes))


def delegated(
    payload: Bundle | bytes,
    delegation: bytes | None = None,
    *,
    key: ec.EllipticCurvePrivateKey = WORKER_KEY,
    kid: bytes | None = None,
) -> bytes:
    """`payload` signed by `key` under `delegation` (a fresh default one if None)."""
    data = encode_payload(payload) if isinstance(payload, Bundle) else payload
    return sign1(
        data,
        private_key=key,
        kid=key_id(key.public_key()) if kid is None else kid,
        delegation=delegate() if delegation is None else delegation,
    )


def open_at(
    data: bytes,
    *,
    now: int = NOW,
    revocation: Revocation = Revocation(),  # noqa: B008 - frozen
    last_seq: int = 1,
) -> Bundle:
    """`open_bundle` on DEVICE, which trusts ROOT only."""
    return open_bundle(
        data,
        signers=ROOTS,
        device_id=DEVICE,
        last_seq=last_seq,
        now=datetime.fromtimestamp(now, UTC),
        revocation=revocation,
    )


def refusal(data: bytes, **kwargs: Any) -> BundleRejectedError:
    """The rejection `open_at` raises."""
    with pytest.raises(BundleRejectedError) as caught:
        open_at(data, **kwargs)
    return caught.value


def with_protected(
    message: bytes, protected: Mapping[int | str, Any], key: ec.EllipticCurvePrivateKey
) -> bytes:
    """`message` re-signed by `key` with another protected header."""
    decoded = Sign1Message.decode(message)
    protected_bytes = cbor2.dumps(protected, canonical=True)
    unsigned = Sign1Message(
        protected_bytes=protected_bytes,
        protected=protected,
        unprotected={},
        payload=decoded.payload,
        signature=bytes(64),
    )
    return replace(unsigned, signature=es256_sign(key, unsigned.sig_structure())).encode()


def flipped_signature(message: bytes) -> bytes:
    """`message` with the last byte of its signature changed."""
    return message[:-1] + bytes([message[-1] ^ 0x01])


# -- sign and decode -----------------------------------------------------------------


def test_a_delegation_round_trips_with_its_wire_form() -> None:
    """sign_delegation writes the table of protocol.md §3; decode_delegation reads it back."""
    # given
    scope = Scope(ops=("stage", "commit"), kinds=(0,), rollouts=("ro-1", ""))
    # when
    data = delegate(scope=scope, not_before=NOW - 5, expires_at=NOW + 100, issued_at=NOW - 7)
    message, delegation = decode_delegation(data)
    # then
    assert data[0] == 0xD2  # tag 18
    assert message.protected == {1: -7, 4: ROOT_KID}
    assert message.unprotected == {}
    message.verify(ROOT_KEY.public_key())
    assert list(payload_document(data)) == [
        "v",
        "exp",
        "iat",
        "kid",
        "nbf",
        "ops",
        "pub",
        "rids",
        "kinds",
    ]
    assert payload_document(data)["v"] == 1
    assert delegation == Delegation(
        kid=WORKER_KID,
        public_point=bytes.fromhex("04")
        + WORKER_KEY.public_key().public_numbers().x.to_bytes(32, "big")
        + WORKER_KEY.public_key().public_numbers().y.to_bytes(32, "big"),
        not_before=NOW - 5,
        expires_at=NOW + 100,
        issued_at=NOW - 7,
        scope=scope,
        root_kid=ROOT_KID,
    )
    assert key_id(delegation.public_key()) == WORKER_KID


def test_a_delegation_without_rollouts_has_no_rids_key() -> None:
    """`rids` is optional: absent, the delegation covers every rollout."""
    # when
    data = delegate()
    # then
    assert list(payload_document(data)) == ["v", "exp", "iat", "kid", "nbf", "ops", "pub", "kinds"]
    assert decode_delegation(data)[1].scope.rollouts == ()
    assert len(data) == 250


def test_the_largest_delegation_fits_its_limit() -> None:
    """Every op, every kind, four 64-byte rids and 64-bit times: within 640 bytes."""
    # given
    scope = Scope(ops=DELEGABLE_OPS, kinds=tuple(range(6)), rollouts=tuple(c * 64 for c in "abcd"))
    # when
    data = delegate(
        scope=scope, not_before=UINT64_MAX - 1, expires_at=UINT64_MAX, issued_at=UINT64_MAX
    )
    # then
    assert len(data) == LARGEST_DELEGATION_BYTES <= DELEGATION_MAX_BYTES
    assert decode_delegation(data)[1].scope == scope


LARGEST_DELEGATION_BYTES: Final = 537
"""The figure docs/protocol.md §3 gives for the largest delegation."""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"not_before": NOW, "expires_at": NOW}, "before its expires_at"),
        ({"not_before": -1}, "epoch seconds"),
        ({"expires_at": UINT64_MAX + 1}, "epoch seconds"),
        ({"key": ec.derive_private_key(5, ec.SECP384R1())}, "P-256"),
    ],
)
def test_sign_delegation_refuses_what_no_device_accepts(kwargs: dict[str, Any], match: str) -> None:
    """Times out of order or range, or a key other than P-256: DelegationError, nothing signed."""
    # when / then
    with pytest.raises(DelegationError, match=match):
        delegate(**kwargs)


@pytest.mark.parametrize(
    ("ops", "kinds", "rollouts", "match"),
    [
        (("trust-signer",), (0,), (), "root key only"),
        (("stage", "revoke"), (0,), (), "root key only"),
        ((), (0,), (), "1 to 5 distinct operations"),
        (("stage", "stage"), (0,), (), "distinct operations"),
        (("deploy",), (0,), (), "distinct operations"),
        (("stage",), (), (), "credential types"),
        (("stage",), (6,), (), "credential types"),
        (("stage",), (0, 0), (), "credential types"),
        (("stage",), (0,), ("a", "b", "c", "d", "e"), "at most 4"),
        (("stage",), (0,), ("a", "a"), "distinct rollout ids"),
        (("stage",), (0,), ("r" * 65,), "64 bytes"),
    ],
)
def test_a_scope_checks_itself(
    ops: tuple[str, ...], kinds: tuple[int, ...], rollouts: tuple[str, ...], match: str
) -> None:
    """A scope no delegation may carry is a DelegationError that says what is allowed."""
    # when / then
    with pytest.raises(DelegationError, match=match):
        Scope(ops=ops, kinds=kinds, rollouts=rollouts)


# -- a delegated bundle ----------------------------------------------------------------


def test_a_delegated_bundle_carries_its_delegation_in_the_protected_header() -> None:
    """Protected {1: -7, 4: delegated kid, -65537: delegation}, in that order, signed by the
    delegated key; the device opens it with only the root trusted."""
    # given
    delegation = delegate()
    # when
    data = delegated(bundle(), delegation)
    # then
    message = Sign1Message.decode(data)
    assert list(message.protected) == [1, 4, DELEGATION_LABEL]
    assert message.protected[4] == WORKER_KID
    assert message.protected[DELEGATION_LABEL] == delegation
    assert b"\x3a\x00\x01\x00\x00" in message.protected_bytes
    message.verify(WORKER_KEY.public_key())
    assert open_at(data) == bundle()
    assert delegation_of(data) == decode_delegation(delegation)[1]


def test_a_root_signed_bundle_carries_no_delegation_and_still_opens() -> None:
    """Without label -65537 the bundle is a root's: its kid must be a trusted root key."""
    # given
    data = sign1(encode_payload(bundle()), private_key=ROOT_KEY, kid=ROOT_KID)
    # then
    assert open_at(data) == bundle()
    assert delegation_of(data) is None
    assert delegation_of(b"not a bundle") is None


def test_an_online_key_without_a_delegation_is_an_unknown_key() -> None:
    """The worker's key signing on its own is not a key the device trusts."""
    # given
    data = sign1(encode_payload(bundle()), private_key=WORKER_KEY, kid=WORKER_KID)
    # then
    assert refusal(data).reason is Reason.UNKNOWN_KEY


def test_a_delegation_by_an_unknown_root_is_an_unknown_key() -> None:
    """A delegation signed by a key the device does not trust as a root."""
    # given
    data = delegated(bundle(), delegate(root=Root(STRANGER_KEY)))
    # then
    error = refusal(data)
    assert error.reason is Reason.UNKNOWN_KEY
    assert "root key" in error.detail


def test_a_delegation_with_a_bad_root_signature_is_a_bad_signature() -> None:
    """The delegation's signature is checked with the root key (check 5)."""
    # given
    data = delegated(bundle(), flipped_signature(delegate()))
    # then
    assert refusal(data).reason is Reason.BAD_SIGNATURE


def test_a_delegation_with_another_algorithm_is_unsupported() -> None:
    """Check 4: a delegation whose protected alg is not ES256."""
    # given
    delegation = with_protected(delegate(), {1: -35, 4: ROOT_KID}, ROOT_KEY)
    # then
    assert refusal(delegated(bundle(), delegation)).reason is Reason.UNSUPPORTED_ALGORITHM
    with pytest.raises(BundleRejectedError) as caught:
        decode_delegation(delegation)
    assert caught.value.reason is Reason.UNSUPPORTED_ALGORITHM


def test_a_delegated_bundle_signed_by_another_key_is_a_bad_signature() -> None:
    """Check 5d: the delegation is fine, but the bundle was not signed with its key."""
    # given: the delegated kid in the header, another key's signature
    data = delegated(bundle(), key=OTHER_WORKER_KEY, kid=WORKER_KID)
    # then
    assert refusal(data).reason is Reason.BAD_SIGNATURE


def test_a_bundle_whose_kid_is_not_the_delegated_key_is_a_bad_delegation() -> None:
    """Check 5a: a valid delegation of one key does not speak for another key's bundle."""
    # given: a bundle signed by another key, with that key's kid, under WORKER_KEY's delegation
    data = delegated(bundle(), delegate(), key=OTHER_WORKER_KEY)
    # then
    error = refusal(data)
    assert error.reason is Reason.BAD_DELEGATION
    assert "kid" in error.detail


# -- bad_delegation: every rule of the delegation's form and payload -------------------


def _document(**changes: Any) -> dict[str, Any]:
    document = payload_document(delegate())
    for key, value in changes.items():
        if value is _DROP:
            del document[key]
        else:
            document[key] = value
    return document


_DROP: Final = object()
OTHER_POINT: Final = bytes.fromhex("04") + bytes(range(1, 65))  # not on the curve
COMPRESSED: Final = b"\x02" + bytes(64)


def _uncanonical(document: dict[str, Any]) -> bytes:
    """The map with its keys in insertion order (cbor2 without `canonical`)."""
    return cbor2.dumps(document)


BAD_PAYLOADS: Final[dict[str, Callable[[], bytes | dict[str, Any]]]] = {
    "not CBOR": lambda: b"\xff\x00",
    "not a map": lambda: cbor2.dumps(["v", 1]),
    "trailing bytes": lambda: cbor2.dumps(_document(), canonical=True) + b"\x00",
    "v 2": lambda: _document(v=2),
    "v true": lambda: _document(v=True),
    "v missing": lambda: _document(v=_DROP),
    "exp negative": lambda: _document(exp=-1),
    "exp text": lambda: _document(exp="soon"),
    "exp a bignum": lambda: _document(exp=UINT64_MAX + 1),
    "iat missing": lambda: _document(iat=_DROP),
    "nbf a float": lambda: _document(nbf=1.5),
    "nbf equal to exp": lambda: _document(nbf=NOW + 48 * 3600),
    "nbf after exp": lambda: _document(nbf=NOW + 49 * 3600),
    "kid 7 bytes": lambda: _document(kid=WORKER_KID[:7]),
    "kid text": lambda: _document(kid=WORKER_KID.hex()),
    "kid not the key's": lambda: _document(kid=key_id(OTHER_WORKER_KEY.public_key())),
    "pub 64 bytes": lambda: _document(pub=OTHER_POINT[1:]),
    "pub compressed": lambda: _document(pub=COMPRESSED),
    "pub not on the curve": lambda: _document(pub=OTHER_POINT),
    "ops empty": lambda: _document(ops=[]),
    "ops not a list": lambda: _document(ops="stage"),
    "ops repeated": lambda: _document(ops=["stage", "stage"]),
    "ops unknown": lambda: _document(ops=["stage", "deploy"]),
    "ops trust-signer": lambda: _document(ops=["trust-signer"]),
    "ops revoke": lambda: _document(ops=["stage", "revoke"]),
    "ops an int": lambda: _document(ops=[1]),
    "kinds empty": lambda: _document(kinds=[]),
    "kinds 6": lambda: _document(kinds=[0, 6]),
    "kinds negative": lambda: _document(kinds=[-1]),
    "kinds repeated": lambda: _document(kinds=[0, 0]),
    "kinds text": lambda: _document(kinds=["0"]),
    "kinds missing": lambda: _document(kinds=_DROP),
    "rids empty": lambda: _document(rids=[]),
    "rids five": lambda: _document(rids=["a", "b", "c", "d", "e"]),
    "rids repeated": lambda: _document(rids=["a", "a"]),
    "rid 65 bytes": lambda: _document(rids=["r" * 65]),
    "rid bytes": lambda: _document(rids=[b"ro-1"]),
    "unknown key": lambda: _document(zone="eu"),
    "keys out of order": lambda: _uncanonical(dict(reversed(list(_document().items())))),
    "uint not shortest": lambda: cbor2.dumps(_document(), canonical=True).replace(
        b"\x61v\x01", b"\x61v\x18\x01"
    ),
}


@pytest.mark.parametrize("name", BAD_PAYLOADS)
def test_a_delegation_payload_that_breaks_a_rule_is_a_bad_delegation(name: str) -> None:
    """Every rule of the delegation table (check 5a), on a delegation the root did sign."""
    # given
    delegation = signed_by_root(BAD_PAYLOADS[name]())
    # when
    error = refusal(delegated(bundle(), delegation))
    # then
    assert error.reason is Reason.BAD_DELEGATION, error.detail
    with pytest.raises(BundleRejectedError) as caught:
        decode_delegation(delegation)
    assert caught.value.reason is Reason.BAD_DELEGATION


def _envelope(protected: dict[int, Any], unprotected: dict[int, Any] | None = None) -> bytes:
    message = Sign1Message.decode(delegate())
    return cbor2.dumps(
        cbor2.CBORTag(
            18,
            [
                cbor2.dumps(protected, canonical=True),
                unprotected or {},
                message.payload,
                message.signature,
            ],
        ),
        canonical=True,
    )


BAD_FORMS: Final[dict[str, Callable[[], object]]] = {
    "a text string": lambda: "delegation",
    "an array": lambda: [1, 2],
    "over 640 bytes": lambda: delegate() + bytes(DELEGATION_MAX_BYTES),
    "untagged": lambda: delegate()[1:],
    "another tag": lambda: b"\xd8\x62" + delegate()[1:],
    "three items": lambda: cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])),
    "not CBOR": lambda: b"\xd2\xff",
    "a header in the unprotected map": lambda: _envelope({1: -7, 4: ROOT_KID}, {5: b"iv"}),
    "another protected label": lambda: _envelope({1: -7, 4: ROOT_KID, 3: 0}),
    "a nested delegation": lambda: _envelope({1: -7, 4: ROOT_KID, DELEGATION_LABEL: b""}),
    "a kid of another type": lambda: _envelope({1: -7, 4: "root"}),
}


@pytest.mark.parametrize("name", BAD_FORMS)
def test_a_malformed_delegation_is_a_bad_delegation(name: str) -> None:
    """Check 4: label -65537 holds a byte string of at most 640 bytes, a tagged COSE_Sign1
    with exactly alg and kid protected and nothing unprotected."""
    # given
    value = BAD_FORMS[name]()
    protected: dict[int | str, Any] = {1: -7, 4: WORKER_KID, DELEGATION_LABEL: value}
    data = with_protected(
        sign1(encode_payload(bundle()), private_key=WORKER_KEY, kid=WORKER_KID),
        protected,
        WORKER_KEY,
    )
    # when
    error = refusal(data)
    # then
    assert error.reason is Reason.BAD_DELEGATION, error.detail


def test_a_delegation_without_a_kid_is_an_unknown_key() -> None:
    """As a bundle without a kid: no root key to look up (check 4)."""
    # given
    data = delegated(bundle(), _envelope({1: -7}))
    # then
    assert refusal(data).reason is Reason.UNKNOWN_KEY


# -- revocation and validity -----------------------------------------------------------


def test_a_revoked_kid_is_refused() -> None:
    """Check 5b: the delegated key's id is in the device's list."""
    # given
    revocation = Revocation(frozenset({WORKER_KID}))
    # then
    error = refusal(delegated(bundle()), revocation=revocation)
    assert error.reason is Reason.DELEGATION_REVOKED
    assert WORKER_KID.hex() in error.detail
    assert open_at(
        delegated(bundle(), delegate(key=OTHER_WORKER_KEY), key=OTHER_WORKER_KEY),
        revocation=revocation,
    )


def test_a_delegation_issued_before_the_revocation_time_is_refused() -> None:
    """Check 5b: `iat` < before is revoked, `iat` == before is not."""
    # given
    revocation = Revocation(before=NOW)
    old, fresh = delegate(issued_at=NOW - 1), delegate(issued_at=NOW)
    # then
    assert (
        refusal(delegated(bundle(), old), revocation=revocation).reason is Reason.DELEGATION_REVOKED
    )
    assert open_at(delegated(bundle(), fresh), revocation=revocation) == bundle()


def test_a_revocation_does_not_touch_root_signed_bundles() -> None:
    """Revocation is of delegations: the root itself stays trusted."""
    # given
    revocation = Revocation(frozenset({ROOT_KID}), before=NOW + 10**6)
    data = sign1(encode_payload(bundle()), private_key=ROOT_KEY, kid=ROOT_KID)
    # then
    assert open_at(data, revocation=revocation) == bundle()


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (NOW - 300, True),  # nbf = now + 300: within the clock skew
        (NOW - 301, False),  # nbf one second further ahead
        (NOW + 3599, True),  # the last second before exp
        (NOW + 3600, False),  # at exp
    ],
)
def test_a_delegation_is_valid_from_nbf_less_the_skew_until_exp(now: int, accepted: bool) -> None:
    """Check 5c: nbf <= now + 300 and now < exp, else `delegation_expired`."""
    # given: the bundle itself valid throughout
    delegation = delegate(not_before=NOW, expires_at=NOW + 3600)
    data = delegated(bundle(issued_at=NOW - 400, expires_at=NOW + 7200), delegation)
    # then
    if accepted:
        assert open_at(data, now=now).seq == 7
    else:
        assert refusal(data, now=now).reason is Reason.DELEGATION_EXPIRED


def test_revocation_applies_a_revoke_op() -> None:
    """The list is replaced, the time never lowered, and at most 8 kids are kept."""
    # given
    state = Revocation(frozenset({b"a" * 8, b"b" * 8}), before=100)
    # when
    after = state.applied([b"c" * 8], 50)
    cleared = after.applied([], 0)
    # then
    assert after == Revocation(frozenset({b"c" * 8}), before=100)
    assert cleared == Revocation(before=100)
    assert state.applied([], 200).before == 200
    with pytest.raises(DelegationError, match="at most 8"):
        Revocation(frozenset(bytes([i]) * 8 for i in range(REVOKED_KIDS_MAX + 1)))
    with pytest.raises(DelegationError, match="8 bytes"):
        Revocation(frozenset({b"short"}))


# -- scope ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ROOT_OPS)
def test_a_root_only_op_under_a_delegation_is_out_of_scope(op: str) -> None:
    """trust-signer and revoke are refused under a delegation of everything delegable;
    the same bundle signed by the root is accepted."""
    # given
    point = STRANGER_KEY.public_key().public_numbers()
    body: dict[str, Any] = (
        {
            "signer": SignerKey(
                kid=key_id(STRANGER_KEY.public_key()),
                public_point=b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big"),
            )
        }
        if op == "trust-signer"
        else {"revoke_kids": (WORKER_KID,), "revoke_before": 0}
    )
    root_op = bundle(op=op, **body)
    # when
    error = refusal(
        delegated(root_op, delegate(scope=Scope(ops=DELEGABLE_OPS, kinds=tuple(range(6)))))
    )
    # then
    assert error.reason is Reason.OUT_OF_SCOPE
    assert "root key only" in error.detail
    assert open_at(sign1(encode_payload(root_op), private_key=ROOT_KEY, kid=ROOT_KID)) == root_op


@pytest.mark.parametrize(
    ("scope", "payload", "detail"),
    [
        (Scope(ops=("stage",), kinds=(0,)), bundle(op="commit", tag=43), "does not cover commit"),
        (Scope(ops=("stage",), kinds=(1,)), stage(), "credential type 0"),
        (Scope(ops=("rollback",), kinds=(0,), rollouts=("ro-2",)), bundle(), "rollout 'ro-1'"),
        (
            Scope(ops=("rollback",), kinds=(0,), rollouts=("ro-2",)),
            bundle(rollout_id=""),
            "rollout ''",
        ),
    ],
)
def test_a_bundle_outside_its_delegation_is_out_of_scope(
    scope: Scope, payload: Bundle, detail: str
) -> None:
    """Check 7a: the op, each credential type and the rid must be in the delegation."""
    # when
    error = refusal(delegated(payload, delegate(scope=scope)))
    # then
    assert error.reason is Reason.OUT_OF_SCOPE
    assert detail in error.detail
    assert scope.refusal(payload) == error.detail


@pytest.mark.parametrize(
    ("scope", "payload"),
    [
        (Scope(ops=("stage",), kinds=(0,)), stage()),
        (Scope(ops=("stage",), kinds=(1, 0), rollouts=("x", "ro-1")), stage()),
        (Scope(ops=("rollback",), kinds=(0,), rollouts=("",)), bundle(rollout_id="")),
        (Scope(ops=("keygen", "commit"), kinds=(5,)), bundle(op="commit", tag=43)),
    ],
)
def test_a_bundle_within_its_delegation_is_accepted(scope: Scope, payload: Bundle) -> None:
    """A kinds list does not bind ops without credentials; rids may name the empty rid."""
    # then
    assert scope.refusal(payload) is None
    assert open_at(delegated(payload, delegate(scope=scope))) == payload


# -- the order of the checks -----------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """A delegated bundle with any of the faults below; each breaks exactly one check."""

    on: frozenset[str] = field(default_factory=frozenset)

    def data(self) -> bytes:
        root = Root(STRANGER_KEY) if "unknown root" in self.on else ROOT
        scope = Scope(
            ops=("rollback",), kinds=(0,), rollouts=("other",) if "scope" in self.on else ()
        )
        expires = NOW - 10 if "expired" in self.on else NOW + 3600
        delegation = delegate(root=root, scope=scope, not_before=NOW - 3600, expires_at=expires)
        if "root signature" in self.on:
            delegation = flipped_signature(delegation)
        document = cbor2.loads(encode_payload(bundle()))
        if "payload" in self.on:
            document["zone"] = "eu"
        if "version" in self.on:
            document["v"] = 9
        if "device" in self.on:
            document["dev"] = "nrf-2"
        if "bundle expired" in self.on:
            document["iat"], document["exp"] = NOW - 100, NOW - 1
        kid = key_id(OTHER_WORKER_KEY.public_key()) if "kid" in self.on else WORKER_KID
        data = sign1(
            cbor2.dumps(document, canonical=True),
            private_key=WORKER_KEY,
            kid=kid,
            delegation=delegation,
        )
        if "bundle alg" in self.on:
            message = Sign1Message.decode(data)
            data = with_protected(data, {**message.protected, 1: -35}, WORKER_KEY)
        if "bundle signature" in self.on:
            data = flipped_signature(data)
        return data

    def revocation(self) -> Revocation:
        return Revocation(frozenset({WORKER_KID})) if "revoked" in self.on else Revocation()

    def last_seq(self) -> int:
        return 100 if "replay" in self.on else 1


ORDER: Final[tuple[tuple[str, Reason], ...]] = (
    ("bundle alg", Reason.UNSUPPORTED_ALGORITHM),  # 3
    ("unknown root", Reason.UNKNOWN_KEY),  # 4
    ("root signature", Reason.BAD_SIGNATURE),  # 5
    ("kid", Reason.BAD_DELEGATION),  # 5a
    ("revoked", Reason.DELEGATION_REVOKED),  # 5b
    ("expired", Reason.DELEGATION_EXPIRED),  # 5c
    ("bundle signature", Reason.BAD_SIGNATURE),  # 5d
    ("payload", Reason.BAD_PAYLOAD),  # 6
    ("version", Reason.UNSUPPORTED_VERSION),  # 7
    ("scope", Reason.OUT_OF_SCOPE),  # 7a
    ("device", Reason.WRONG_DEVICE),  # 8
    ("replay", Reason.REPLAY),  # 9
    ("bundle expired", Reason.BUNDLE_EXPIRED),  # 10
)
"""Each fault with the reason of the check it breaks, in the order of protocol.md §4."""


def reason_of(faults: Iterable[str]) -> Reason:
    """What the device answers to a bundle with these faults (OK: accepted)."""
    chosen = Faults(frozenset(faults))
    try:
        open_at(chosen.data(), revocation=chosen.revocation(), last_seq=chosen.last_seq())
    except BundleRejectedError as exc:
        return exc.reason
    return Reason.OK


@pytest.mark.parametrize("first", range(len(ORDER)), ids=[name for name, _ in ORDER])
def test_each_check_refuses_before_the_next(first: int) -> None:
    """With every fault from the `first` on, the device gives the `first` one's reason."""
    # given
    faults = [name for name, _ in ORDER[first:]]
    # then
    assert reason_of(faults) is ORDER[first][1]
    assert reason_of([ORDER[first][0]]) is ORDER[first][1]


def test_without_faults_the_bundle_is_accepted() -> None:
    """The ladder's base case."""
    assert reason_of([]) is Reason.OK


def test_the_unverified_reasons_are_those_of_checks_2_to_5d() -> None:
    """A rejection with one of them names no bundle; from check 6 on it does."""
    # then
    before_payload = {reason for name, reason in ORDER[: [n for n, _ in ORDER].index("payload")]}
    assert before_payload <= UNVERIFIED_REASONS
    assert before_payload | {Reason.BAD_ENVELOPE} == UNVERIFIED_REASONS
    assert (
        not {reason for _, reason in ORDER[[n for n, _ in ORDER].index("payload") :]}
        & UNVERIFIED_REASONS
    )


# -- signing through the service -------------------------------------------------------


@dataclass
class DelegatingSigner:
    """A `BundleSigner` with a delegated key, recording what it was asked."""

    delegation: bytes = field(default_factory=delegate)
    asked: list[int] = field(default_factory=list)

    @property
    def key_id(self) -> bytes:
        return WORKER_KID

    def sign(self, to_be_signed: bytes) -> bytes:
        return es256_sign(WORKER_KEY, to_be_signed)

    def delegation_for(self, expires_at: int) -> bytes | None:
        self.asked.append(expires_at)
        return self.delegation


def test_issue_bundle_asks_the_signer_for_the_delegation_covering_the_bundle() -> None:
    """services/bundles puts the signer's delegation for the bundle's exp into its header."""
    # given
    signer = DelegatingSigner()
    # when
    issued = issue_bundle(
        signer=signer,
        sequences=FakeSequences(),
        device_id=DEVICE,
        rollout_id="ro-1",
        body=BundleBody(op="rollback"),
        now=WHEN,
        ttl_seconds=600,
    )
    # then
    assert signer.asked == [NOW + 600]
    assert Sign1Message.decode(issued.data).protected[DELEGATION_LABEL] == signer.delegation
    assert open_at(issued.data, last_seq=0) == issued.bundle


def test_a_root_signer_sends_revoke_without_a_delegation(tmp_path: Path) -> None:
    """The file signer is a root key: no delegation, and a revoke it signs is accepted."""
    # given
    path = tmp_path / "root.pem"
    generate_key_file(path)
    root = FileSigner(path)
    # when
    issued = issue_bundle(
        signer=root,
        sequences=FakeSequences(),
        device_id=DEVICE,
        rollout_id="",
        body=revoke_body([WORKER_KID], NOW),
        now=WHEN,
        ttl_seconds=600,
    )
    # then
    assert root.delegation_for(NOW) is None
    assert DELEGATION_LABEL not in Sign1Message.decode(issued.data).protected
    opened = open_bundle(
        issued.data,
        signers={root.key_id: root.public_key},
        device_id=DEVICE,
        last_seq=0,
        now=WHEN,
    )
    assert (opened.op, opened.revoke_kids, opened.revoke_before) == ("revoke", (WORKER_KID,), NOW)
