"""Properties of delegations: strict decoding, the refusal order, scope and revocation.

The examples are derandomized in `make test` and many more in `make fuzz`
(tests/properties.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType
from orchestrator.protocol.bundle import BundleRejectedError, Credential, Reason, SignerKey
from orchestrator.protocol.cose import Sign1Message, key_id
from orchestrator.protocol.delegation import (
    DELEGABLE_OPS,
    DELEGATION_LABEL,
    DELEGATION_MAX_BYTES,
    DELEGATION_RIDS_MAX,
    REVOKED_KIDS_MAX,
    ROOT_OPS,
    Delegation,
    Revocation,
    Scope,
    decode_delegation,
)
from orchestrator.protocol.payload import UINT64_MAX
from orchestrator.protocol.reasons import UNVERIFIED_REASONS
from tests.properties import examples
from tests.unit.test_delegation import (
    CA_PEM,
    NOW,
    ORDER,
    ROOT_KID,
    WORKER_KEY,
    WORKER_KID,
    bundle,
    delegate,
    delegated,
    open_at,
    payload_document,
    reason_of,
    signed_by_root,
    stage,
    with_protected,
)

pytestmark = pytest.mark.unit

_RIDS = st.lists(st.text(max_size=16), max_size=DELEGATION_RIDS_MAX, unique=True)
"""Up to 4 rollout ids of at most 16 characters: at most 64 bytes of UTF-8."""
_SCOPES = st.builds(
    Scope,
    ops=st.lists(st.sampled_from(DELEGABLE_OPS), min_size=1, unique=True).map(tuple),
    kinds=st.lists(st.integers(0, 5), min_size=1, unique=True).map(tuple),
    rollouts=_RIDS.map(tuple),
)


@settings(max_examples=examples(60))
@given(
    scope=_SCOPES,
    not_before=st.integers(0, UINT64_MAX - 1),
    length=st.integers(1, UINT64_MAX),
    issued_at=st.integers(0, UINT64_MAX),
)
def test_any_delegation_round_trips_within_its_limit(
    scope: Scope, not_before: int, length: int, issued_at: int
) -> None:
    """What sign_delegation writes, decode_delegation reads back, within 640 bytes."""
    # given
    expires_at = min(UINT64_MAX, not_before + length)
    # when
    data = delegate(scope=scope, not_before=not_before, expires_at=expires_at, issued_at=issued_at)
    # then
    assert len(data) <= DELEGATION_MAX_BYTES
    _, delegation = decode_delegation(data)
    assert (delegation.scope, delegation.kid, delegation.root_kid) == (scope, WORKER_KID, ROOT_KID)
    assert (delegation.not_before, delegation.expires_at, delegation.issued_at) == (
        not_before,
        expires_at,
        issued_at,
    )


@settings(max_examples=examples(200))
@given(data=st.data())
def test_a_changed_byte_of_the_delegation_is_refused_without_naming_the_bundle(
    data: st.DataObject,
) -> None:
    """Flip any bits of any byte of a delegation (and have the worker sign the bundle
    anyway): the device refuses it at checks 2 to 5d, whose rejection names no bundle."""
    # given
    delegation = bytearray(delegate())
    position = data.draw(st.integers(0, len(delegation) - 1), label="position")
    delegation[position] ^= data.draw(st.integers(1, 255), label="mask")
    # when
    with pytest.raises(BundleRejectedError) as caught:
        open_at(delegated(bundle(), bytes(delegation)))
    # then
    assert caught.value.reason in UNVERIFIED_REASONS


_CBOR = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False)
    | st.binary(max_size=70)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = st.sampled_from(["v", "exp", "iat", "kid", "nbf", "ops", "pub", "rids", "kinds", "x"])


@settings(max_examples=examples(150))
@given(changes=st.dictionaries(_KEYS, _CBOR | st.just(None), min_size=1, max_size=3))
def test_any_root_signed_payload_is_read_or_refused_as_bad_delegation(
    changes: dict[str, Any],
) -> None:
    """A payload the root signed with any keys changed, added or dropped (None) is either
    a valid delegation or `bad_delegation`, never another error."""
    # given
    document = payload_document(delegate())
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    # when
    try:
        _, delegation = decode_delegation(signed_by_root(document))
    except BundleRejectedError as exc:
        reason = exc.reason
    else:
        reason = Reason.OK
        assert key_id(delegation.public_key()) == delegation.kid
    # then
    assert reason in {Reason.OK, Reason.BAD_DELEGATION}


@settings(max_examples=examples(100))
@given(data=st.binary(max_size=DELEGATION_MAX_BYTES + 8))
def test_any_bytes_in_label_minus_65537_are_refused_before_the_payload(data: bytes) -> None:
    """Whatever the label holds, a device that does not accept it names no bundle."""
    # given
    protected: dict[int | str, Any] = {1: -7, 4: WORKER_KID, DELEGATION_LABEL: data}
    message = with_protected(delegated(bundle()), protected, WORKER_KEY)
    # when
    with pytest.raises(BundleRejectedError) as caught:
        open_at(message)
    # then
    assert caught.value.reason in UNVERIFIED_REASONS


@settings(max_examples=examples(40), deadline=None)
@given(faults=st.sets(st.sampled_from([name for name, _ in ORDER])))
def test_the_first_failing_check_gives_the_reason(faults: set[str]) -> None:
    """Any set of faults, each breaking one check: the device names the earliest check's."""
    # given
    expected = next((reason for name, reason in ORDER if name in faults), Reason.OK)
    # then
    assert reason_of(faults) is expected


_OPS_WITH_BODIES: dict[str, dict[str, Any]] = {
    "rollback": {},
    "commit": {"tag": 43},
    "retire": {"tags": (44,), "active": (43,)},
    "keygen": {"tag": 45, "subject": "nrf-1", "commit_by": NOW + 60},
    "revoke": {"revoke_kids": (), "revoke_before": 0},
}


@settings(max_examples=examples(100))
@given(
    scope=_SCOPES,
    op=st.sampled_from(("stage", *_OPS_WITH_BODIES, "trust-signer")),
    kinds=st.lists(st.sampled_from([0, 3, 4, 5]), min_size=1, max_size=3, unique=True),
    rid=st.sampled_from(["", "ro-1", "ro-2"]),
)
def test_scope_refuses_exactly_what_the_table_says(
    scope: Scope, op: str, kinds: list[int], rid: str
) -> None:
    """out_of_scope iff a root-only op, an op not in ops, a creds type not in kinds, or a
    rid not in rids (when there are rids)."""
    # given
    if op == "stage":
        items = tuple(Credential(CredentialType(k), CA_PEM) for k in kinds)
        payload = stage(rollout_id=rid, credentials=items)
    elif op == "trust-signer":
        point = WORKER_KEY.public_key().public_numbers()
        raw = b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
        payload = bundle(op=op, rollout_id=rid, signer=SignerKey(kid=WORKER_KID, public_point=raw))
    else:
        payload = bundle(op=op, rollout_id=rid, **_OPS_WITH_BODIES[op])
    allowed = (
        op not in ROOT_OPS
        and op in scope.ops
        and all(int(c.type) in scope.kinds for c in payload.credentials)
        and (not scope.rollouts or rid in scope.rollouts)
    )
    # then
    assert (scope.refusal(payload) is None) == allowed


_KIDS = st.lists(st.binary(min_size=8, max_size=8), max_size=REVOKED_KIDS_MAX, unique=True)


@settings(max_examples=examples(100))
@given(
    revokes=st.lists(st.tuples(_KIDS, st.integers(0, 2**40)), max_size=6),
    kid=st.binary(min_size=8, max_size=8),
    issued_at=st.integers(0, 2**40),
)
def test_a_device_revokes_by_its_last_list_and_its_highest_time(
    revokes: list[tuple[list[bytes], int]], kid: bytes, issued_at: int
) -> None:
    """After any sequence of revoke ops: the list is the last one, the time the highest."""
    # given
    state = Revocation()
    for kids, before in revokes:
        state = state.applied(kids, before)
    delegation = Delegation(
        kid=kid,
        public_point=b"",
        not_before=0,
        expires_at=1,
        issued_at=issued_at,
        scope=Scope(ops=("stage",), kinds=(0,)),
        root_kid=ROOT_KID,
    )
    last = set(revokes[-1][0]) if revokes else set()
    highest = max((before for _, before in revokes), default=0)
    # then
    assert state == Revocation(frozenset(last), highest)
    assert state.revokes(delegation) == (kid in last or issued_at < highest)


def test_a_flipped_bundle_signature_under_a_good_delegation_is_unverified() -> None:
    """The property above, at the bundle's own signature: check 5d, no bundle named."""
    # given
    data = bytearray(delegated(bundle()))
    data[-1] ^= 1
    # then
    with pytest.raises(BundleRejectedError) as caught:
        open_at(bytes(data))
    assert caught.value.reason is Reason.BAD_SIGNATURE
    assert Reason.BAD_SIGNATURE in UNVERIFIED_REASONS
    assert Sign1Message.decode(bytes(data)).protected[4] == WORKER_KID
