"""COSE_Sign1 with ES256 interoperates with the IETF vectors and decodes strictly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.protocol.cose import (
    ALG_ES256,
    COSE_SIGN1_TAG,
    HEADER_ALG,
    HEADER_DELEGATION,
    HEADER_KID,
    CoseError,
    MalformedCoseError,
    Sign1Message,
    SignatureMismatchError,
    UnsupportedAlgorithmError,
    es256_sign,
    es256_verify,
    key_id,
    sign1,
)
from tests.properties import examples

pytestmark = pytest.mark.unit

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "cose"
PASS_VECTORS = sorted(VECTORS.glob("sign-pass-*.json"))
FAIL_VECTORS = sorted(VECTORS.glob("sign-fail-*.json"))

# What each kind of sign-fail vector must be rejected as, keyed by the part of its title after ": ".
EXPECTED_BY_TITLE: dict[str, type[CoseError]] = {
    "Wrong CBOR Tag": MalformedCoseError,
    "Change signature": SignatureMismatchError,
    "Change Sign Algorithm": UnsupportedAlgorithmError,
    "Add protected attribute": SignatureMismatchError,
    "Remove protected attribute": SignatureMismatchError,
}

KEY = ec.derive_private_key(0x1F2E3D4C5B6A7988, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0x0123456789ABCDEF, ec.SECP256R1())
KID = key_id(KEY.public_key())
PAYLOAD = b'{"bundle": "ca_chain for sec_tag 42"}'
SIGNED = sign1(PAYLOAD, private_key=KEY, kid=KID)


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def _jwk_public_key(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey:
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    numbers = ec.EllipticCurvePublicNumbers(
        _b64url_int(jwk["x"]), _b64url_int(jwk["y"]), ec.SECP256R1()
    )
    return numbers.public_key()


def _external_aad(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["input"]["sign0"].get("external", ""))


def _decode_and_verify(data: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    Sign1Message.decode(data).verify(public_key)


def _message(
    protected: Any = b"\xa1\x01\x26",
    unprotected: Any = None,
    payload: Any = PAYLOAD,
    signature: Any = bytes(64),
) -> bytes:
    body = [protected, {} if unprotected is None else unprotected, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body))


def test_vector_folder_holds_three_pass_and_six_fail_vectors() -> None:
    """The glob finds every copied vector, so a lost file cannot silently shrink the suite."""
    # given / when
    pass_names = [path.name for path in PASS_VECTORS]
    fail_names = [path.name for path in FAIL_VECTORS]
    # then
    assert len(pass_names) == 3, pass_names
    assert len(fail_names) == 6, fail_names


@pytest.mark.parametrize("path", PASS_VECTORS, ids=lambda path: path.stem)
def test_pass_vector_decodes_verifies_and_rebuilds_sig_structure(path: Path) -> None:
    """A sign-pass vector verifies and its Sig_structure equals ToBeSign byte for byte."""
    # given
    vector = _load(path)
    public_key = _jwk_public_key(vector["input"]["sign0"]["key"])
    external_aad = _external_aad(vector)
    # when
    message = Sign1Message.decode(bytes.fromhex(vector["output"]["cbor"]))
    # then
    message.verify(public_key, external_aad)
    expected = bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])
    assert message.sig_structure(external_aad) == expected
    assert message.payload == vector["input"]["plaintext"].encode()


@pytest.mark.parametrize("path", FAIL_VECTORS, ids=lambda path: path.stem)
def test_fail_vector_is_rejected_with_the_specific_error(path: Path) -> None:
    """A sign-fail vector raises the CoseError subclass that names what was altered."""
    # given
    vector = _load(path)
    expected = EXPECTED_BY_TITLE[vector["title"].split(": ", 1)[1]]
    public_key = _jwk_public_key(vector["input"]["sign0"]["key"])
    data = bytes.fromhex(vector["output"]["cbor"])
    # when / then
    with pytest.raises(expected):
        Sign1Message.decode(data).verify(public_key, _external_aad(vector))


@pytest.mark.parametrize("tagged", [True, False])
def test_sign1_round_trips_tagged_and_untagged(tagged: bool) -> None:
    """sign1 output decodes to the same payload and kid, verifies and re-encodes identically."""
    # given
    data = sign1(PAYLOAD, private_key=KEY, kid=KID, tagged=tagged)
    # when
    message = Sign1Message.decode(data)
    # then
    message.verify(KEY.public_key())
    assert (data[0] == 0xD2) is tagged
    assert message.payload == PAYLOAD
    assert message.kid == KID
    assert message.algorithm == ALG_ES256
    assert message.unprotected == {}
    assert message.protected_bytes == cbor2.dumps({1: -7, 4: KID}, canonical=True)
    assert message.encode(tagged=tagged) == data


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 2011, 65535, 65536])
@pytest.mark.parametrize("tagged", [True, False])
def test_sign1_builds_the_bytes_a_checked_message_encodes_to(size: int, tagged: bool) -> None:
    """sign1 writes the envelope and the Sig_structure itself, without building and checking
    a `Sign1Message`: its bytes are the ones such a message encodes to, around every CBOR
    length boundary of the payload, and it signed the Sig_structure that message gives."""
    # given
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    aad = b"x" * (size % 30)
    signed: list[bytes] = []

    def signer(to_be_signed: bytes) -> bytes:
        signed.append(to_be_signed)
        return es256_sign(KEY, to_be_signed)

    # when
    data = sign1(payload, sign=signer, kid=KID, external_aad=aad, tagged=tagged)
    # then
    message = Sign1Message.decode(data, max_bytes=1 << 20)
    checked = Sign1Message(
        protected_bytes=cbor2.dumps({1: -7, 4: KID}, canonical=True),
        protected={1: -7, 4: KID},
        unprotected={},
        payload=payload,
        signature=message.signature,
    )
    assert data == checked.encode(tagged=tagged)
    assert signed == [checked.sig_structure(aad)]
    assert signed[0] == cbor2.dumps(["Signature1", checked.protected_bytes, aad, payload])
    message.verify(KEY.public_key(), aad)


def test_external_aad_is_bound_to_the_signature() -> None:
    """A message signed with external AAD verifies with that AAD only."""
    # given
    aad = b"device-42/wave-3"
    message = Sign1Message.decode(sign1(PAYLOAD, private_key=KEY, kid=KID, external_aad=aad))
    # when
    message.verify(KEY.public_key(), aad)
    # then
    with pytest.raises(SignatureMismatchError):
        message.verify(KEY.public_key())
    with pytest.raises(SignatureMismatchError):
        message.verify(KEY.public_key(), b"device-43/wave-3")


def test_verify_with_another_key_fails() -> None:
    """A signature made with one key does not verify with another."""
    # given
    message = Sign1Message.decode(SIGNED)
    # when / then
    with pytest.raises(SignatureMismatchError):
        message.verify(OTHER_KEY.public_key())


def test_key_id_is_eight_stable_bytes() -> None:
    """key_id is 8 bytes, the same for the same key however loaded, and differs per key."""
    # given
    der = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    reloaded = serialization.load_der_public_key(der)
    assert isinstance(reloaded, ec.EllipticCurvePublicKey)
    # when
    kid = key_id(KEY.public_key())
    # then
    assert len(kid) == 8
    assert kid == key_id(reloaded) == KID
    assert kid != key_id(OTHER_KEY.public_key())


def test_sign1_accepts_an_external_signer() -> None:
    """A callable returning raw r||s (an HSM) signs as well as a private key does."""
    # given
    calls: list[bytes] = []

    def hsm(to_be_signed: bytes) -> bytes:
        calls.append(to_be_signed)
        return es256_sign(KEY, to_be_signed)

    # when
    message = Sign1Message.decode(sign1(PAYLOAD, sign=hsm, kid=KID))
    # then
    message.verify(KEY.public_key())
    assert calls == [message.sig_structure()]


def test_sign1_takes_exactly_one_signer_and_a_raw_signature() -> None:
    """Both or neither of private_key/sign is a TypeError; a DER signature is a CoseError."""

    # given
    def der_signer(data: bytes) -> bytes:
        return KEY.sign(data, ec.ECDSA(hashes.SHA256()))

    # when / then
    with pytest.raises(TypeError):
        sign1(PAYLOAD, kid=KID)
    with pytest.raises(TypeError):
        sign1(PAYLOAD, private_key=KEY, sign=der_signer, kid=KID)
    with pytest.raises(CoseError, match="64-byte raw"):
        sign1(PAYLOAD, sign=der_signer, kid=KID)


def test_es256_signature_is_raw_and_checked_strictly() -> None:
    """es256_sign gives 64 bytes; wrong lengths and non-P-256 keys are refused."""
    # given
    signature = es256_sign(KEY, b"data")
    p384 = ec.derive_private_key(7, ec.SECP384R1())
    # when
    es256_verify(KEY.public_key(), b"data", signature)
    # then
    assert len(signature) == 64
    with pytest.raises(SignatureMismatchError):
        es256_verify(KEY.public_key(), b"data", signature[:-1])
    with pytest.raises(SignatureMismatchError):
        es256_verify(KEY.public_key(), b"data", bytes(64))
    with pytest.raises(UnsupportedAlgorithmError):
        es256_verify(p384.public_key(), b"data", signature)
    with pytest.raises(UnsupportedAlgorithmError):
        es256_sign(p384, b"data")


def test_missing_algorithm_is_unsupported() -> None:
    """A message without alg in either header cannot be verified."""
    # given
    message = Sign1Message.decode(_message(protected=b"", unprotected={HEADER_KID: KID}))
    # when / then
    assert message.algorithm is None
    with pytest.raises(UnsupportedAlgorithmError):
        message.verify(KEY.public_key())


MALFORMED: dict[str, bytes] = {
    "trailing byte": SIGNED + b"\x00",
    "tag 998": cbor2.dumps(cbor2.CBORTag(998, cbor2.loads(SIGNED).value)),
    "self-described tag 55799 around tag 18": bytes.fromhex("d9d9f7") + SIGNED,
    "tag 18 twice": bytes.fromhex("d2") + SIGNED,
    "empty input": b"",
    "not an array": cbor2.dumps(cbor2.CBORTag(18, {1: 2})),
    "array of 3": cbor2.dumps([b"", {}, PAYLOAD]),
    "array of 5": cbor2.dumps([b"", {}, PAYLOAD, bytes(64), b""]),
    "indefinite-length array": bytes.fromhex("9f40a04040ff"),
    "protected is a map": _message(protected={1: -7}),
    "protected is not a map": _message(protected=b"\x01"),
    "protected has trailing bytes": _message(protected=b"\xa1\x01\x26\x00"),
    "unprotected is not a map": _message(unprotected=[1, -7]),
    "detached payload (nil)": _message(payload=None),
    "payload is text": _message(payload="text"),
    "signature is text": _message(signature="sig"),
    "duplicate label in unprotected": bytes.fromhex("d28443a10126a2044131044132404040"),
    "alg in both headers": _message(unprotected={HEADER_ALG: ALG_ES256}),
    "contradicting alg in both headers": _message(unprotected={HEADER_ALG: -35}),
    "bool label": _message(protected=b"", unprotected={True: -7}),
    "float label": _message(protected=b"", unprotected={1.0: -7}),
    "alg as bignum": _message(protected=cbor2.dumps({1: cbor2.CBORTag(3, b"\x06")})),
    "alg as float": _message(protected=b"", unprotected={HEADER_ALG: -7.0}),
    "kid is text": _message(unprotected={HEADER_KID: "11"}),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_message_is_rejected(data: bytes) -> None:
    """Anything but one strict COSE_Sign1 item (tag 18 or none) is a MalformedCoseError."""
    # given / when / then
    with pytest.raises(MalformedCoseError):
        Sign1Message.decode(data)


def test_detached_payload_error_says_it_is_unsupported() -> None:
    """The error for a nil payload tells the sender to embed the payload."""
    # given / when / then
    with pytest.raises(MalformedCoseError, match="detached payloads"):
        Sign1Message.decode(_message(payload=None))


def test_oversized_message_is_rejected_unread() -> None:
    """A message above max_bytes is refused before decoding."""
    # given / when / then
    with pytest.raises(MalformedCoseError, match="exceeds"):
        Sign1Message.decode(SIGNED, max_bytes=len(SIGNED) - 1)


def test_constructed_message_must_match_its_protected_bytes() -> None:
    """A Sign1Message whose protected map differs from protected_bytes cannot exist."""
    # given
    message = Sign1Message.decode(SIGNED)
    # when / then
    with pytest.raises(MalformedCoseError, match="does not match"):
        Sign1Message(
            protected_bytes=message.protected_bytes,
            protected={HEADER_ALG: ALG_ES256},
            unprotected={},
            payload=message.payload,
            signature=message.signature,
        )


@settings(max_examples=examples(400))
@given(data=st.data(), tagged=st.booleans())
def test_any_single_byte_flip_is_rejected(data: st.DataObject, tagged: bool) -> None:
    """Flipping any bits of any one byte of a signed message makes decode+verify fail."""
    # given
    signed = sign1(PAYLOAD, private_key=KEY, kid=KID, tagged=tagged)
    position = data.draw(st.integers(0, len(signed) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    flipped = bytearray(signed)
    flipped[position] ^= mask
    # when / then
    with pytest.raises(CoseError):
        _decode_and_verify(bytes(flipped), KEY.public_key())


@settings(max_examples=examples(400))
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_cose_errors(data: bytes) -> None:
    """Sign1Message.decode on any bytes either succeeds or raises a CoseError."""
    # given / when
    try:
        message = Sign1Message.decode(data)
    except CoseError:
        return
    # then
    with pytest.raises(CoseError):
        message.verify(KEY.public_key())


_CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-8, 8) | st.text(max_size=2), inner, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([2, 3, 18, 24, 28, 55799, 998]), inner)
    ),
    max_leaves=8,
)
_HEADERS = st.dictionaries(st.integers(-8, 8) | st.text(max_size=2), _CBOR_VALUES, max_size=4)
_SIGN1_SHAPED = st.tuples(
    st.binary() | _HEADERS.map(cbor2.dumps) | _CBOR_VALUES,
    _HEADERS | _CBOR_VALUES,
    st.binary() | _CBOR_VALUES,
    st.binary(min_size=64, max_size=64) | _CBOR_VALUES,
)


@settings(max_examples=examples(400))
@given(body=_SIGN1_SHAPED, tag=st.sampled_from([None, 18, 998, 55799]))
def test_sign1_shaped_input_raises_only_cose_errors(
    body: tuple[Any, Any, Any, Any], tag: int | None
) -> None:
    """Four-item arrays of arbitrary CBOR decode or raise a CoseError, and never verify."""
    # given
    item: Any = list(body) if tag is None else cbor2.CBORTag(tag, list(body))
    data = cbor2.dumps(item)
    # when
    try:
        message = Sign1Message.decode(data)
    except CoseError:
        return
    # then
    assert message.encode(tagged=True)
    with pytest.raises(CoseError):
        message.verify(KEY.public_key())


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256])
def test_sign1_with_a_delegation_builds_the_bytes_a_checked_message_encodes_to(size: int) -> None:
    """The delegation goes into the protected header under label -65537, after alg and kid
    (deterministic order: 1, 4, -65537), and is covered by the signature."""
    # given
    delegation = bytes([0xD2]) + bytes(range(size % 256)) * (1 + size // 256)
    signed: list[bytes] = []

    def signer(to_be_signed: bytes) -> bytes:
        signed.append(to_be_signed)
        return es256_sign(KEY, to_be_signed)

    # when
    data = sign1(PAYLOAD, sign=signer, kid=KID, delegation=delegation)
    # then
    protected: dict[int | str, Any] = {1: -7, 4: KID, HEADER_DELEGATION: delegation}
    message = Sign1Message.decode(data)
    checked = Sign1Message(
        protected_bytes=cbor2.dumps(protected, canonical=True),
        protected=protected,
        unprotected={},
        payload=PAYLOAD,
        signature=message.signature,
    )
    assert data == checked.encode()
    assert signed == [checked.sig_structure()]
    assert list(message.protected) == [1, 4, HEADER_DELEGATION]
    assert message.protected_bytes.index(b"\x3a\x00\x01\x00\x00") > 0
    message.verify(KEY.public_key())


def test_the_protected_header_cache_tells_delegations_apart() -> None:
    """A signer's next delegation gets its own header; without one the header is as before."""
    # given
    first, second = b"\xd2first", b"\xd2second"
    # when
    plain = Sign1Message.decode(sign1(PAYLOAD, private_key=KEY, kid=KID))
    one = Sign1Message.decode(sign1(PAYLOAD, private_key=KEY, kid=KID, delegation=first))
    two = Sign1Message.decode(sign1(PAYLOAD, private_key=KEY, kid=KID, delegation=second))
    again = Sign1Message.decode(sign1(PAYLOAD, private_key=KEY, kid=KID, delegation=first))
    # then
    assert plain.protected == {1: -7, 4: KID}
    assert one.protected[HEADER_DELEGATION] == first == again.protected[HEADER_DELEGATION]
    assert two.protected[HEADER_DELEGATION] == second
    with pytest.raises(TypeError, match="delegation must be bytes"):
        sign1(PAYLOAD, private_key=KEY, kid=KID, delegation=bytearray(first))  # type: ignore[arg-type]
