"""Simulated devices leave the factory as asked: an identity from a given CA, their faults,
and attestation keys certfleet can be given ahead."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.attestation_file import attestation_keys_from_file
from orchestrator.protocol import CredentialType, StateMessage, Topics
from orchestrator.protocol.keygen import parse_keygen_output, verify_attestation
from simulator.cli_options import (
    KeyEscrowFile,
    load_identities,
    parse_faults,
    write_attestation_keys,
)
from simulator.fleet import IdentityProvisioning, build_firmwares, ca_issuer
from simulator.modem import FunctionalMode
from simulator.pki import issue_client_cert, make_ca

pytestmark = pytest.mark.unit

NOW = datetime.now(UTC).replace(microsecond=0)
ROOT = make_ca("Root", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))
DEVICE_CA = make_ca(
    "Devices", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900)
)


def _fleet(count: int, **options: object) -> list:  # type: ignore[type-arg]
    return build_firmwares(
        range(count),
        ca_chain=ROOT.pem,
        sec_tag=42,
        id_prefix="f-",
        topics=Topics("certfleet"),
        **options,  # type: ignore[arg-type]
    )


def test_devices_get_a_factory_identity_from_the_given_ca() -> None:
    """Identity tag 44 holds a certificate of CN=<device id> by the CA, until the chosen day,
    of a key kept in the modem; the state message names the tag and carries the PEM."""
    # given
    not_after = NOW + timedelta(days=10)
    identity = IdentityProvisioning(ca_issuer(DEVICE_CA, not_after=not_after), tag=44)
    # when
    firmwares = _fleet(2, identity=identity)
    # then
    for firmware in firmwares:
        modem = firmware.modem
        certificate = x509.load_pem_x509_certificate(modem.read(44, CredentialType.CLIENT_CERT))
        assert certificate.subject.rfc4514_string() == f"CN={firmware.device_id}"
        assert certificate.issuer == DEVICE_CA.certificate.subject
        assert certificate.not_valid_after_utc == not_after
        assert firmware.identity_tag == 44
        held = firmware.client_identity()
        assert held is not None
        assert held.key.public_key().public_numbers() == certificate.public_key().public_numbers()
        state = StateMessage.model_validate_json(firmware.state_message().to_json())
        assert state.identity_tag == 44
        assert {c.type: c.pem is not None for c in state.credentials if c.sec_tag == 44} == {
            CredentialType.CLIENT_CERT: True,
            CredentialType.CLIENT_KEY: False,
        }


def test_faults_go_to_the_devices_named() -> None:
    """`csr-wrong-subject@1`: only device 1's keygen names another subject."""
    # given
    plan = parse_faults(["csr-wrong-subject@1", "probe-refused"], 3)
    firmwares = _fleet(3, faults=plan.everywhere, device_faults=plan.by_device)
    # when
    subjects = []
    for firmware in firmwares:
        firmware.modem.cfun(FunctionalMode.OFFLINE)
        output = firmware.modem.keygen(45, subject=firmware.device_id, seq=1)
        csr = x509.load_der_x509_csr(parse_keygen_output(output).csr_der)
        subjects.append(csr.subject.rfc4514_string() == f"CN={firmware.device_id}")
    # then
    assert subjects == [True, False, True]
    assert all("probe-refused" in firmware.faults for firmware in firmwares)


@pytest.mark.parametrize(
    "value",
    [
        "no-such-fault",
        "csr-reused-key@3",
        "csr-reused-key@x",
        "csr-foreign-key",
        "csr-foreign-key@2",
    ],
)
def test_an_unknown_fault_or_device_is_refused(value: str) -> None:
    """The message names what is wrong."""
    with pytest.raises(ValueError, match=r"fault"):
        parse_faults([value], 3)


def test_the_attestation_keys_file_verifies_the_modems_attestations(tmp_path: Path) -> None:
    """certfleet's attestation keys adapter reads the file; each key verifies its device."""
    # given
    firmwares = _fleet(2, fleet_seed="lab")
    path = tmp_path / "attestation.json"
    # when
    write_attestation_keys(path, [f.device_id for f in firmwares], "lab")
    # then
    keys = attestation_keys_from_file(path)
    assert set(json.loads(path.read_text())) == {"f-00000", "f-00001"}
    for firmware in firmwares:
        output = parse_keygen_output(firmware.modem.keygen(45, subject=firmware.device_id, seq=4))
        public = keys.key_for(firmware.device_id)
        assert public is not None
        verify_attestation(output.attestation, public).check(
            device_id=firmware.device_id, seq=4, tag=45, csr_der=output.csr_der
        )


def test_the_key_escrow_records_every_key_the_modems_hold(tmp_path: Path) -> None:
    """The factory key and each keygen's (a test's list of what must never be recorded)."""
    # given
    escrow = tmp_path / "keys.jsonl"
    identity = IdentityProvisioning(ca_issuer(DEVICE_CA, not_after=NOW + timedelta(days=10)))
    (firmware,) = _fleet(1, identity=identity, key_escrow=KeyEscrowFile(escrow))
    # when
    firmware.modem.keygen(45, subject=firmware.device_id, seq=1)
    # then
    lines = [json.loads(line) for line in escrow.read_text().splitlines()]
    assert [(line["device"], line["tag"]) for line in lines] == [("f-00000", 44), ("f-00000", 45)]
    held = firmware.modem.client_identity(44).key
    first = serialization.load_pem_private_key(lines[0]["pem"].encode(), password=None)
    assert first.private_numbers() == held.private_numbers()  # type: ignore[union-attr]
    assert escrow.stat().st_mode & 0o077 == 0


def test_given_identities_are_installed_as_they_are(tmp_path: Path) -> None:
    """`--identities`: a device listed gets its certificate and key; the others one from the CA."""
    # given
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue_client_cert(
        DEVICE_CA, "f-00000", key.public_key(), not_before=NOW, not_after=NOW + timedelta(days=3)
    ).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "identities.json"
    path.write_text(
        json.dumps({"f-00000": {"cert": certificate.decode(), "key": key_pem.decode()}})
    )
    identity = IdentityProvisioning(
        ca_issuer(DEVICE_CA, not_after=NOW + timedelta(days=10)), given=load_identities(path)
    )
    # when
    first, second = _fleet(2, identity=identity)
    # then
    assert first.modem.read(44, CredentialType.CLIENT_CERT) == certificate
    assert first.modem.client_identity(44).key.private_numbers() == key.private_numbers()
    assert second.modem.read(44, CredentialType.CLIENT_CERT) != certificate
    assert second.client_identity() is not None


def test_a_given_identity_whose_certificate_is_not_of_its_key_is_refused() -> None:
    """The factory checks the pair: a device that could never connect is not built."""
    # given
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    certificate = issue_client_cert(
        DEVICE_CA, "f-00000", other.public_key(), not_before=NOW, not_after=NOW + timedelta(days=3)
    ).public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    identity = IdentityProvisioning(None, given={"f-00000": (certificate, key_pem)})
    # when / then
    with pytest.raises(ValueError, match="not of its key"):
        _fleet(1, identity=identity)


def test_a_foreign_key_keygen_answers_with_the_next_devices_factory_key() -> None:
    """`csr-foreign-key@0`: device 0's CSR carries device 1's key, the one of its certificate."""
    # given
    identity = IdentityProvisioning(ca_issuer(DEVICE_CA, not_after=NOW + timedelta(days=10)))
    first, second = _fleet(2, identity=identity, device_faults={0: frozenset({"csr-foreign-key"})})
    # when
    output = parse_keygen_output(first.modem.keygen(45, subject=first.device_id, seq=1))
    # then
    csr = x509.load_der_x509_csr(output.csr_der)
    neighbour = x509.load_pem_x509_certificate(second.modem.read(44, CredentialType.CLIENT_CERT))
    assert csr.public_key().public_numbers() == neighbour.public_key().public_numbers()  # type: ignore[union-attr]
    assert csr.subject.rfc4514_string() == f"CN={first.device_id}"


def test_devices_trust_the_root_given_or_the_development_key_but_never_read_a_token(
    tmp_path: Path,
) -> None:
    """`--signer-pub` (the root's public key) is trusted; without it the development key
    file's public half; with the root in a PKCS#11 token, nothing (the simulator has no
    business with the token) and a warning that says to give --signer-pub."""
    from orchestrator.protocol.cose import key_id  # noqa: PLC0415
    from simulator.cli import _trusted_signers  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    public, private = tmp_path / "root.pub.pem", tmp_path / "root.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    kid = key_id(key.public_key())

    assert set(_trusted_signers(public, tmp_path / "none.pem", root_in_token=True)) == {kid}
    assert set(_trusted_signers(None, private)) == {kid}
    assert _trusted_signers(None, private, root_in_token=True) == {}
