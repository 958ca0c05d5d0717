"""certfleet-device on a real mosquitto with a real TLS endpoint, plain and TLS brokers.

`make -C firmware test` runs it with the project's .venv (ctest `device_smoke`):
`device_smoke.py BINARY WORKDIR`. Bundles are signed with the project's encoder and
the fixture signer of make_bundles.py; the staged CA is fresh and `openssl s_server`
serves a chain under it on a free loopback port, so the device's probe passes for real.
What must hold: every report parses as the listener's `ReportMessage`, in the order of
docs/protocol.md §5; the stage's state (back online after writing) comes before `staged`;
a commit's state (active list 42, 43) arrives before `committed`;
after a SIGKILL the restarted device resumes from its record and states the same list;
the rollback returns it to 42 alone. Over a TLS broker, a commit whose list cannot
validate the broker falls back (`broker_unreachable`) and one that can stands; after a
broker restart the device connects again by itself and states its key store. Over a
broker that requires client certificates (mutual TLS, issue 14), the device presents its
factory identity, then rotates it: keygen (the `csr` report's CSR is issued by the test's
identity CA), the certificate's stage probed by a mutual-TLS handshake with the broker
itself, the commit proven by reconnecting with the new identity, the old one retired;
the new private key is in no message and no log line.
"""

from __future__ import annotations

import base64
import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import make_bundles as mb
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from orchestrator.domain.credentials import CredentialType
from orchestrator.protocol.bundle import Credential, Probe
from orchestrator.protocol.keygen import parse_keygen_output
from orchestrator.protocol.report import parse_report
from orchestrator.protocol.state import parse_state
from simulator.pki import IssuedCA, issue_server_cert, make_ca
from simulator.services import free_port, start_mosquitto

TIMEOUT_S = 20.0


class Watcher:
    """Every state and report the device publishes, in arrival order."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.seen: list[str] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"certfleet/{mb.DEVICE}/state", qos=1)
        self.client.subscribe(f"certfleet/{mb.DEVICE}/report", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        kind = message.topic.rsplit("/", 1)[1]
        parse = parse_report if kind == "report" else parse_state
        parse(bytes(message.payload), topic_device_id=mb.DEVICE)  # the listener's own validation
        self.messages.put((kind, json.loads(message.payload)))

    def send(self, bundle: bytes) -> None:
        self.client.publish(f"certfleet/{mb.DEVICE}/bundle", bundle, qos=1).wait_for_publish(5)

    def expect(self, *steps: str) -> list[dict[str, Any]]:
        """Wait for these messages in order: `state:<active list>`, or a report's phase (with
        `/reason` unless it is ok); returns their bodies."""
        bodies = []
        for step in steps:
            kind, body = self.messages.get(timeout=TIMEOUT_S)
            phase = body.get("phase")
            reason = "" if body.get("reason") in (None, "ok") else f"/{body['reason']}"
            got = f"state:{body['active_tags']}" if kind == "state" else f"{phase}{reason}"
            if got != step:
                raise SystemExit(f"expected {step}, got {got}: {body}")
            self.seen.append(json.dumps(body))
            bodies.append(body)
        return bodies


def start_device(
    binary: str, workdir: Path, broker: int, factory_ca: Path, *extra: str
) -> subprocess.Popen[bytes]:
    signer = f"{mb.KID.hex()}:{mb.point(mb.KEY).hex()}"
    argv = [binary, "--dir", str(workdir / "device"), "--device-id", mb.DEVICE]
    argv += ["--port", str(broker), "--clock", str(mb.NOW), "--probe-timeout-ms", "5000"]
    argv += ["--signer", signer, "--ca", f"42={factory_ca}", "--active", "42", *extra]
    log = (workdir / "device.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 -- our binary


def tls_endpoint(workdir: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """openssl s_server for localhost under a fresh CA; returns it, its port, the CA PEM."""
    start, end = datetime(2026, 1, 1, tzinfo=UTC), mb.VALID_TO
    ca = make_ca("smoke staged CA", not_before=start, not_after=end)
    server = issue_server_cert(ca, hosts=("localhost",), not_before=start, not_after=end)
    (workdir / "server.pem").write_bytes(server.pem)
    (workdir / "server.key").write_bytes(server.key_pem)
    port = free_port("127.0.0.1")
    argv = ["openssl", "s_server", "-quiet", "-tls1_2", "-accept", f"127.0.0.1:{port}"]
    argv += ["-cert", str(workdir / "server.pem"), "-key", str(workdir / "server.key")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    # a probe sent before s_server listens is refused (handshake_error) on a loaded machine
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("openssl s_server did not start listening") from None
            time.sleep(0.05)
    return process, port, ca.pem.decode()


def plain_broker(binary: str, workdir: Path) -> None:
    """Stage, commit, SIGKILL and restart, rollback, over a plain MQTT connection."""
    factory_ca = workdir / "factory-ca.pem"
    factory_ca.write_text(mb.FACTORY_CA)
    broker = start_mosquitto(workdir / "mosquitto")
    tls, tls_port, staged_ca = tls_endpoint(workdir)
    device = None
    try:
        watcher = Watcher(broker.port)
        device = start_device(binary, workdir, broker.port, factory_ca)
        watcher.expect("state:[42]")
        stage = mb.bundle(
            "stage",
            credentials=(Credential(CredentialType.CA_CHAIN, staged_ca),),
            probe=Probe(host="localhost", port=tls_port, tags=(43,)),
        )
        watcher.send(mb.from_bundle(stage))
        watcher.expect("received", "state:[42]", "staged", "health_ok")
        watcher.send(mb.from_bundle(mb.bundle("commit", seq=stage.seq + 1)))
        watcher.expect("received", "state:[42, 43]", "committed")
        device.send_signal(signal.SIGKILL)
        device.wait()
        device = start_device(binary, workdir, broker.port, factory_ca)
        watcher.expect("state:[42, 43]")
        watcher.send(mb.from_bundle(mb.bundle("rollback", seq=stage.seq + 2)))
        watcher.expect("received", "state:[42]", "rolled_back")
        watcher.send(mb.from_bundle(mb.bundle("rollback", seq=stage.seq + 3)))
        watcher.expect("rejected/nothing_to_undo")
        # a broker restart (an MQTT 5 broker says DISCONNECT 0x8B as it goes): the device
        # connects again by itself, and states its key store after the new CONNECT
        port = broker.port
        broker.stop()
        broker = start_mosquitto(workdir / "mosquitto", port=port)
        watcher = Watcher(broker.port)
        watcher.expect("state:[42]")
    except (queue.Empty, SystemExit):
        print((workdir / "device.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if device is not None:
            device.terminate()
            device.wait(timeout=10)
        tls.terminate()
        tls.wait(timeout=10)
        broker.stop()


def tls_broker(binary: str, workdir: Path) -> None:
    """Over a TLS broker under the factory CA: a commit whose list drops that CA cannot
    reach the broker, so the device falls back (broker_unreachable) before reporting; a
    commit that keeps it stands once the broker validated with the new list; a retire
    of the factory CA's tag falls back the same way and deletes nothing."""
    start, end = datetime(2026, 1, 1, tzinfo=UTC), mb.VALID_TO
    factory = make_ca("smoke factory CA", not_before=start, not_after=end)
    broker_cert = issue_server_cert(factory, not_before=start, not_after=end)
    for name, data in (
        ("factory-ca.pem", factory.pem),
        ("broker.pem", broker_cert.pem),
        ("broker.key", broker_cert.key_pem),
    ):
        (workdir / name).write_bytes(data)
    tls_port = free_port("127.0.0.1")
    listener = f"listener {tls_port} 127.0.0.1\ncafile {workdir / 'factory-ca.pem'}\n"
    listener += f"certfile {workdir / 'broker.pem'}\nkeyfile {workdir / 'broker.key'}\n"
    broker = start_mosquitto(workdir / "mosquitto", extra_config=listener)
    endpoint, endpoint_port, staged_ca = tls_endpoint(workdir)
    device = None
    try:
        watcher = Watcher(broker.port)
        device = start_device(
            binary, workdir, tls_port, workdir / "factory-ca.pem", "--tls", "--host", "localhost"
        )
        watcher.expect("state:[42]")
        stage = mb.bundle(
            "stage",
            credentials=(Credential(CredentialType.CA_CHAIN, staged_ca),),
            probe=Probe(host="localhost", port=endpoint_port, tags=(43,)),
        )
        watcher.send(mb.from_bundle(stage))
        watcher.expect("received", "state:[42]", "staged", "health_ok")
        watcher.send(mb.from_bundle(mb.bundle("commit", seq=stage.seq + 1, active=(43,))))
        watcher.expect("received", "state:[42]", "fallback/broker_unreachable")
        again = replace(stage, seq=stage.seq + 2)
        watcher.send(mb.from_bundle(again))
        watcher.expect("received", "state:[42]", "staged", "health_ok")
        watcher.send(mb.from_bundle(mb.bundle("commit", seq=stage.seq + 3)))
        watcher.expect("received", "state:[42, 43]", "committed")
        retire = mb.bundle("retire", seq=stage.seq + 4, tags=(42,), active=(43,))
        watcher.send(mb.from_bundle(retire))
        watcher.expect("received", "state:[42, 43]", "fallback/broker_unreachable")
    except (queue.Empty, SystemExit):
        print((workdir / "device.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if device is not None:
            device.terminate()
            device.wait(timeout=10)
        endpoint.terminate()
        endpoint.wait(timeout=10)
        broker.stop()


def issue_from_csr(ca: IssuedCA, csr_field: str) -> str:
    """What an issuer does with the device's CSR: a client certificate for its key and name."""
    csr = x509.load_der_x509_csr(parse_keygen_output(csr_field).csr_der)
    if not csr.is_signature_valid:
        raise SystemExit("the device's CSR does not verify")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(mb.VALID_FROM)
        .not_valid_after(mb.VALID_TO)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.PEM).decode()


def mtls_pki(workdir: Path) -> tuple[IssuedCA, IssuedCA]:
    """Write the broker's and the factory identity's files; the identity CA and a stranger."""
    start, end = datetime(2026, 1, 1, tzinfo=UTC), mb.VALID_TO
    factory = make_ca("smoke factory CA", not_before=start, not_after=end)
    identities = make_ca("smoke identity CA", not_before=start, not_after=end)
    broker_cert = issue_server_cert(factory, not_before=start, not_after=end)
    old = mb.client_cert(identities, mb.OLD_IDENTITY_KEY)
    for name, data in (
        ("factory-ca.pem", factory.pem),
        ("identity-ca.pem", identities.pem),
        ("broker.pem", broker_cert.pem),
        ("broker.key", broker_cert.key_pem),
        ("old.pem", old.encode()),
        ("old.key", mb.key_pem(mb.OLD_IDENTITY_KEY).encode()),
    ):
        (workdir / name).write_bytes(data)
    return identities, make_ca("smoke stranger CA", not_before=start, not_after=end)


def rotate(watcher: Watcher, identities: IssuedCA, stranger: IssuedCA, port: int) -> None:
    """A refused certificate (a CA the broker does not trust), then a rotation that stands."""
    probe = Probe(host="localhost", port=port, tags=(42,))
    first = mb.bundle("keygen")
    watcher.send(mb.from_bundle(first))
    *_, csr = watcher.expect("received", "state:[42]", "csr")
    cert = issue_from_csr(stranger, csr["csr"])
    watcher.send(mb.from_bundle(mb.identity_stage(first.seq + 1, cert=cert, probe=probe)))
    watcher.expect("received", "state:[42]", "staged", "health_failed/identity_refused")
    keygen = mb.bundle("keygen", seq=first.seq + 2)
    watcher.send(mb.from_bundle(keygen))  # (the state after the refused stage's delete first)
    *_, csr = watcher.expect("state:[42]", "received", "state:[42]", "csr")
    cert = issue_from_csr(identities, csr["csr"])
    watcher.send(mb.from_bundle(mb.identity_stage(keygen.seq + 1, cert=cert, probe=probe)))
    watcher.expect("received", "state:[42]", "staged", "health_ok")
    watcher.send(mb.from_bundle(mb.bundle("commit", seq=keygen.seq + 2, tag=44)))
    _, state, _ = watcher.expect("received", "state:[42]", "committed")
    if state.get("identity_tag") != 44:
        raise SystemExit(f"the committed identity is not stated: {state}")
    retire = mb.bundle("retire", seq=keygen.seq + 3, tags=(45,), active=(42,))
    watcher.send(mb.from_bundle(retire))
    _, state, _ = watcher.expect("received", "state:[42]", "retired")
    if any(item["sec_tag"] == 45 for item in state["credentials"]):
        raise SystemExit(f"the old identity was not deleted: {state}")


def mtls_broker(binary: str, workdir: Path) -> None:
    """A rotation of the device's identity on a broker that requires client certificates."""
    identities, stranger = mtls_pki(workdir)
    mtls_port = free_port("127.0.0.1")
    listener = f"listener {mtls_port} 127.0.0.1\ncafile {workdir / 'identity-ca.pem'}\n"
    listener += f"certfile {workdir / 'broker.pem'}\nkeyfile {workdir / 'broker.key'}\n"
    listener += "require_certificate true\nuse_identity_as_username true\n"
    broker = start_mosquitto(workdir / "mosquitto", extra_config=listener)
    identity = f"45={workdir / 'old.pem'},{workdir / 'old.key'}"
    device = None
    try:
        watcher = Watcher(broker.port)
        device = start_device(
            binary, workdir, mtls_port, workdir / "factory-ca.pem", "--tls", "--host",
            "localhost", "--identity", identity,
        )  # fmt: skip
        (state,) = watcher.expect("state:[42]")
        if state.get("identity_tag") != 45:
            raise SystemExit(f"the factory identity is not stated: {state}")
        rotate(watcher, identities, stranger, mtls_port)
        key_pem = (workdir / "device" / "keystore" / "44-2").read_text()
        secret = "".join(key_pem.strip().splitlines()[1:-1])
        recorded = "".join(watcher.seen) + (workdir / "device.log").read_text(errors="replace")
        if secret[:40] in recorded or secret[:40] in base64.b64encode(recorded.encode()).decode():
            raise SystemExit("the new private key appears in a message or the log")
    except (queue.Empty, SystemExit):
        print((workdir / "device.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        if device is not None:
            device.terminate()
            device.wait(timeout=10)
        broker.stop()


def main(binary: str, workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)  # fresh devices, brokers and endpoints
    for scenario in (plain_broker, tls_broker, mtls_broker):
        (workdir / scenario.__name__).mkdir(parents=True)
        scenario(binary, workdir / scenario.__name__)
    print("device_smoke: plain broker (stage, commit, SIGKILL restart, rollback) and TLS broker")
    print("  (a commit the broker refuses falls back, one it accepts stands) and a mutual-TLS")
    print(
        "  broker (keygen, certificate stage, identity commit, old identity retired): as expected"
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
