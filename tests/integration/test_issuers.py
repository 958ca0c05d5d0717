"""The issuers on real parts: the local CA from key files, and a real `cfssl serve`.

Both sign a device's CSR into a TLS client certificate for the CSR's own key; CFSSL
keeps its revocations in its database (with its 1.2 quirk of an empty authority key
identifier), the local CA in the CRL certfleet signs. An unreachable CFSSL is
`IssuerUnavailableError` (retried), a refusal `IssuerRefusedError` with CFSSL's reason.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.adapters.crl_file import CrlFilePublisher, CrlPublishError, CrlReloadError
from orchestrator.adapters.issuer_cfssl import CfsslIssuer
from orchestrator.adapters.issuer_local import LocalCaIssuer
from orchestrator.adapters.issuers import (
    IssuerConfigError,
    crl_publisher_from_settings,
    crl_signer_from_settings,
    issuer_from_settings,
)
from orchestrator.config import Settings
from orchestrator.domain.errors import IssuerRefusedError, IssuerUnavailableError, SigningKeyError
from orchestrator.domain.identity import RevokedCertificate
from simulator.pki import IssuedCA, make_ca
from simulator.services import free_port
from tests.cfssl import CfsslServer, cfssl_installed, start_cfssl
from tests.procs import wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
CFSSL_SUPERSEDED = 4  # RFC 5280 reason codes as CFSSL's database stores them
CFSSL_CESSATION = 5


def make_csr(device_id: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A PKCS#10 CSR as `%KEYGEN` makes it: P-256, subject CN=device id, nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def write_ca(directory: Path, ca: IssuedCA, *, key_mode: int = 0o600) -> tuple[Path, Path]:
    """The CA certificate and key files a deployment would have."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
    cert_file.write_bytes(ca.pem)
    key_file.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(key_mode)
    return cert_file, key_file


def assert_client_certificate(
    pem: str, *, ca: IssuedCA, device_id: str, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """Signed by `ca`, for `key`, CN=device id, a TLS client certificate and nothing more."""
    certificate = x509.load_pem_x509_certificate(pem.encode())
    certificate.verify_directly_issued_by(ca.certificate)
    assert certificate.public_key() == key.public_key()
    assert certificate.subject.rfc4514_string() == f"CN={device_id}"
    extensions = certificate.extensions
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    return certificate


@pytest.fixture(scope="module")
def device_ca() -> IssuedCA:
    return make_ca(
        "certfleet device identity CA",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=3650),
    )


@pytest.fixture
def local(tmp_path: Path, device_ca: IssuedCA) -> LocalCaIssuer:
    return LocalCaIssuer(*write_ca(tmp_path / "ca", device_ca), cert_days=90)


FACTORY_PROFILE = {"expiry": "240h", "usages": ["digital signature", "client auth"]}


@pytest.fixture
def cfssl(tmp_path: Path, device_ca: IssuedCA) -> Iterator[CfsslServer]:
    if not cfssl_installed():
        pytest.skip("cfssl is not installed (apt-get install golang-cfssl)")
    server = start_cfssl(tmp_path / "cfssl", device_ca, profiles={"factory": FACTORY_PROFILE})
    yield server
    server.stop()


# -- the local CA ---------------------------------------------------------------------------


def test_local_issuer_signs_a_client_certificate_for_the_csr_key(
    local: LocalCaIssuer, device_ca: IssuedCA
) -> None:
    """The certificate carries the CSR's key and subject, clientAuth, a 159-bit random serial."""
    csr, key = make_csr("dev-0001")
    before = datetime.now(UTC)
    issued = local.issue(csr, device_id="dev-0001")
    after = datetime.now(UTC)
    certificate = assert_client_certificate(issued.pem, ca=device_ca, device_id="dev-0001", key=key)
    assert issued.serial == certificate.serial_number
    assert 0 < issued.serial < 2**159
    assert issued.not_after == certificate.not_valid_after_utc
    # validity from the time of issuance (the module's NOW may be minutes older in a long run)
    assert before + timedelta(days=89) < issued.not_after <= after + timedelta(days=90, minutes=1)
    assert local.issue(csr, device_id="dev-0001").serial != issued.serial


def test_local_issuer_refuses_a_csr_whose_signature_is_bad(local: LocalCaIssuer) -> None:
    """A CSR signed by another key than the one it carries gets no certificate."""
    csr_pem, _key = make_csr("dev-0001")
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-3] ^= 0x01  # inside the signature
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(IssuerRefusedError, match="bad signature"):
        local.issue(forged, device_id="dev-0001")


def test_local_issuer_keeps_no_revocations_but_signs_the_crl(
    local: LocalCaIssuer, device_ca: IssuedCA
) -> None:
    """revoke() is False and crl() None; sign_crl lists every serial with its reason."""
    first = local.issue(make_csr("dev-1")[0], device_id="dev-1")
    second = local.issue(make_csr("dev-2")[0], device_id="dev-2")
    assert local.revoke(first.pem, reason="superseded") is False
    assert local.crl() is None
    revoked = [
        RevokedCertificate(
            serial=first.serial, revoked_at=NOW, not_after=first.not_after, device_id="dev-1"
        ),
        RevokedCertificate(
            serial=second.serial,
            revoked_at=NOW,
            not_after=second.not_after,
            device_id="dev-2",
            reason="cessation_of_operation",
        ),
    ]
    next_update = NOW + timedelta(days=1)
    crl = x509.load_pem_x509_crl(local.sign_crl(revoked, now=NOW, next_update=next_update))
    assert crl.is_signature_valid(device_ca.key.public_key())
    assert crl.issuer == device_ca.certificate.subject
    assert crl.next_update_utc == next_update.replace(microsecond=0)
    reasons = {
        entry.serial_number: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for entry in crl
    }
    assert reasons == {
        first.serial: x509.ReasonFlags.superseded,
        second.serial: x509.ReasonFlags.cessation_of_operation,
    }
    with pytest.raises(ValueError, match="unknown revocation reason"):
        local.revoke(first.pem, reason="because")


def test_local_issuer_refuses_a_ca_key_others_can_read(tmp_path: Path, device_ca: IssuedCA) -> None:
    """Like the signing key: a CA key file readable by group or others is refused, unread."""
    cert_file, key_file = write_ca(tmp_path, device_ca, key_mode=0o640)
    with pytest.raises(SigningKeyError, match="chmod 600") as refused:
        LocalCaIssuer(cert_file, key_file)
    assert "PRIVATE" not in str(refused.value)


def test_local_issuer_refuses_a_key_of_another_ca(tmp_path: Path, device_ca: IssuedCA) -> None:
    """A key that does not match the CA certificate is found at start, not at the first CSR."""
    other = make_ca("another CA", not_before=NOW, not_after=NOW + timedelta(days=1))
    cert_file, _ = write_ca(tmp_path / "a", device_ca)
    _, other_key = write_ca(tmp_path / "b", other)
    with pytest.raises(SigningKeyError, match="is not the key of the CA"):
        LocalCaIssuer(cert_file, other_key)


# -- the CRL file -----------------------------------------------------------------------------


def test_crl_file_is_replaced_whole_and_public(tmp_path: Path, local: LocalCaIssuer) -> None:
    """The CRL lands at its path, mode 0644, with no temporary file left beside it."""
    publisher = CrlFilePublisher(tmp_path / "crl" / "devices.crl.pem")
    publisher.path.parent.mkdir()
    first = local.sign_crl([], now=NOW, next_update=NOW + timedelta(days=1))
    publisher.publish(first)
    second = local.sign_crl([], now=NOW + timedelta(seconds=1), next_update=NOW + timedelta(days=1))
    publisher.publish(second)
    assert publisher.path.read_bytes() == second
    assert publisher.path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in publisher.path.parent.iterdir()] == ["devices.crl.pem"]


def test_crl_file_refuses_what_is_not_a_crl(tmp_path: Path, local: LocalCaIssuer) -> None:
    """Something else never replaces the CRL (Mosquitto would drop CRL checks on reload)."""
    publisher = CrlFilePublisher(tmp_path / "devices.crl.pem")
    good = local.sign_crl([], now=NOW, next_update=NOW + timedelta(days=1))
    publisher.publish(good)
    with pytest.raises(CrlPublishError):
        publisher.publish(b"-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
    assert publisher.path.read_bytes() == good


def test_crl_reload_signals_the_pid_in_the_file(tmp_path: Path, local: LocalCaIssuer) -> None:
    """SIGHUP goes to the pid file's process; a dead pid or a bad file is CrlReloadError."""
    marker = tmp_path / "hup"
    child = subprocess.Popen(  # a process that records the SIGHUP it gets
        [
            sys.executable,
            "-c",
            "import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGHUP, lambda *_: pathlib.Path({str(marker)!r}).touch())\n"
            "print('ready', flush=True)\n"
            "time.sleep(20)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        pid_file = tmp_path / "broker.pid"
        pid_file.write_text(f"{child.pid}\n")
        publisher = CrlFilePublisher(tmp_path / "crl.pem", reload_pid_file=pid_file)
        publisher.publish(local.sign_crl([], now=NOW, next_update=NOW + timedelta(days=1)))
        wait_until(marker.exists, timeout=5, what="the SIGHUP")
    finally:
        child.kill()
        child.wait()
    with pytest.raises(CrlReloadError, match="no process"):
        publisher.reload()
    pid_file.write_text("mosquitto\n")
    with pytest.raises(CrlReloadError, match="does not hold a process id"):
        publisher.reload()
    assert (tmp_path / "crl.pem").exists(), "the CRL is written before the signal"


# -- CFSSL ------------------------------------------------------------------------------------


def test_cfssl_signs_a_client_certificate_for_the_csr_key(
    cfssl: CfsslServer, device_ca: IssuedCA
) -> None:
    """CFSSL signs with its CA: the CSR's key and subject, clientAuth; the profile counts."""
    csr, key = make_csr("dev-0002")
    before = datetime.now(UTC)
    issued = CfsslIssuer(cfssl.url).issue(csr, device_id="dev-0002")
    assert_client_certificate(issued.pem, ca=device_ca, device_id="dev-0002", key=key)
    assert issued.serial in cfssl.issued()
    yearly = CfsslIssuer(cfssl.url, profile="device").issue(make_csr("dev-3")[0], device_id="dev-3")
    factory = CfsslIssuer(cfssl.url, profile="factory").issue(make_csr("dev-4")[0], device_id="x")
    after = datetime.now(UTC)
    # validity from the time of issuance (the module's NOW may be minutes older in a long run)
    assert issued.not_after <= after + timedelta(hours=721)  # the default profile: 720h
    assert yearly.not_after > before + timedelta(days=364)
    assert before + timedelta(days=9) < factory.not_after <= after + timedelta(days=10, minutes=1)


def test_cfssl_revokes_what_it_signed_despite_its_empty_aki(
    cfssl: CfsslServer, local: LocalCaIssuer
) -> None:
    """Revoked in CFSSL's database with its reason; a certificate it never signed: False."""
    issuer = CfsslIssuer(cfssl.url)
    issued = issuer.issue(make_csr("dev-0003")[0], device_id="dev-0003")
    assert issuer.revoke(issued.pem, reason="superseded") is True
    assert cfssl.revocations() == {issued.serial: CFSSL_SUPERSEDED}
    assert issuer.revoke(issued.pem, reason="cessation_of_operation") is True  # a repeat is fine
    assert cfssl.revocations() == {issued.serial: CFSSL_CESSATION}
    foreign = local.issue(make_csr("dev-0004")[0], device_id="dev-0004")
    assert issuer.revoke(foreign.pem, reason="superseded") is False
    assert issuer.crl() is None  # CFSSL 1.2 has no CRL endpoint


def test_cfssl_issued_certificates_are_listed_in_the_crl_certfleet_signs(
    cfssl: CfsslServer, tmp_path: Path
) -> None:
    """With CERTFLEET_CRL_CA_* = CFSSL's CA, certfleet's CRL names CFSSL's serials for its CA."""
    settings = Settings(
        issuer="cfssl",
        issuer_url=cfssl.url,
        crl_ca_cert_file=cfssl.ca_cert_file,
        crl_ca_key_file=cfssl.ca_key_file,
        crl_file=tmp_path / "crl.pem",
    )
    issuer, signer = issuer_from_settings(settings), crl_signer_from_settings(settings)
    publisher = crl_publisher_from_settings(settings)
    assert issuer is not None
    assert signer is not None
    assert publisher is not None
    issued = issuer.issue(make_csr("dev-0005")[0], device_id="dev-0005")
    revoked = RevokedCertificate(
        serial=issued.serial, revoked_at=NOW, not_after=issued.not_after, device_id="dev-0005"
    )
    publisher.publish(signer.sign_crl([revoked], now=NOW, next_update=NOW + timedelta(hours=1)))
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    cfssl_ca = x509.load_pem_x509_certificate(cfssl.ca_cert_file.read_bytes())
    certificate = x509.load_pem_x509_certificate(issued.pem.encode())
    assert crl.is_signature_valid(cfssl_ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == certificate.issuer
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None


def test_cfssl_refusal_carries_its_reason(cfssl: CfsslServer) -> None:
    """A CSR CFSSL cannot use is refused for good, with CFSSL's own message."""
    with pytest.raises(IssuerRefusedError, match="CSR Decode failed"):
        CfsslIssuer(cfssl.url).issue("not a CSR", device_id="dev-0006")


def test_cfssl_down_is_unavailable_and_back_works(cfssl: CfsslServer) -> None:
    """Stopped: sign and revoke are IssuerUnavailableError; started again: it signs."""
    issuer = CfsslIssuer(cfssl.url, timeout=2)
    issued = issuer.issue(make_csr("dev-0007")[0], device_id="dev-0007")
    cfssl.stop()
    with pytest.raises(IssuerUnavailableError, match="unreachable"):
        issuer.issue(make_csr("dev-0008")[0], device_id="dev-0008")
    with pytest.raises(IssuerUnavailableError):
        issuer.revoke(issued.pem, reason="superseded")
    cfssl.start()
    assert issuer.issue(make_csr("dev-0008")[0], device_id="dev-0008").serial in cfssl.issued()


def test_cfssl_that_never_answers_times_out_as_unavailable() -> None:
    """A server that accepts and stays silent costs the timeout, then IssuerUnavailableError."""
    port = free_port()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", port))
        silent.listen(8)
        issuer = CfsslIssuer(f"http://127.0.0.1:{port}", timeout=0.5)
        with pytest.raises(IssuerUnavailableError):
            issuer.issue(make_csr("dev-0009")[0], device_id="dev-0009")


def test_cfssl_url_without_the_api_is_unavailable(cfssl: CfsslServer) -> None:
    """A URL that is not a cfssl serve's base (404 without CFSSL's envelope) is not a refusal."""
    with pytest.raises(IssuerUnavailableError, match="CERTFLEET_ISSUER_URL"):
        CfsslIssuer(cfssl.url + "/nothing").issue(make_csr("dev-10")[0], device_id="dev-10")


# -- settings -----------------------------------------------------------------------------------


def test_settings_choose_the_issuer_and_refuse_halves(tmp_path: Path, device_ca: IssuedCA) -> None:
    """local without CA files: none; with them the local CA; cfssl needs a URL; pairs are pairs."""
    cert_file, key_file = write_ca(tmp_path, device_ca)
    assert issuer_from_settings(Settings(issuer="local")) is None
    assert crl_signer_from_settings(Settings(issuer="local")) is None
    assert crl_publisher_from_settings(Settings()) is None
    local = Settings(issuer_ca_cert_file=cert_file, issuer_ca_key_file=key_file)
    assert isinstance(issuer_from_settings(local), LocalCaIssuer)
    assert isinstance(crl_signer_from_settings(local), LocalCaIssuer)
    assert isinstance(
        issuer_from_settings(Settings(issuer="cfssl", issuer_url="http://x:1")), CfsslIssuer
    )
    with pytest.raises(IssuerConfigError, match="CERTFLEET_ISSUER_URL"):
        issuer_from_settings(Settings(issuer="cfssl"))
    with pytest.raises(IssuerConfigError, match="KEY_FILE"):
        issuer_from_settings(Settings(issuer_ca_cert_file=cert_file))
    with pytest.raises(IssuerConfigError, match="CERTFLEET_CRL_FILE"):
        crl_publisher_from_settings(Settings(crl_reload_pid_file=tmp_path / "pid"))
