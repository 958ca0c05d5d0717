"""The modem model keeps the nRF9160 key store's rules."""

from __future__ import annotations

import errno
import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES, SEC_TAG_MAX, CredentialType
from orchestrator.protocol.keygen import KeygenError, parse_keygen_output, verify_attestation
from simulator.attestation import attestation_key
from simulator.modem import (
    AlreadyExistsError,
    FunctionalMode,
    InvalidContentError,
    Modem,
    NotFoundError,
    NotPermittedError,
    StoreFullError,
)
from simulator.pki import IssuedCA, make_ca
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit

CA = CredentialType.CA_CHAIN
PSK = CredentialType.PSK


@pytest.fixture(scope="module")
def root() -> IssuedCA:
    """A CA valid for a year from NOW."""
    return make_ca(
        "Root A", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=365)
    )


@pytest.fixture(scope="module")
def short_root() -> IssuedCA:
    """A CA that expires before `root`."""
    return make_ca("Root B", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))


def test_modem_starts_offline() -> None:
    """A fresh modem is offline, as after boot, and its store is empty."""
    # given / when
    modem = Modem()
    # then
    assert modem.mode is FunctionalMode.OFFLINE
    assert not modem.online
    assert modem.items() == []


def test_write_refused_while_online(root: IssuedCA) -> None:
    """Writing while CFUN=1 raises EPERM and stores nothing."""
    # given
    modem = Modem()
    modem.cfun(FunctionalMode.ONLINE)
    # when
    with pytest.raises(NotPermittedError) as refused:
        modem.write(7, CA, root.pem)
    # then
    assert refused.value.errno == errno.EPERM
    assert modem.items() == []


def test_delete_refused_while_online(root: IssuedCA) -> None:
    """Deleting while CFUN=1 raises EPERM and keeps the item."""
    # given
    modem = Modem()
    modem.write(7, CA, root.pem)
    modem.cfun(FunctionalMode.ONLINE)
    # when
    with pytest.raises(NotPermittedError) as refused:
        modem.delete(7, CA)
    # then
    assert refused.value.errno == errno.EPERM
    assert modem.exists(7, CA)


def test_write_and_delete_allowed_after_going_offline(root: IssuedCA) -> None:
    """Going back to CFUN=4 allows writes and deletes again."""
    # given
    modem = Modem()
    modem.cfun(FunctionalMode.ONLINE)
    modem.cfun(FunctionalMode.OFFLINE)
    # when
    modem.write(7, CA, root.pem)
    written = modem.exists(7, CA)
    modem.delete(7, CA)
    # then
    assert written
    assert not modem.exists(7, CA)


@pytest.mark.parametrize("sec_tag", [0, SEC_TAG_MAX])
def test_sec_tag_range_edges_accepted(sec_tag: int) -> None:
    """The lowest and highest application sec_tags can be written."""
    # given
    modem = Modem()
    # when
    item = modem.write(sec_tag, PSK, b"secret")
    # then
    assert item.sec_tag == sec_tag
    assert modem.exists(sec_tag, PSK)


@pytest.mark.parametrize("sec_tag", [-1, SEC_TAG_MAX + 1, True, "1"])
def test_sec_tag_outside_range_or_not_int_rejected(sec_tag: object) -> None:
    """A sec_tag outside 0..2147483647, a bool or a string is invalid content."""
    # given
    modem = Modem()
    # when
    with pytest.raises(InvalidContentError) as rejected:
        modem.write(sec_tag, PSK, b"secret")  # type: ignore[arg-type]  # on purpose
    # then
    assert rejected.value.errno == errno.EINVAL
    assert modem.items() == []


@pytest.mark.parametrize("cred_type", [-1, 6, 99])
def test_unknown_credential_type_rejected(cred_type: int) -> None:
    """Only the six AT%CMNG types are accepted."""
    # given
    modem = Modem()
    # when / then
    with pytest.raises(InvalidContentError):
        modem.write(1, cred_type, b"secret")
    assert modem.items() == []


def test_second_write_to_a_slot_rejected_and_store_unchanged(root: IssuedCA) -> None:
    """One item per (sec_tag, type): a second write raises 519 and keeps the first."""
    # given
    modem = Modem()
    first = modem.write(7, PSK, b"first")
    # when
    with pytest.raises(AlreadyExistsError) as refused:
        modem.write(7, PSK, b"second")
    # then
    assert refused.value.modem_error == 519
    assert refused.value.errno == errno.EALREADY
    assert modem.items() == [first]
    assert modem.digest(7, PSK) == hashlib.sha256(b"first").hexdigest()


def test_same_sec_tag_different_types_coexist(root: IssuedCA) -> None:
    """A sec_tag holds one item of each type side by side."""
    # given
    modem = Modem()
    # when
    modem.write(7, CA, root.pem)
    modem.write(7, CredentialType.PSK, b"secret")
    modem.write(7, CredentialType.PSK_IDENTITY, b"identity")
    # then
    assert [(i.sec_tag, i.type) for i in modem.items()] == [
        (7, CA),
        (7, CredentialType.PSK),
        (7, CredentialType.PSK_IDENTITY),
    ]


def _padded(pem: bytes, size: int) -> bytes:
    return pem + b"\n" * (size - len(pem))


def test_padded_pem_still_parses(root: IssuedCA) -> None:
    """Newline padding after the END line leaves one parseable certificate (test premise)."""
    # given
    content = _padded(root.pem, CA_CHAIN_MAX_BYTES + 1)
    # when
    certificates = x509.load_pem_x509_certificates(content)
    # then
    assert certificates == [root.certificate]


def test_ca_chain_at_limit_accepted(root: IssuedCA) -> None:
    """A CA chain item of exactly 4096 bytes is stored byte for byte."""
    # given
    modem = Modem()
    content = _padded(root.pem, CA_CHAIN_MAX_BYTES)
    # when
    item = modem.write(7, CA, content)
    # then
    assert len(modem.read(7, CA)) == CA_CHAIN_MAX_BYTES
    assert item.not_after == root.certificate.not_valid_after_utc


def test_ca_chain_over_limit_rejected(root: IssuedCA) -> None:
    """A CA chain item of 4097 bytes is invalid content."""
    # given
    modem = Modem()
    content = _padded(root.pem, CA_CHAIN_MAX_BYTES + 1)
    # when
    with pytest.raises(InvalidContentError) as rejected:
        modem.write(7, CA, content)
    # then
    assert rejected.value.modem_error == 527
    assert not modem.exists(7, CA)


def test_store_fills_up_at_capacity() -> None:
    """Items fit up to the capacity exactly; one byte more raises 515."""
    # given
    modem = Modem(capacity_bytes=100)
    modem.write(1, PSK, b"x" * 60)
    # when
    with pytest.raises(StoreFullError) as full:
        modem.write(2, PSK, b"x" * 41)
    modem.write(3, PSK, b"x" * 40)
    # then
    assert full.value.modem_error == 515
    assert full.value.errno == errno.ENOMEM
    assert not modem.exists(2, PSK)
    assert modem.used_bytes == 100


def test_delete_of_empty_slot_not_found() -> None:
    """Deleting what is not there raises ENOENT."""
    # given
    modem = Modem()
    # when
    with pytest.raises(NotFoundError) as missing:
        modem.delete(7, CA)
    # then
    assert missing.value.errno == errno.ENOENT


def test_digest_is_sha256_of_written_bytes(root: IssuedCA) -> None:
    """The reported digest is the SHA-256 of exactly the bytes written."""
    # given
    modem = Modem()
    content = root.pem + b"\n"
    # when
    modem.write(7, CA, content)
    # then
    assert modem.digest(7, CA) == hashlib.sha256(content).hexdigest()
    assert modem.digest(7, CA) != hashlib.sha256(root.pem).hexdigest()


def test_items_sorted_by_sec_tag_then_type() -> None:
    """AT%CMNG=1 lists items by (sec_tag, type) whatever the write order."""
    # given
    modem = Modem()
    for sec_tag, cred_type in [(9, 4), (2, 3), (9, 3), (0, 4), (2, 2)]:
        modem.write(sec_tag, cred_type, b"k")
    # when
    slots = [(i.sec_tag, int(i.type)) for i in modem.items()]
    # then
    assert slots == [(0, 4), (2, 2), (2, 3), (9, 3), (9, 4)]


@pytest.mark.parametrize(
    "cred_type", [CredentialType.CLIENT_KEY, CredentialType.PSK, CredentialType.PSK_IDENTITY]
)
def test_read_of_secret_types_refused(cred_type: CredentialType) -> None:
    """Keys and PSKs cannot be read back."""
    # given
    modem = Modem()
    modem.write(7, cred_type, b"secret")
    # when / then
    with pytest.raises(NotPermittedError):
        modem.read(7, cred_type)
    assert modem.exists(7, cred_type)


def test_written_ca_described_by_its_certificate(root: IssuedCA) -> None:
    """notAfter, subject and issuer of a written CA are the certificate's."""
    # given
    modem = Modem()
    # when
    item = modem.write(7, CA, root.pem)
    # then
    assert item.not_after == root.certificate.not_valid_after_utc
    assert item.subject == root.certificate.subject.rfc4514_string()
    assert item.issuer == root.certificate.issuer.rfc4514_string()
    assert item.to_entry().not_after == item.not_after


def test_chain_not_after_is_the_earliest(root: IssuedCA, short_root: IssuedCA) -> None:
    """A chain of two CAs expires with its first-expiring certificate; subject is the first."""
    # given
    modem = Modem()
    # when
    item = modem.write(7, CA, root.pem + short_root.pem)
    # then
    assert item.not_after == short_root.certificate.not_valid_after_utc
    assert item.not_after < root.certificate.not_valid_after_utc
    assert item.subject == root.certificate.subject.rfc4514_string()


@pytest.mark.parametrize("cred_type", [CA, CredentialType.CLIENT_CERT])
def test_garbage_certificate_rejected(cred_type: CredentialType) -> None:
    """Certificate types must hold PEM certificates."""
    # given
    modem = Modem()
    # when
    with pytest.raises(InvalidContentError):
        modem.write(7, cred_type, b"not a certificate")
    # then
    assert not modem.exists(7, cred_type)


def test_empty_content_rejected() -> None:
    """An empty item is invalid content."""
    # given
    modem = Modem()
    # when / then
    with pytest.raises(InvalidContentError):
        modem.write(7, PSK, b"")
    assert modem.used_bytes == 0


# -- %KEYGEN ---------------------------------------------------------------------------------


def _csr_of(output: str) -> x509.CertificateSigningRequest:
    return x509.load_der_x509_csr(parse_keygen_output(output).csr_der)


def _spki_sha256(public_key: object) -> str:
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def test_keygen_makes_a_p256_key_kept_in_the_modem() -> None:
    """The CSR's key is stored as type 2, digested by its SPKI, and cannot be read back."""
    # given
    modem = Modem(device_id="dev-1")
    # when
    output = modem.keygen(44, subject="dev-1", seq=9)
    # then
    csr = _csr_of(output)
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(csr.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    assert csr.subject.rfc4514_string() == "CN=dev-1"
    assert modem.digest(44, CredentialType.CLIENT_KEY) == _spki_sha256(csr.public_key())
    with pytest.raises(NotPermittedError):
        modem.read(44, CredentialType.CLIENT_KEY)


def test_keygen_refused_while_online() -> None:
    """EPERM: %KEYGEN needs CFUN=4; nothing is stored."""
    # given
    modem = Modem(device_id="dev-1")
    modem.cfun(FunctionalMode.ONLINE)
    # when
    with pytest.raises(NotPermittedError) as refused:
        modem.keygen(44, subject="dev-1", seq=1)
    # then
    assert refused.value.errno == errno.EPERM
    assert modem.items() == []


def test_keygen_into_a_slot_that_holds_a_key_is_refused() -> None:
    """EALREADY (519): the key stays; deleted first, a new one is made."""
    # given
    modem = Modem(device_id="dev-1")
    modem.keygen(44, subject="dev-1", seq=1)
    first = modem.digest(44, CredentialType.CLIENT_KEY)
    # when
    with pytest.raises(AlreadyExistsError) as refused:
        modem.keygen(44, subject="dev-1", seq=2)
    modem.delete(44, CredentialType.CLIENT_KEY)
    modem.keygen(44, subject="dev-1", seq=3)
    # then
    assert refused.value.modem_error == 519
    assert modem.digest(44, CredentialType.CLIENT_KEY) != first


def test_the_attestation_is_signed_by_the_key_derived_from_seed_and_device() -> None:
    """It verifies with attestation_key(device, seed) and binds device, seq, tag and CSR."""
    # given
    modem = Modem(device_id="dev-7", fleet_seed="lab")
    # when
    output = parse_keygen_output(modem.keygen(45, subject="dev-7", seq=12))
    # then
    public = attestation_key("dev-7", "lab").public_key()
    assert modem.attestation_public_key.public_numbers() == public.public_numbers()
    claims = verify_attestation(output.attestation, public)
    claims.check(device_id="dev-7", seq=12, tag=45, csr_der=output.csr_der)
    with pytest.raises(KeygenError):
        verify_attestation(output.attestation, attestation_key("dev-7").public_key())


def test_a_written_private_key_is_digested_by_its_public_key_and_usable_for_tls(
    root: IssuedCA,
) -> None:
    """A factory-written key: its digest is its SPKI's, never its private bytes'."""
    # given
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    modem = Modem()
    # when
    modem.write(44, CredentialType.CLIENT_KEY, pem)
    modem.write(44, CredentialType.CLIENT_CERT, root.pem)
    # then
    assert modem.digest(44, CredentialType.CLIENT_KEY) == _spki_sha256(key.public_key())
    assert modem.digest(44, CredentialType.CLIENT_KEY) != hashlib.sha256(pem).hexdigest()
    identity = modem.client_identity(44)
    assert identity.certificate_pem == root.pem
    assert identity.key.private_numbers() == key.private_numbers()
    assert "PRIVATE" not in repr(identity)


@pytest.mark.parametrize(
    ("fault", "broken"),
    [
        ("csr-wrong-subject", "subject"),
        ("csr-bad-signature", "signature"),
        ("attestation-forged", "attestation"),
        ("csr-reused-key", "key"),
    ],
)
def test_keygen_faults_break_what_they_name(root: IssuedCA, fault: str, broken: str) -> None:
    """Each fault breaks exactly one thing certfleet checks."""
    # given
    modem = Modem(device_id="dev-1", faults=frozenset({fault}))
    old = ec.generate_private_key(ec.SECP256R1())
    modem.write(
        44,
        CredentialType.CLIENT_KEY,
        old.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # when
    output = parse_keygen_output(modem.keygen(45, subject="dev-1", seq=1))
    # then
    csr = x509.load_der_x509_csr(output.csr_der)
    public = attestation_key("dev-1").public_key()
    found = {
        "subject": csr.subject.rfc4514_string() != "CN=dev-1",
        "signature": not csr.is_signature_valid,
        "key": _spki_sha256(csr.public_key()) == _spki_sha256(old.public_key()),
    }
    try:
        verify_attestation(output.attestation, public)
        found["attestation"] = False
    except KeygenError:
        found["attestation"] = True
    assert {name for name, bad in found.items() if bad} == {broken}
