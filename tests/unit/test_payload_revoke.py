"""The `revoke` op's payload: `kids` (the whole revoked list) and `before` (issue 17).

A root key sends it; the device replaces its revoked key ids with `kids` and raises its
revocation time to `before`. The payload rules are checked at check 6 (`bad_payload`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import cbor2
import pytest

from orchestrator.protocol.bundle import (
    UINT64_MAX,
    Bundle,
    BundleRejectedError,
    PayloadTemplate,
    Reason,
    decode_payload,
    encode_payload,
)
from orchestrator.protocol.limits import REVOKED_KIDS_MAX

pytestmark = pytest.mark.unit

NOW: Final = 1_800_000_000
KIDS: Final = tuple(bytes([i]) * 8 for i in range(REVOKED_KIDS_MAX))


def revoke(**changes: Any) -> Bundle:
    """A revoke of two key ids and everything issued before NOW."""
    fields: dict[str, Any] = {
        "device_id": "nrf-1",
        "rollout_id": "",
        "seq": 9,
        "op": "revoke",
        "issued_at": NOW,
        "expires_at": NOW + 600,
        "revoke_kids": KIDS[:2],
        "revoke_before": NOW,
    }
    return Bundle(**(fields | changes))


def document(**changes: Any) -> dict[str, Any]:
    """The payload map of `revoke()`, changed."""
    doc: dict[str, Any] = cbor2.loads(encode_payload(revoke()))
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return doc


def test_a_revoke_round_trips_with_its_keys_in_wire_order() -> None:
    """`kids` (a 4-character key) sorts after the 3-character ones, `before` last."""
    # when
    payload = encode_payload(revoke())
    # then
    assert list(cbor2.loads(payload)) == [
        "v", "op", "dev", "exp", "iat", "rid", "seq", "kids", "before",
    ]  # fmt: skip
    assert decode_payload(payload) == revoke()


@pytest.mark.parametrize(("kids", "before"), [((), 0), (KIDS, UINT64_MAX), ((), NOW)])
def test_an_empty_list_and_a_zero_time_are_valid(kids: tuple[bytes, ...], before: int) -> None:
    """certfleet sends its whole list, which may be empty; `before` 0 revokes none by time."""
    # given
    bundle = revoke(revoke_kids=kids, revoke_before=before)
    # when
    doc = cbor2.loads(encode_payload(bundle))
    # then
    assert (doc["kids"], doc["before"]) == (list(kids), before)
    assert decode_payload(encode_payload(bundle)) == bundle


def test_the_payload_template_writes_a_revoke_as_encode_payload_does() -> None:
    """A revoke sent to many devices goes through the template like every other body."""
    # given
    template = PayloadTemplate.of(revoke())
    # then
    assert template.encode("nrf-77", 12) == encode_payload(
        replace(revoke(), device_id="nrf-77", seq=12)
    )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"kids": [*KIDS, b"\x09" * 8]}, "kids"),
        ({"kids": [KIDS[0], KIDS[0]]}, "distinct"),
        ({"kids": [b"\x01" * 7]}, "8-byte"),
        ({"kids": [KIDS[0].hex()]}, "byte strings"),
        ({"kids": KIDS[0]}, "wrong type"),
        ({"kids": None}, "missing 'kids'"),
        ({"before": None}, "needs before"),
        ({"before": -1}, "unsigned"),
        ({"before": "now"}, "wrong type"),
        ({"before": True}, "wrong type"),
    ],
)
def test_a_revoke_payload_that_breaks_a_rule_is_bad_payload(
    changes: dict[str, Any], match: str
) -> None:
    """At most 8 distinct 8-byte kids, and a uint before, both required (check 6)."""
    # given
    payload = cbor2.dumps(document(**changes), canonical=True)
    # when
    with pytest.raises(BundleRejectedError, match=match) as caught:
        decode_payload(payload)
    # then
    assert caught.value.reason is Reason.BAD_PAYLOAD


def test_other_ops_ignore_kids_and_before_on_the_wire_but_never_build_them() -> None:
    """A device ignores keys another op does not use; certfleet does not write them."""
    # given
    payload = cbor2.dumps(document(op="rollback"), canonical=True)
    # when
    bundle = decode_payload(payload)
    # then
    assert (bundle.op, bundle.revoke_kids, bundle.revoke_before) == ("rollback", (), None)
    with pytest.raises(BundleRejectedError, match="revoke only"):
        revoke(op="rollback")
    with pytest.raises(BundleRejectedError, match="revoke only"):
        revoke(op="rollback", revoke_kids=(), revoke_before=0)
