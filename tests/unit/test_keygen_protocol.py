"""The `%KEYGEN` output and the modem's attestation: both directions, every refusal.

The simulated modem writes `base64url(CSR DER) "." base64url(COSE_Sign1)` with
`encode_keygen_output` and `sign_attestation`; certfleet reads it with
`parse_keygen_output` and `verify_attestation` (docs/protocol.md §7). Each malformed
form is refused with its own `KeygenFault`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestrator.protocol import (
    AttestationClaims,
    KeygenError,
    KeygenFault,
    KeygenOutput,
    attestation_kid,
    encode_keygen_output,
    parse_keygen_output,
    sign_attestation,
    verify_attestation,
)
from orchestrator.protocol.cose import es256_sign, sign1
from orchestrator.protocol.keygen import attestation_payload
from orchestrator.protocol.limits import CSR_DER_MAX_BYTES, CSR_FIELD_MAX_BYTES
from orchestrator.protocol.report import Phase, ReportMessage
from tests.properties import examples

pytestmark = pytest.mark.unit

ATTESTATION_KEY: Final = ec.derive_private_key(0xA77E57, ec.SECP256R1())
OTHER_KEY: Final = ec.derive_private_key(0x07E1, ec.SECP256R1())
KID: Final = attestation_kid(ATTESTATION_KEY.public_key())
DEVICE: Final = "nrf-352656100000000"
SEQ: Final = 41
TAG: Final = 45


def _csr_der(common_name: str = DEVICE) -> bytes:
    """A CSR as `%KEYGEN` makes it: a fresh P-256 key, subject CN only, signed SHA-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


CSR: Final = _csr_der()
ATTESTATION: Final = sign_attestation(ATTESTATION_KEY, DEVICE, SEQ, TAG, CSR)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fault(call: Callable[..., Any], *args: object) -> KeygenFault:
    with pytest.raises(KeygenError) as caught:
        call(*args)
    return caught.value.fault


def _signed_claims(claims: object) -> bytes:
    """Any payload, signed correctly by the attestation key."""
    payload = claims if isinstance(claims, bytes) else cbor2.dumps(claims, canonical=True)
    return sign1(payload, private_key=ATTESTATION_KEY, kid=KID)


def _claims(**changes: object) -> bytes:
    """The genuine claims map with some values changed, signed correctly."""
    claims: dict[str, object] = {"dev": DEVICE, "seq": SEQ, "tag": TAG, "csr": bytes(32)}
    claims.update(changes)
    return _signed_claims(claims)


def _with_protected(protected: dict[int, object], signing_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A COSE_Sign1 over the genuine claims with a chosen protected header."""
    protected_bytes = cbor2.dumps(protected, canonical=True)
    payload = attestation_payload(DEVICE, SEQ, TAG, CSR)
    tbs = cbor2.dumps(["Signature1", protected_bytes, b"", payload], canonical=True)
    body = [protected_bytes, {}, payload, es256_sign(signing_key, tbs)]
    return cbor2.dumps(cbor2.CBORTag(18, body), canonical=True)


def test_an_output_round_trips_and_its_attestation_binds_the_request() -> None:
    """Encode, parse, verify: the same CSR and claims naming this device, keygen and CSR."""
    # given
    text = encode_keygen_output(CSR, ATTESTATION)
    # when
    output = parse_keygen_output(text)
    claims = verify_attestation(output.attestation, ATTESTATION_KEY.public_key())
    # then
    assert output == KeygenOutput(csr_der=CSR, attestation=ATTESTATION)
    assert output.encode() == text
    assert "=" not in text
    assert claims == AttestationClaims(
        dev=DEVICE, seq=SEQ, tag=TAG, csr_sha256=hashlib.sha256(CSR).digest()
    )
    claims.check(device_id=DEVICE, seq=SEQ, tag=TAG, csr_der=CSR)


def test_the_output_fits_the_report_field() -> None:
    """A real output is under half the 2048-byte field and a `csr` report carries it as it is."""
    # given
    text = encode_keygen_output(CSR, ATTESTATION)
    # when
    report = ReportMessage(
        v=2,
        device_id=DEVICE,
        rollout_id="ro-1",
        seq=SEQ,
        op="keygen",
        phase=Phase.CSR,
        reason="ok",
        time=datetime(2026, 12, 1, tzinfo=UTC),
        csr=text,
    )
    # then
    assert len(text) < CSR_FIELD_MAX_BYTES // 2
    assert report.to_domain().csr == text


def test_the_attestation_key_id_is_the_spki_digest_prefix() -> None:
    """kid = the first 8 bytes of SHA-256 over the SubjectPublicKeyInfo DER, as a signer's."""
    # given
    spki = ATTESTATION_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # then
    assert hashlib.sha256(spki).digest()[:8] == KID


MALFORMED: Final[dict[str, tuple[str, KeygenFault]]] = {
    "empty": ("", KeygenFault.NOT_TWO_PARTS),
    "no dot": (_b64(CSR), KeygenFault.NOT_TWO_PARTS),
    "three parts": (f"{_b64(CSR)}.{_b64(ATTESTATION)}.AAAA", KeygenFault.NOT_TWO_PARTS),
    "padded csr": (f"{_b64(CSR)}=.{_b64(ATTESTATION)}", KeygenFault.NOT_BASE64URL),
    "padded attestation": (f"{_b64(CSR)}.{_b64(ATTESTATION)}==", KeygenFault.NOT_BASE64URL),
    "standard alphabet": (
        base64.b64encode(b"\xfb\xff\xbf" * 4).decode() + ".AAAA",
        KeygenFault.NOT_BASE64URL,
    ),
    "impossible length": ("AAAAA.AAAA", KeygenFault.NOT_BASE64URL),
    "non-canonical bits": ("AB.AAAA", KeygenFault.NOT_BASE64URL),
    "empty csr": (f".{_b64(ATTESTATION)}", KeygenFault.NOT_BASE64URL),
    "empty attestation": (f"{_b64(CSR)}.", KeygenFault.NOT_BASE64URL),
    "a space": (f"{_b64(CSR)} .{_b64(ATTESTATION)}", KeygenFault.NOT_BASE64URL),
    "csr over 1024 bytes": (f"{_b64(bytes(CSR_DER_MAX_BYTES + 1))}.AAAA", KeygenFault.CSR_SIZE),
    "field over 2048 bytes": (
        "A" * (CSR_FIELD_MAX_BYTES - 4) + ".AAAA",
        KeygenFault.FIELD_TOO_LARGE,
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_output_is_refused_with_its_fault(name: str) -> None:
    """Each broken form has its own fault; nothing is decoded past it."""
    text, fault = MALFORMED[name]
    assert _fault(parse_keygen_output, text) is fault


@pytest.mark.parametrize(
    ("csr", "attestation", "fault"),
    [
        (b"", ATTESTATION, KeygenFault.CSR_SIZE),
        (bytes(CSR_DER_MAX_BYTES + 1), ATTESTATION, KeygenFault.CSR_SIZE),
        (CSR, b"", KeygenFault.NOT_TWO_PARTS),
        (bytes(CSR_DER_MAX_BYTES), bytes(CSR_FIELD_MAX_BYTES), KeygenFault.FIELD_TOO_LARGE),
    ],
    ids=["empty csr", "csr over 1024", "no attestation", "field over 2048"],
)
def test_an_output_past_a_limit_is_never_encoded(
    csr: bytes, attestation: bytes, fault: KeygenFault
) -> None:
    """The modem side cannot produce what certfleet would refuse."""
    assert _fault(encode_keygen_output, csr, attestation) is fault


BAD_ATTESTATIONS: Final[dict[str, tuple[bytes, KeygenFault]]] = {
    "empty": (b"", KeygenFault.NOT_COSE),
    "a map": (b"\xa0", KeygenFault.NOT_COSE),
    "trailing byte": (ATTESTATION + b"\x00", KeygenFault.NOT_COSE),
    "another modem's key": (
        sign_attestation(OTHER_KEY, DEVICE, SEQ, TAG, CSR),
        KeygenFault.WRONG_KEY,
    ),
    "no kid": (_with_protected({1: -7}, ATTESTATION_KEY), KeygenFault.WRONG_KEY),
    "another algorithm": (
        _with_protected({1: -35, 4: KID}, ATTESTATION_KEY),
        KeygenFault.BAD_ALGORITHM,
    ),
    "no algorithm": (_with_protected({4: KID}, ATTESTATION_KEY), KeygenFault.BAD_ALGORITHM),
    "signed by another key under this kid": (
        _with_protected({1: -7, 4: KID}, OTHER_KEY),
        KeygenFault.BAD_SIGNATURE,
    ),
    "flipped signature bit": (
        ATTESTATION[:-1] + bytes([ATTESTATION[-1] ^ 1]),
        KeygenFault.BAD_SIGNATURE,
    ),
    "claims not a map": (_signed_claims(["dev", "seq"]), KeygenFault.BAD_CLAIMS),
    "claim missing": (_signed_claims({"dev": DEVICE, "seq": 1, "tag": 45}), KeygenFault.BAD_CLAIMS),
    "extra claim": (_claims(x=0), KeygenFault.BAD_CLAIMS),
    "dev not text": (_claims(dev=b"nrf"), KeygenFault.BAD_CLAIMS),
    "negative seq": (_claims(seq=-1), KeygenFault.BAD_CLAIMS),
    "tag a boolean": (_claims(tag=True), KeygenFault.BAD_CLAIMS),
    "csr digest of 31 bytes": (_claims(csr=bytes(31)), KeygenFault.BAD_CLAIMS),
    "trailing payload bytes": (_signed_claims(b"\xa0\x00"), KeygenFault.BAD_CLAIMS),
    "payload not cbor": (_signed_claims(b"\xff"), KeygenFault.BAD_CLAIMS),
}


@pytest.mark.parametrize("name", BAD_ATTESTATIONS)
def test_an_attestation_that_does_not_verify_is_refused_with_its_fault(name: str) -> None:
    """verify_attestation names what failed: envelope, key, algorithm, signature, claims."""
    attestation, fault = BAD_ATTESTATIONS[name]
    assert _fault(verify_attestation, attestation, ATTESTATION_KEY.public_key()) is fault


@pytest.mark.parametrize(
    ("device_id", "seq", "tag", "csr", "words"),
    [
        ("nrf-2", SEQ, TAG, CSR, "attests device"),
        (DEVICE, SEQ + 1, TAG, CSR, "not the keygen's seq"),
        (DEVICE, SEQ, 44, CSR, "not the keygen's seq"),
        (DEVICE, SEQ, TAG, _csr_der(), "another CSR"),
    ],
    ids=["another device", "another bundle", "another tag", "another csr"],
)
def test_claims_for_another_request_are_a_mismatch(
    device_id: str, seq: int, tag: int, csr: bytes, words: str
) -> None:
    """A valid attestation of another device, keygen, tag or CSR does not bind this one."""
    # given
    claims = verify_attestation(ATTESTATION, ATTESTATION_KEY.public_key())
    # when
    with pytest.raises(KeygenError, match=words) as caught:
        claims.check(device_id=device_id, seq=seq, tag=tag, csr_der=csr)
    # then
    assert caught.value.fault is KeygenFault.MISMATCH


@settings(max_examples=examples(200), deadline=None)
@given(
    csr=st.binary(min_size=1, max_size=CSR_DER_MAX_BYTES),
    attestation=st.binary(min_size=1, max_size=700),
)
def test_any_output_within_the_limits_round_trips(csr: bytes, attestation: bytes) -> None:
    """Every pair of parts either encodes and parses back, or is refused for the field size."""
    # given
    fits = len(_b64(csr)) + 1 + len(_b64(attestation)) <= CSR_FIELD_MAX_BYTES
    if not fits:
        # then: refused for the field's size, and only for it
        assert _fault(encode_keygen_output, csr, attestation) is KeygenFault.FIELD_TOO_LARGE
        return
    # when
    text = encode_keygen_output(csr, attestation)
    # then
    assert parse_keygen_output(text) == KeygenOutput(csr_der=csr, attestation=attestation)


def _parsed(text: str) -> KeygenOutput | KeygenError:
    try:
        return parse_keygen_output(text)
    except KeygenError as exc:
        return exc


@settings(max_examples=examples(300), deadline=None)
@given(text=st.text(alphabet="AQgw_-+/=. \n", max_size=64))
@example(text="AQ.AQ")
def test_any_text_parses_to_the_one_output_that_encodes_to_it_or_is_refused(text: str) -> None:
    """Parsing is exact: an accepted text is the only encoding of what it decoded to."""
    # when
    outcome = _parsed(text)
    # then
    if isinstance(outcome, KeygenError):
        assert outcome.fault is not KeygenFault.MISMATCH
    else:
        assert outcome.encode() == text


@settings(max_examples=examples(50), deadline=None)
@given(
    device_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True),
    seq=st.integers(min_value=1, max_value=2**64 - 1),
    tag=st.integers(min_value=0, max_value=2**31 - 1),
    csr=st.binary(min_size=1, max_size=CSR_DER_MAX_BYTES),
)
def test_any_attestation_verifies_to_the_claims_it_was_signed_with(
    device_id: str, seq: int, tag: int, csr: bytes
) -> None:
    """Sign then verify gives back exactly the device, seq, tag and CSR digest."""
    # when
    claims = verify_attestation(
        sign_attestation(ATTESTATION_KEY, device_id, seq, tag, csr), ATTESTATION_KEY.public_key()
    )
    # then
    claims.check(device_id=device_id, seq=seq, tag=tag, csr_der=csr)
    assert (claims.dev, claims.seq, claims.tag) == (device_id, seq, tag)
