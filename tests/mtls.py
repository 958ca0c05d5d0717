"""A PKI and a Mosquitto whose device listener requires client certificates (mutual TLS).

    pki = make_pki(tmp_path / "pki")                 # server CA + broker cert, device CA, empty CRL
    broker = start_mtls_broker(tmp_path / "broker", pki)
    broker.port          # plain listener for certfleet's services (anonymous, loopback only)
    broker.device_port   # mutual TLS 1.2: require_certificate, use_identity_as_username,
                         # crlfile = pki.crl_file, the shipped ACL (deploy/mosquitto/acl)
    broker.settings_env()  # MQTT on the plain listener, CERTFLEET_CRL_FILE = pki.crl_file,
                         # the device CA as local issuer
    cert = device_identity(pki.device_ca, "dev-1")   # or any certificate the issuer made
    try_connect(broker, cert.pem, cert.key_pem)      # "accepted" or the TLS alert, e.g.
                                                     # "certificate_revoked", "unknown_ca"
    mark = broker.restart()  # same config and ports: reads the CRL as it is now
    broker.usernames(since=mark)  # (client id, username = CN) of the clients connected since
    broker.stop()

With CFSSL: start_cfssl(dir, pki.device_ca) and `{**broker.settings_env(issuer=False),
**cfssl.settings_env()}`. Devices trust pki.server_ca_file and connect to
127.0.0.1:broker.device_port (also the identity probe) with a certificate of
pki.device_ca: `device_identity(pki.device_ca, id, not_after=...)` gives certificate and key.

Mosquitto 2.0 reads `crlfile` when it starts and on SIGHUP only (orchestrator/adapters/
crl_file.py), and 2.0.11 can crash on a SIGHUP while devices keep offline sessions
(persistent sessions of devices that disconnected; docs/operations.md), so a test that
revokes calls `broker.restart()` after the CRL changed, as the shipped deployment restarts
its broker. `broker.reload()` (SIGHUP) and `settings_env(reload=True)` are for tests without
such sessions. Who connected with the new certificate: whoever connects after the restart
(`usernames(since=mark)`) while the CRL lists the old one.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from simulator.services import LocalService, ServiceError, free_port, wait_for_port
from tests.procs import REPO, wait_until

__all__ = [
    "SHIPPED_ACL",
    "MtlsBroker",
    "MtlsPki",
    "device_identity",
    "empty_crl",
    "make_pki",
    "mosquitto_binary",
    "start_mtls_broker",
    "try_connect",
]

SHIPPED_ACL: Final = REPO / "deploy" / "mosquitto" / "acl"
ACCEPTED: Final = "accepted"
CONNECTED_LINE: Final = re.compile(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)")


@dataclass(frozen=True, slots=True)
class MtlsPki:
    """The broker's server chain, the device CA, and the CRL file the broker reads."""

    directory: Path
    server_ca: IssuedCA
    device_ca: IssuedCA
    server_ca_file: Path
    """What devices trust to validate the broker."""
    server_cert_file: Path
    server_key_file: Path
    device_ca_file: Path
    """The broker's `cafile` on the device listener: the CA that issues identities."""
    device_ca_key_file: Path
    """The device CA's key, mode 0600 (CERTFLEET_ISSUER_CA_KEY_FILE / _CRL_CA_KEY_FILE)."""
    crl_file: Path
    """The broker's `crlfile`, an empty CRL of the device CA to begin with."""


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def empty_crl(ca: IssuedCA, now: datetime) -> bytes:
    """A CRL of `ca` revoking nothing: the broker's `crlfile` before any revocation."""
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path, *, host: str = "127.0.0.1", now: datetime | None = None) -> MtlsPki:
    """A server CA with a broker certificate for `host`, a device CA and its empty CRL."""
    now = now or datetime.now(UTC)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    not_before, not_after = now - timedelta(days=1), now + timedelta(days=3650)
    server_ca = make_ca("certfleet test broker CA", not_before=not_before, not_after=not_after)
    device_ca = make_ca(
        "certfleet test device identity CA", not_before=not_before, not_after=not_after
    )
    server = issue_server_cert(server_ca, hosts=[host], not_before=not_before, not_after=not_after)
    files = {
        "server_ca_file": ("server-ca.pem", server_ca.pem),
        "server_cert_file": ("server.pem", server.pem),
        "server_key_file": ("server-key.pem", server.key_pem),
        "device_ca_file": ("device-ca.pem", device_ca.pem),
        "device_ca_key_file": ("device-ca-key.pem", _private_pem(device_ca.key)),
        "crl_file": ("devices.crl.pem", empty_crl(device_ca, now)),
    }
    paths: dict[str, Path] = {}
    for field_name, (name, data) in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600 if name.endswith("-key.pem") else 0o644)
        paths[field_name] = path
    return MtlsPki(directory=directory, server_ca=server_ca, device_ca=device_ca, **paths)


def device_identity(
    ca: IssuedCA,
    device_id: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_after: datetime | None = None,
) -> IssuedCert:
    """A device's TLS client certificate (CN = device id, P-256) signed by `ca`."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCert(certificate=certificate, key=key)


def mtls_listener_config(pki: MtlsPki, port: int) -> str:
    """The device listener as deploy/mosquitto/mosquitto.conf has it, with these files
    (authentication and ACL are global there, as in `start_mtls_broker`)."""
    return (
        f"listener {port} 127.0.0.1\n"
        "protocol mqtt\n"
        "tls_version tlsv1.2\n"
        f"cafile {pki.device_ca_file}\n"
        f"certfile {pki.server_cert_file}\n"
        f"keyfile {pki.server_key_file}\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "use_username_as_clientid true\n"
        f"crlfile {pki.crl_file}\n"
    )


@dataclass
class MtlsBroker:
    """A running mosquitto: a plain listener for services, a mutual-TLS one for devices."""

    service: LocalService
    device_port: int
    pki: MtlsPki
    pid_file: Path
    argv: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def launch(self) -> None:
        """Start the broker process (again) with its config, on its ports."""
        directory = self.service.workdir
        self.pid_file.unlink(missing_ok=True)
        with (directory / "mosquitto.out").open("ab") as log:
            self.service.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for listening in (self.port, self.device_port):
                wait_for_port("127.0.0.1", listening, timeout=15, process=self.service.process)
            wait_until(self.pid_file.exists, timeout=5, what="mosquitto's pid file")
        except (ServiceError, AssertionError) as exc:
            self.service.stop()
            output = (directory / "mosquitto.out").read_text(errors="replace")
            raise ServiceError(
                f"mosquitto (mutual TLS): {exc}\n{output}\n{self.service.log_tail()}"
            ) from None

    def restart(self) -> int:
        """Stop and start again on the same config and ports: every client connects anew and
        the broker reads the CRL as it is now. Returns `log_mark()` from before the stop."""
        mark = self.log_mark()
        self.service.stop()
        self.launch()
        return mark

    def log_mark(self) -> int:
        """Where the broker log ends now; `usernames(since=mark)` reads only what follows."""
        return len(self.service.log_file.read_text(errors="replace"))

    @property
    def port(self) -> int:
        """The services' plain listener (CERTFLEET_MQTT_PORT)."""
        return self.service.port

    def settings_env(self, *, issuer: bool = True, reload: bool = False) -> dict[str, str]:
        """certfleet's settings for this broker: MQTT on the plain listener, the CRL file,
        and (`issuer`) the device CA as local issuer.

        `reload` also has certfleet SIGHUP the broker after each CRL. Mosquitto 2.0.11 can
        crash on a SIGHUP while devices keep offline sessions (docs/operations.md), so a
        test that revokes calls `restart()` after the CRL is written instead.
        """
        env = {
            "CERTFLEET_MQTT_HOST": "127.0.0.1",
            "CERTFLEET_MQTT_PORT": str(self.port),
            "CERTFLEET_CRL_FILE": str(self.pki.crl_file),
        }
        if reload:
            env["CERTFLEET_CRL_RELOAD_PID_FILE"] = str(self.pid_file)
        if issuer:
            env |= {
                "CERTFLEET_ISSUER": "local",
                "CERTFLEET_ISSUER_CA_CERT_FILE": str(self.pki.device_ca_file),
                "CERTFLEET_ISSUER_CA_KEY_FILE": str(self.pki.device_ca_key_file),
            }
        return env

    def reloads(self) -> int:
        """How many times mosquitto has reloaded its config (SIGHUP) so far."""
        return self.service.log_file.read_text(errors="replace").count("Reloading config")

    def wait_reloaded(self, after: int) -> None:
        """Wait until mosquitto has reloaded more than `after` times (`reloads()` before)."""
        wait_until(lambda: self.reloads() > after, timeout=10, what="mosquitto reloaded")

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its config, the CRL included; wait until it has."""
        before = self.reloads()
        os.kill(self.service.process.pid, signal.SIGHUP)
        self.wait_reloaded(before)

    def usernames(self, *, after_reload: int = 0, since: int = 0) -> list[tuple[str, str]]:
        """(client id, username) of every client that connected, from the broker log; with
        `after_reload=n`, only those that connected after the n-th reload (SIGHUP); with
        `since=mark` (`log_mark()`, `restart()`), only those logged after the mark.

        The username is the certificate's CN, the same for a device's old and new identity.
        What shows that a device uses its new certificate is a connection after the broker
        loaded a CRL that lists its old one (a `restart()`, or a reload).
        """
        log = self.service.log_file.read_text(errors="replace")[since:]
        return CONNECTED_LINE.findall("".join(log.split("Reloading config")[after_reload:]))

    def stop(self) -> None:
        """Stop the broker."""
        self.service.stop()


def mosquitto_binary() -> str:
    """The mosquitto command (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(found, os.X_OK):
        raise ServiceError("mosquitto is not installed (apt-get install -y mosquitto)")
    return found


def start_mtls_broker(
    directory: Path,
    pki: MtlsPki,
    *,
    acl_file: Path = SHIPPED_ACL,
    persistent: bool = False,
    wrapper: Path | None = None,
    crl_check_seconds: int = 1,
) -> MtlsBroker:
    """Start mosquitto with both listeners on free loopback ports.

    Authentication and ACL are global, as in the shipped config: devices are known by
    their certificate, certfleet's services connect anonymously on the plain listener,
    loopback only, where the ACL's anonymous section (added before `acl_file`'s own
    lines) lets them read and write every topic. `wrapper`: run the broker under this
    script (deploy/mosquitto/run-with-crl-reload.sh), which is given the config and the
    CRL file, looks every `crl_check_seconds` and restarts at once after a change.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port, device_port = free_port(), free_port()
    pid_file = directory / "mosquitto.pid"
    config = directory / "mosquitto.conf"
    # A log file of its own: mosquitto flushes it line by line (its stdout, redirected,
    # may hold a line back), and the tests read it to see reloads and usernames.
    log_file = directory / "mosquitto.log"
    services_acl = directory / "acl"
    services_acl.write_text(
        "# anonymous clients (certfleet's services on the loopback listener): everything\n"
        "topic readwrite #\n\n" + acl_file.read_text()
    )
    # Started as root, mosquitto would drop to its own user and lose access to the
    # test's files; naming the current user keeps it (no effect otherwise).
    config.write_text(
        f"user {getpass.getuser()}\n"
        f"pid_file {pid_file}\n"
        f"persistence {'true' if persistent else 'false'}\npersistence_location {directory}/\n"
        "max_queued_messages 100000\nmax_inflight_messages 100\n"
        f"log_dest file {log_file}\nlog_type error\nlog_type warning\nlog_type notice\n"
        "log_type information\nconnection_messages true\n"
        # certfleet's services connect anonymously (the shipped deployment uses a password;
        # tests/integration/test_broker_acl.py covers that); devices by certificate
        f"allow_anonymous true\nacl_file {services_acl}\n"
        f"listener {port} 127.0.0.1\n" + mtls_listener_config(pki, device_port)
    )
    argv, env = [mosquitto_binary(), "-c", str(config)], dict(os.environ)
    if wrapper is not None:
        argv = ["sh", str(wrapper)]
        env |= {
            "MOSQUITTO_CONF": str(config),
            "CRL_FILE": str(pki.crl_file),
            "CRL_CHECK_SECONDS": str(crl_check_seconds),
            "CRL_SETTLE_SECONDS": "0",
            "CRL_RESTART_MIN_SECONDS": "0",
            "PATH": f"{Path(mosquitto_binary()).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    broker = MtlsBroker(
        service=LocalService("mosquitto", "127.0.0.1", port, None, directory, log_file),  # type: ignore[arg-type]
        device_port=device_port,
        pki=pki,
        pid_file=pid_file,
        argv=argv,
        env=env,
    )
    broker.launch()
    return broker


def _connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keepalive 10 s."""
    encoded = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(encoded).to_bytes(2, "big") + encoded
    return bytes([0x10, len(body)]) + body


def try_connect(
    broker: MtlsBroker,
    cert_pem: bytes | None,
    key_pem: bytes | None,
    *,
    client_id: str = "probe",
    timeout: float = 5.0,
) -> str:
    """Connect to the device listener presenting this certificate (TLS 1.2, as the modem).

    Returns "accepted" (CONNACK 0), "connack <code>", "closed" (no CONNACK), "unreachable"
    (no connection), or the TLS alert the broker sent, e.g. "certificate_revoked",
    "unknown_ca", "certificate_expired".
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(broker.pki.server_ca_file)
    if cert_pem is not None and key_pem is not None:
        identity = broker.pki.directory / f".client-{os.getpid()}-{id(cert_pem)}.pem"
        identity.write_bytes(cert_pem + key_pem)
        identity.chmod(0o600)
        try:
            context.load_cert_chain(identity)
        finally:
            identity.unlink()
    try:
        with (
            socket.create_connection(("127.0.0.1", broker.device_port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(_connect_packet(client_id))
            connack = tls.recv(4)
    except ssl.SSLError as exc:
        return _alert_name(exc)
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except OSError:  # refused or timed out: nothing listening (e.g. while it restarts)
        return "unreachable"
    if len(connack) < 4 or connack[0] != 0x20:
        return "closed"
    return ACCEPTED if connack[3] == 0 else f"connack {connack[3]}"


def _alert_name(exc: ssl.SSLError) -> str:
    """`SSLV3_ALERT_CERTIFICATE_REVOKED` -> `certificate_revoked`."""
    reason = (exc.reason or str(exc)).lower()
    match = re.search(r"alert_(\w+)", reason)
    return match[1] if match else reason
