"""The identity half of the bundle payload: the `keygen` op and the identity stage.

A `keygen` carries the spare identity tag, the subject of the CSR to make and a
deadline; an identity stage carries one client certificate (type 1) and nothing else.
Both sides use these rules: certfleet cannot build a bundle a device refuses, and a
device refuses one that breaks them with its reason (docs/protocol.md §3, §4).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.credentials import CredentialType
from orchestrator.protocol.bundle import (
    Bundle,
    BundleRejectedError,
    Credential,
    Probe,
    Reason,
    decode_payload,
    encode_payload,
    open_bundle,
)
from orchestrator.protocol.cose import key_id, sign1
from orchestrator.protocol.limits import CERT_ITEM_MAX_BYTES, SUBJECT_MAX_BYTES
from tests.properties import examples

pytestmark = pytest.mark.unit

NOW: Final = datetime(2026, 12, 1, tzinfo=UTC)
T: Final = int(NOW.timestamp())
KEY: Final = ec.generate_private_key(ec.SECP256R1())


def _pem_of(size: int) -> str:
    """PEM-shaped ASCII of exactly `size` bytes (only its length matters here)."""
    head, tail = "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"
    body = size - len(head) - len(tail)
    return head + "".join("\n" if (i + 1) % 65 == 0 else "A" for i in range(body)) + tail


def _keygen(**overrides: Any) -> Bundle:
    fields: dict[str, Any] = {
        "device_id": "nrf-1",
        "rollout_id": "ro-1",
        "seq": 7,
        "op": "keygen",
        "issued_at": T,
        "expires_at": T + 3600,
        "tag": 45,
        "subject": "nrf-1",
        "commit_by": T + 600,
    }
    fields.update(overrides)
    return Bundle(**fields)


def _identity_stage(**overrides: Any) -> Bundle:
    fields: dict[str, Any] = {
        "device_id": "nrf-1",
        "rollout_id": "ro-1",
        "seq": 8,
        "op": "stage",
        "issued_at": T,
        "expires_at": T + 3600,
        "tag": 45,
        "credentials": (Credential(CredentialType.CLIENT_CERT, _pem_of(1200)),),
        "probe": Probe(host="broker.example", port=8884, tags=(42,)),
        "active": (42,),
        "commit_by": T + 600,
    }
    fields.update(overrides)
    return Bundle(**fields)


def _refused(make: Any, **overrides: Any) -> BundleRejectedError:
    with pytest.raises(BundleRejectedError) as caught:
        make(**overrides)
    return caught.value


def _decode_changed(bundle: Bundle, **changes: Any) -> Bundle:
    """Decode the bundle's payload with some keys replaced (None: removed)."""
    document = cbor2.loads(encode_payload(bundle))
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return decode_payload(cbor2.dumps(document, canonical=True))


def test_a_keygen_round_trips_with_its_subject() -> None:
    """The payload names op keygen, the tag, the subject and the deadline, and decodes back."""
    # given
    bundle = _keygen()
    # when
    payload = encode_payload(bundle)
    # then
    document = cbor2.loads(payload)
    assert {k: document[k] for k in ("op", "tag", "subject", "commit_by")} == {
        "op": "keygen",
        "tag": 45,
        "subject": "nrf-1",
        "commit_by": T + 600,
    }
    assert decode_payload(payload) == bundle


@pytest.mark.parametrize("missing", ["tag", "subject", "commit_by"])
def test_a_keygen_without_a_required_key_is_bad_payload(missing: str) -> None:
    """tag, subject and commit_by are required, on the wire and when certfleet builds one."""
    # when / then
    assert _refused(_keygen, **{missing: None}).reason is Reason.BAD_PAYLOAD
    with pytest.raises(BundleRejectedError, match=f"keygen needs {missing}"):
        _decode_changed(_keygen(), **{missing: None})


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("", "empty"),
        ("d" * (SUBJECT_MAX_BYTES + 1), "65 bytes"),
        ("é" * (SUBJECT_MAX_BYTES // 2 + 1), "66 bytes of UTF-8 in 33 characters"),
        ("nrf\x001", "a NUL"),
        ("nrf-1\n", "a control character"),
    ],
)
def test_a_subject_outside_its_limit_is_bad_payload(subject: str, why: str) -> None:
    """1 to 64 bytes of UTF-8 without a control character: a firmware's CN buffer holds
    no more, and the modem's attribute string takes no control character."""
    # when
    error = _refused(_keygen, subject=subject)
    # then
    assert error.reason is Reason.BAD_PAYLOAD, why
    assert "subject" in error.detail


def test_a_subject_of_64_bytes_of_utf8_is_accepted() -> None:
    """The limit counts bytes: 32 two-byte characters fill it exactly."""
    # given
    subject = "é" * (SUBJECT_MAX_BYTES // 2)
    # when
    bundle = _keygen(subject=subject)
    # then
    assert len(subject.encode()) == SUBJECT_MAX_BYTES
    assert decode_payload(encode_payload(bundle)).subject == subject


def test_a_subject_that_is_not_text_is_bad_payload() -> None:
    """A byte string or a number where the subject's text belongs is refused."""
    for value in (b"nrf-1", 7, ["nrf-1"]):
        with pytest.raises(BundleRejectedError, match="'subject' has the wrong type"):
            _decode_changed(_keygen(), subject=value)


def test_a_keygen_cannot_carry_undo_by() -> None:
    """undo_by belongs to a commit only, so a keygen with it is bad_payload."""
    assert _refused(_keygen, undo_by=T + 86400).reason is Reason.BAD_PAYLOAD


def test_an_identity_stage_carries_one_client_certificate() -> None:
    """A stage of exactly one type-1 item round trips and says it is an identity stage."""
    # given
    bundle = _identity_stage()
    # when
    decoded = decode_payload(encode_payload(bundle))
    # then
    assert decoded == bundle
    assert decoded.is_identity_stage
    assert not _keygen().is_identity_stage


@pytest.mark.parametrize(
    "other",
    [CredentialType.CA_CHAIN, CredentialType.CLIENT_KEY, CredentialType.PSK],
    ids=lambda t: t.name,
)
def test_a_client_certificate_with_another_item_is_bad_payload(other: CredentialType) -> None:
    """The key is the one the keygen made: no item may travel next to the certificate."""
    # given
    creds = (
        Credential(CredentialType.CLIENT_CERT, _pem_of(800)),
        Credential(other, _pem_of(800)),
    )
    # when
    error = _refused(_identity_stage, credentials=creds)
    # then
    assert error.reason is Reason.BAD_PAYLOAD
    assert "travels alone" in error.detail


def test_a_client_certificate_is_ascii_pem_without_nul() -> None:
    """Like a CA chain item, the certificate is PEM text the modem stores as given."""
    for pem in (_pem_of(800).replace("A", "é", 1), _pem_of(800).replace("A", "\0", 1)):
        item = Credential(CredentialType.CLIENT_CERT, pem)
        error = _refused(_identity_stage, credentials=(item,))
        assert error.reason is Reason.BAD_PAYLOAD


def test_an_identity_probe_leaves_room_for_the_identity_tag() -> None:
    """The probe socket takes probe.tags and the staged tag: 6 CA tags at most, 7 in all."""
    # given
    six, seven = tuple(range(50, 56)), tuple(range(50, 57))
    # when
    bundle = _identity_stage(probe=Probe(host="broker.example", port=8884, tags=six))
    error = _refused(_identity_stage, probe=Probe(host="broker.example", port=8884, tags=seven))
    # then
    assert bundle.probe is not None
    assert len(bundle.probe.tags) == len(six)
    assert error.reason is Reason.BAD_PAYLOAD
    assert "at most 6" in error.detail


@pytest.mark.parametrize(
    ("size", "reason"),
    [(CERT_ITEM_MAX_BYTES, None), (CERT_ITEM_MAX_BYTES + 1, Reason.TOO_LARGE)],
)
def test_a_client_certificate_over_its_limit_is_too_large(size: int, reason: Reason | None) -> None:
    """Check 12 counts a client certificate's PEM bytes as it counts a CA chain item's."""
    # given
    bundle = _identity_stage(credentials=(Credential(CredentialType.CLIENT_CERT, _pem_of(size)),))
    data = sign1(encode_payload(bundle), private_key=KEY, kid=key_id(KEY.public_key()))
    signers = {key_id(KEY.public_key()): KEY.public_key()}

    # when
    def opened() -> Bundle:
        return open_bundle(data, signers=signers, device_id="nrf-1", last_seq=0, now=NOW)

    # then
    if reason is None:
        assert opened() == bundle
    else:
        with pytest.raises(BundleRejectedError, match="client certificate of 4097 bytes") as e:
            opened()
        assert e.value.reason is reason


@settings(max_examples=examples(200))
@given(subject=st.text(max_size=SUBJECT_MAX_BYTES + 8))
def test_any_subject_is_either_carried_exactly_or_refused_as_bad_payload(subject: str) -> None:
    """Whatever text the subject is, a keygen either round trips it or says bad_payload."""
    # given
    fits = 1 <= len(subject.encode(errors="replace")) <= SUBJECT_MAX_BYTES
    controls = any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject)
    if not fits or controls or any(0xD800 <= ord(c) <= 0xDFFF for c in subject):
        # then: refused, as bad_payload
        assert _refused(_keygen, subject=subject).reason is Reason.BAD_PAYLOAD
        return
    # when
    bundle = _keygen(subject=subject)
    # then
    assert decode_payload(encode_payload(bundle)).subject == subject
