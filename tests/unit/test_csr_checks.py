"""A device's CSR gets a certificate only when every check passes; each refusal says why."""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from orchestrator.domain.identity import CsrRefusal
from orchestrator.domain.identity_keys import certificate_matches_key, spki_sha256
from orchestrator.protocol.cose import key_id
from orchestrator.services.identity import CheckedCsr, RefusedCsr, check_csr
from tests.csr_fields import (
    FixedAttestationKeys,
    attestation,
    attestation_key,
    b64url,
    common_name,
    csr_der,
    keygen_field,
)
from tests.fakes import FakeIdentityStore
from tests.unit.csr_checking import (
    DEVICE,
    ROLLOUT,
    SEQ,
    TAG,
    attested,
    check,
    issued_certificate,
    refusal,
    with_der,
)

pytestmark = pytest.mark.unit

P256 = ec.generate_private_key(ec.SECP256R1())


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- the good path -----------------------------------------------------------------------------


def test_an_honest_attested_csr_passes_and_claims_its_key() -> None:
    """An honest CSR passes; its key is claimed, its PEM is what an issuer takes."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG)
    store = FakeIdentityStore()
    result = check(made.field, store=store)
    assert isinstance(result, CheckedCsr)
    assert result.attested is True
    assert result.device_id == DEVICE
    assert result.spki_sha256 == spki_sha256(made.key.public_key())
    assert store.keys == {result.spki_sha256: f"{ROLLOUT}/{DEVICE}"}
    pem_der = x509.load_pem_x509_csr(result.csr_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    assert pem_der == made.der


def test_without_an_attestation_key_the_attestation_is_not_checked() -> None:
    """A device with no attestation key configured passes on the CSR's own checks."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG, signer=ec.generate_private_key(ec.SECP256R1()))
    result = check(made.field, keys=FixedAttestationKeys())
    assert isinstance(result, CheckedCsr)
    assert result.attested is False


def test_a_certificate_matches_the_csr_key_it_was_issued_for() -> None:
    """The domain helper tells the CSR's key from another in an issued certificate."""
    made = keygen_field(DEVICE)
    result = check(made.field)
    assert isinstance(result, CheckedCsr)
    assert isinstance(made.key, ec.EllipticCurvePrivateKey)
    assert certificate_matches_key(issued_certificate(made.key.public_key()), result.spki_sha256)
    assert not certificate_matches_key(issued_certificate(P256.public_key()), result.spki_sha256)
    assert not certificate_matches_key("not a certificate", result.spki_sha256)


# -- the CSR's own signature, its key and subject ----------------------------------------------


def test_a_tampered_csr_has_a_bad_signature() -> None:
    """A CSR changed after signing (its subject edited in place) fails its own signature."""
    der = csr_der(P256, common_name("dev-0002"))
    tampered = der.replace(b"dev-0002", DEVICE.encode())
    assert tampered != der
    assert refusal(with_der(tampered)) is CsrRefusal.BAD_SIGNATURE


def test_a_csr_with_a_flipped_signature_byte_has_a_bad_signature() -> None:
    """The last byte of the CSR's signature changed: csr_bad_signature."""
    der = bytearray(csr_der(P256, common_name(DEVICE)))
    der[-1] ^= 0x01
    assert refusal(with_der(bytes(der))) is CsrRefusal.BAD_SIGNATURE


def test_a_csr_signed_with_sha384_is_refused() -> None:
    """`%KEYGEN` signs with ECDSA-with-SHA256; another digest is a bad signature for us."""
    der = csr_der(P256, common_name(DEVICE), algorithm=hashes.SHA384())
    assert refusal(with_der(der)) is CsrRefusal.BAD_SIGNATURE


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(rsa_key, id="rsa2048"),
    ],
)
def test_a_key_other_than_p256_is_the_wrong_key_type(key: object) -> None:
    """Only EC P-256 keys are accepted (the only kind the modem makes)."""
    der = csr_der(key(), common_name(DEVICE))  # type: ignore[operator]
    assert refusal(with_der(der)) is CsrRefusal.WRONG_KEY_TYPE


def test_an_ed25519_key_is_the_wrong_key_type() -> None:
    """An Ed25519 CSR (signed without a digest) is refused, not crashed on."""
    der = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(common_name(DEVICE))
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
        .public_bytes(serialization.Encoding.DER)
    )
    assert refusal(with_der(der)) is CsrRefusal.WRONG_KEY_TYPE


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(common_name("dev-0002"), id="another-device"),
        pytest.param(common_name(DEVICE.upper()), id="case"),
        pytest.param(common_name(DEVICE + " "), id="trailing-space"),
        pytest.param(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
                    x509.NameAttribute(NameOID.COMMON_NAME, DEVICE),
                ]
            ),
            id="extra-rdn",
        ),
        pytest.param(
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [
                            x509.NameAttribute(NameOID.COMMON_NAME, DEVICE),
                            x509.NameAttribute(NameOID.SERIAL_NUMBER, "1"),
                        ]
                    )
                ]
            ),
            id="multi-valued-rdn",
        ),
        pytest.param(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, DEVICE)]), id="not-a-cn"),
        pytest.param(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, DEVICE),
                    x509.NameAttribute(NameOID.COMMON_NAME, DEVICE),
                ]
            ),
            id="cn-twice",
        ),
        pytest.param(x509.Name([]), id="empty"),
    ],
)
def test_a_subject_other_than_exactly_cn_device_is_wrong(subject: x509.Name) -> None:
    """The subject is exactly `CN=<device id>`: one RDN with one attribute."""
    assert refusal(with_der(csr_der(P256, subject))) is CsrRefusal.WRONG_SUBJECT


def test_a_csr_requesting_extensions_is_a_wrong_subject() -> None:
    """A CSR asking for a SAN (an identity beyond the CN) is refused."""
    san = x509.SubjectAlternativeName([x509.DNSName("broker.example")])
    der = csr_der(P256, common_name(DEVICE), extensions=(san,))
    assert refusal(with_der(der)) is CsrRefusal.WRONG_SUBJECT


# -- the modem's attestation -------------------------------------------------------------------


def test_an_attestation_by_another_devices_key_is_refused() -> None:
    """A foreign modem's attestation (another kid) does not vouch for this device."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG, signer=attestation_key("dev-0002"))
    assert refusal(made.field) is CsrRefusal.BAD_ATTESTATION


def test_an_attestation_with_the_right_kid_but_another_signer_is_refused() -> None:
    """The kid claims the device's key but the signature is by another: refused."""
    der = csr_der(P256, common_name(DEVICE))
    forged = attestation(
        ec.generate_private_key(ec.SECP256R1()),
        claims={"dev": DEVICE, "seq": SEQ, "tag": TAG, "csr": hashlib.sha256(der).digest()},
        kid=key_id(attestation_key(DEVICE).public_key()),
    )
    assert refusal(f"{b64url(der)}.{b64url(forged)}") is CsrRefusal.BAD_ATTESTATION


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"dev": "dev-0002"}, id="other-dev"),
        pytest.param({"seq": SEQ + 1}, id="other-seq"),
        pytest.param({"tag": TAG - 1}, id="other-tag"),
        pytest.param({"csr": hashlib.sha256(b"another csr").digest()}, id="other-csr"),
        pytest.param({"csr": b"short"}, id="csr-not-32-bytes"),
        pytest.param({"seq": -1}, id="negative-seq"),
        pytest.param({"tag": "45"}, id="tag-as-text"),
        pytest.param({"extra": 1}, id="extra-claim"),
    ],
)
def test_an_attestation_binding_anything_else_is_refused(claims: dict[str, object]) -> None:
    """The attestation must bind this device, the keygen's seq and tag, and this CSR."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG, claims=claims)
    assert refusal(made.field) is CsrRefusal.BAD_ATTESTATION


def test_an_attestation_that_is_not_cose_is_refused() -> None:
    """Garbage in the attestation part is refused when a key is configured."""
    csr_part = keygen_field(DEVICE).field.split(".")[0]
    assert refusal(f"{csr_part}.{b64url(b'garbage')}") is CsrRefusal.BAD_ATTESTATION


def test_an_attestation_with_a_flipped_signature_byte_is_refused() -> None:
    """A changed attestation signature does not verify."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG)
    csr_part, attestation_part = made.field.split(".")
    cose = bytearray(
        base64.urlsafe_b64decode(attestation_part + "=" * (-len(attestation_part) % 4))
    )
    cose[-1] ^= 0x80
    assert refusal(f"{csr_part}.{b64url(bytes(cose))}") is CsrRefusal.BAD_ATTESTATION


# -- a key seen before -------------------------------------------------------------------------


def test_a_reused_key_is_refused_in_another_rollout_or_device() -> None:
    """A key claimed once gets no certificate for another rollout or device; the same check
    run again (a retried task) still passes."""
    store = FakeIdentityStore()
    first = keygen_field(DEVICE, seq=SEQ, tag=TAG, key=P256)
    checked = check(first.field, store=store)
    assert isinstance(checked, CheckedCsr)
    retried = check(first.field, store=store)
    assert retried == checked
    later = check(
        keygen_field(DEVICE, seq=SEQ, tag=TAG, key=P256).field, store=store, rollout_id="ro-2"
    )
    assert isinstance(later, RefusedCsr)
    assert later.reason is CsrRefusal.KEY_REUSED
    other = keygen_field("dev-0002", seq=SEQ, tag=TAG, key=P256)
    result = check(other.field, store=store, keys=FixedAttestationKeys(), device_id="dev-0002")
    assert isinstance(result, RefusedCsr)
    assert result.reason is CsrRefusal.KEY_REUSED
    assert store.keys == {checked.spki_sha256: f"{ROLLOUT}/{DEVICE}"}


def test_a_refused_csr_does_not_use_up_its_key() -> None:
    """The key is claimed last: a CSR refused for its subject leaves the key unclaimed."""
    store = FakeIdentityStore()
    key = ec.generate_private_key(ec.SECP256R1())
    wrong = with_der(csr_der(key, common_name("dev-0002")))
    assert isinstance(check(wrong, store=store), RefusedCsr)
    assert store.keys == {}
    assert isinstance(
        check(keygen_field(DEVICE, seq=SEQ, tag=TAG, key=key).field, store=store), CheckedCsr
    )


def test_the_key_of_the_identity_in_use_is_reused() -> None:
    """A CSR for the key of the device's current certificate is refused, though never claimed."""
    store = FakeIdentityStore()
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG, key=P256)
    current = issued_certificate(P256.public_key())
    result = check_csr(
        made.field,
        device_id=DEVICE,
        rollout_id=ROLLOUT,
        keygen_seq=SEQ,
        keygen_tag=TAG,
        attestation_keys=attested(),
        identity_store=store,
        current_certificate_pem=current,
    )
    assert isinstance(result, RefusedCsr)
    assert result.reason is CsrRefusal.KEY_REUSED
    assert store.keys == {}
    fresh = keygen_field(DEVICE, seq=SEQ, tag=TAG)
    passed = check_csr(
        fresh.field,
        device_id=DEVICE,
        rollout_id=ROLLOUT,
        keygen_seq=SEQ,
        keygen_tag=TAG,
        attestation_keys=attested(),
        identity_store=store,
        current_certificate_pem=current,
    )
    assert isinstance(passed, CheckedCsr)


def _with_holders(field: str, holders: dict[str, str], store: FakeIdentityStore) -> object:
    asked: list[list[str]] = []

    def key_holders(spkis: Sequence[str]) -> dict[str, str]:
        asked.append(list(spkis))
        return {spki: holders[spki] for spki in spkis if spki in holders}

    result = check_csr(
        field,
        device_id=DEVICE,
        rollout_id=ROLLOUT,
        keygen_seq=SEQ,
        keygen_tag=TAG,
        attestation_keys=attested(),
        identity_store=store,
        key_holders=key_holders,
    )
    assert asked, "the check asks who holds the key"
    return result


@pytest.mark.parametrize(
    ("holder", "says"), [("dev-0006", "device 'dev-0006'"), (DEVICE, "its own")]
)
def test_the_key_of_any_known_certificate_is_reused(holder: str, says: str) -> None:
    """A CSR over the key of a client certificate a device reported (another device's factory
    identity, or the device's own) gets no certificate, and claims nothing."""
    store = FakeIdentityStore()
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG, key=P256)
    result = _with_holders(made.field, {spki_sha256(P256.public_key()): holder}, store)
    assert isinstance(result, RefusedCsr)
    assert result.reason is CsrRefusal.KEY_REUSED
    assert says in result.detail
    assert store.keys == {}


def test_a_key_no_certificate_holds_passes_the_holders_check() -> None:
    """Holders of other keys do not refuse a fresh one."""
    store = FakeIdentityStore()
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG)
    result = _with_holders(made.field, {"00" * 32: "dev-0006"}, store)
    assert isinstance(result, CheckedCsr)
