"""Device identities on a real Mosquitto mutual-TLS listener, and revocation through the CRL.

The listener is the shipped one (require_certificate, use_identity_as_username, the
shipped ACL) with `crlfile` = the CRL certfleet writes. A device connects with the
certificate its CA issued and is known by its CN; once its serial is in the CRL and
the broker has read it (Mosquitto 2.0 does not read a changed `crlfile` by itself: on
SIGHUP, which 2.0.11 mishandles while devices keep offline sessions, or at a restart,
which the shipped deployment does), the same certificate is refused.
"""

from __future__ import annotations

import queue
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.crl_file import CrlFilePublisher
from orchestrator.adapters.issuer_cfssl import CfsslIssuer
from orchestrator.adapters.issuer_local import LocalCaIssuer
from orchestrator.adapters.issuers import (
    crl_publisher_from_settings,
    crl_signer_from_settings,
    issuer_from_settings,
)
from orchestrator.config import Settings
from orchestrator.domain.identity import IssuedCertificate, RevokedCertificate
from simulator.pki import IssuedCert, make_ca
from tests.cfssl import cfssl_installed, start_cfssl
from tests.mtls import MtlsBroker, device_identity, make_pki, start_mtls_broker, try_connect

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
ACCEPTED = "accepted"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MtlsBroker]:
    broker = start_mtls_broker(tmp_path / "broker", make_pki(tmp_path / "pki"))
    yield broker
    broker.stop()


@pytest.fixture
def issuer(broker: MtlsBroker) -> LocalCaIssuer:
    return LocalCaIssuer(broker.pki.device_ca_file, broker.pki.device_ca_key_file)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _csr(device_id: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def _revoked(issued: IssuedCertificate, device_id: str) -> RevokedCertificate:
    return RevokedCertificate(
        serial=issued.serial, revoked_at=NOW, not_after=issued.not_after, device_id=device_id
    )


def test_a_device_certificate_connects_and_is_refused_once_revoked(
    broker: MtlsBroker, issuer: LocalCaIssuer
) -> None:
    """Issued: accepted. In the CRL, before the reload: still accepted. After it: refused."""
    csr, key = _csr("dev-1")
    old = issuer.issue(csr, device_id="dev-1")
    other_csr, other_key = _csr("dev-2")
    other = issuer.issue(other_csr, device_id="dev-2")
    assert try_connect(broker, old.pem.encode(), _key_pem(key)) == ACCEPTED

    quiet = CrlFilePublisher(broker.pki.crl_file)  # no reload: the broker keeps its old CRL
    crl = issuer.sign_crl([_revoked(old, "dev-1")], now=NOW, next_update=NOW + timedelta(days=1))
    quiet.publish(crl)
    assert try_connect(broker, old.pem.encode(), _key_pem(key)) == ACCEPTED

    reloads = broker.reloads()
    CrlFilePublisher(broker.pki.crl_file, reload_pid_file=broker.pid_file).publish(crl)
    broker.wait_reloaded(reloads)
    assert try_connect(broker, old.pem.encode(), _key_pem(key)) == "certificate_revoked"
    assert try_connect(broker, other.pem.encode(), _key_pem(other_key)) == ACCEPTED
    assert broker.usernames(after_reload=reloads + 1) == [("dev-2", "dev-2")]


def test_a_certificate_from_another_ca_or_none_is_refused(broker: MtlsBroker) -> None:
    """Same CN, another CA: unknown_ca. No certificate at all: no connection either."""
    rogue_ca = make_ca("not the device CA", not_before=NOW, not_after=NOW + timedelta(days=1))
    rogue = device_identity(rogue_ca, "dev-1")
    assert try_connect(broker, rogue.pem, rogue.key_pem) == "unknown_ca"
    assert try_connect(broker, None, None) != ACCEPTED


def test_a_restart_reads_the_crl_as_it_is_now(broker: MtlsBroker, issuer: LocalCaIssuer) -> None:
    """A CRL written without a reload counts from the broker's restart, on the same ports."""
    device = device_identity(broker.pki.device_ca, "dev-4")
    issued = IssuedCertificate(
        pem=device.pem.decode(),
        serial=device.certificate.serial_number,
        not_after=device.certificate.not_valid_after_utc,
    )
    crl = issuer.sign_crl([_revoked(issued, "dev-4")], now=NOW, next_update=NOW + timedelta(1))
    CrlFilePublisher(broker.pki.crl_file).publish(crl)
    assert try_connect(broker, device.pem, device.key_pem) == ACCEPTED
    mark = broker.restart()
    assert try_connect(broker, device.pem, device.key_pem) == "certificate_revoked"
    other = device_identity(broker.pki.device_ca, "dev-5")
    assert try_connect(broker, other.pem, other.key_pem) == ACCEPTED
    assert broker.usernames(since=mark) == [("dev-5", "dev-5")]


def test_a_crl_past_its_next_update_refuses_every_device(
    broker: MtlsBroker, issuer: LocalCaIssuer
) -> None:
    """Why certfleet re-signs the CRL before next_update: an expired CRL locks everyone out."""
    device = device_identity(broker.pki.device_ca, "dev-3")
    assert try_connect(broker, device.pem, device.key_pem) == ACCEPTED
    stale = issuer.sign_crl([], now=NOW - timedelta(days=2), next_update=NOW - timedelta(days=1))
    CrlFilePublisher(broker.pki.crl_file).publish(stale)
    broker.reload()
    assert try_connect(broker, device.pem, device.key_pem) == "certificate_expired"


class _Service:
    """A certfleet-like service on the plain listener, subscribed to every device's state."""

    def __init__(self, broker: MtlsBroker) -> None:
        self.received: queue.Queue[str] = queue.Queue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="service")
        self._client.on_message = lambda _c, _u, message: self.received.put(message.topic)
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe("certfleet/+/state", qos=1)
        self._client.loop_start()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _device_client(broker: MtlsBroker, identity: IssuedCert, client_id: str) -> mqtt.Client:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(broker.pki.server_ca_file)
    pair = broker.pki.directory / f"{client_id}-identity.pem"
    pair.write_bytes(identity.pem + identity.key_pem)
    pair.chmod(0o600)
    context.load_cert_chain(pair)
    pair.unlink()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set_context(context)
    return client


def test_the_broker_knows_a_device_by_its_certificate_cn(broker: MtlsBroker) -> None:
    """Username and client id are the CN whatever the client claims; the ACL confines it."""
    service = _Service(broker)
    identity = device_identity(broker.pki.device_ca, "dev-7")
    device = _device_client(broker, identity, client_id="pretends-to-be-dev-8")
    try:
        device.connect("127.0.0.1", broker.device_port)
        device.loop_start()
        device.publish("certfleet/dev-8/state", b"{}", qos=1).wait_for_publish(5)
        device.publish("certfleet/dev-7/state", b"{}", qos=1).wait_for_publish(5)
        assert service.received.get(timeout=5) == "certfleet/dev-7/state"
        assert service.received.empty(), "another device's topic is not writable"
    finally:
        device.loop_stop()
        device.disconnect()
        service.close()
    assert ("dev-7", "dev-7") in broker.usernames()


def test_certificates_from_cfssl_connect_and_are_refused_once_revoked(
    broker: MtlsBroker, issuer: LocalCaIssuer, tmp_path: Path
) -> None:
    """CFSSL serving the device CA: its certificate connects; certfleet's CRL revokes it."""
    if not cfssl_installed():
        pytest.skip("cfssl is not installed (apt-get install golang-cfssl)")
    cfssl = start_cfssl(tmp_path / "cfssl", broker.pki.device_ca)
    try:
        csr, key = _csr("dev-9")
        issued = CfsslIssuer(cfssl.url).issue(csr, device_id="dev-9")
        assert try_connect(broker, issued.pem.encode(), _key_pem(key)) == ACCEPTED
        assert CfsslIssuer(cfssl.url).revoke(issued.pem, reason="superseded")
    finally:
        cfssl.stop()
    crl = issuer.sign_crl([_revoked(issued, "dev-9")], now=NOW, next_update=NOW + timedelta(1))
    reloads = broker.reloads()
    CrlFilePublisher(broker.pki.crl_file, reload_pid_file=broker.pid_file).publish(crl)
    broker.wait_reloaded(reloads)
    assert try_connect(broker, issued.pem.encode(), _key_pem(key)) == "certificate_revoked"


def test_certfleet_settings_for_the_broker_revoke_through_its_own_reload(
    broker: MtlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the broker's settings, the factories' issuer, signer and publisher revoke for real:
    the CRL they write counts from the broker's restart, as the shipped deployment does it."""
    for name, value in broker.settings_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    issuer, signer = issuer_from_settings(settings), crl_signer_from_settings(settings)
    publisher = crl_publisher_from_settings(settings)
    assert issuer is not None
    assert signer is not None
    assert publisher is not None
    csr, key = _csr("dev-11")
    issued = issuer.issue(csr, device_id="dev-11")
    assert try_connect(broker, issued.pem.encode(), _key_pem(key)) == ACCEPTED
    publisher.publish(
        signer.sign_crl([_revoked(issued, "dev-11")], now=NOW, next_update=NOW + timedelta(1))
    )
    assert try_connect(broker, issued.pem.encode(), _key_pem(key)) == ACCEPTED, "not yet"
    broker.restart()
    assert try_connect(broker, issued.pem.encode(), _key_pem(key)) == "certificate_revoked"
