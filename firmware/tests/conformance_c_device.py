"""`certfleet conformance` against a C device: `make -C firmware conformance`.

Real Mosquitto and Redis on free loopback ports, two real TLS probe servers (one under
the suite's good CA, one under a stranger's), a fresh signing key, and one
`certfleet-device` provisioned with it, with a CA in sec_tag 42 and a factory identity
(a client certificate of the device CA and its key) in sec_tag 44. A third TLS server
requires client certificates of the device CA: with it and that CA the suite also
rotates the device's identity (keygen, the certificate it issues for the CSR staged and
probed with mutual TLS, commit) and rolls it back. The suite drives the device through
every step of the contract; what must hold: it exits 0 and every step passed.
Usage: conformance_c_device.py BINARY WORKDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.protocol.cose import key_id
from simulator.pki import IssuedCA, issue_server_cert, make_ca
from simulator.services import start_mosquitto, start_redis
from tests.procs import certfleet, wait_until
from tests.tlsserver import tls_server

DEVICE = "cdev-conformance"
SUITE_TIMEOUT_S = 900
IDENTITY_TAG = 44


def write_identity(ca: IssuedCA, workdir: Path, since: datetime, until: datetime) -> str:
    """The device's factory identity (CN=<device id>, of `ca`) and the CA's key, as files;
    returns the --identity option."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(since)
        .not_valid_after(until)
        .sign(ca.key, hashes.SHA256())
    )
    private = (Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (workdir / "identity.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    (workdir / "identity.key").write_bytes(key.private_bytes(*private))
    (workdir / "device-ca-key.pem").write_bytes(ca.key.private_bytes(*private))
    return f"{IDENTITY_TAG}={workdir / 'identity.pem'},{workdir / 'identity.key'}"


def signer_option(key_file: Path) -> str:
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    public = key.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SystemExit(f"{key_file} is not an EC key")
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return f"{key_id(public).hex()}:{point.hex()}"


def main(binary: str, workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    now = datetime.now(UTC)
    since, until = now - timedelta(days=1), now + timedelta(days=60)
    good = make_ca("Conformance good CA", not_before=since, not_after=until)
    stranger = make_ca("Conformance stranger CA", not_before=since, not_after=until)
    device_ca = make_ca("Conformance device CA", not_before=since, not_after=until)
    good_server = issue_server_cert(good, not_before=since, not_after=until)
    bad_server = issue_server_cert(stranger, not_before=since, not_after=until)
    (workdir / "device-ca.pem").write_bytes(device_ca.pem)
    (workdir / "good-ca.pem").write_bytes(good.pem)
    identity = write_identity(device_ca, workdir, since, until)
    identity_server = issue_server_cert(device_ca, not_before=since, not_after=until)
    broker = start_mosquitto(workdir / "mosquitto")
    redis = start_redis(workdir / "redis")
    env = {
        **os.environ,
        "CERTFLEET_MQTT_HOST": broker.host,
        "CERTFLEET_MQTT_PORT": str(broker.port),
        "CERTFLEET_REDIS_URL": f"redis://{redis.host}:{redis.port}/0",
        "CERTFLEET_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
    }
    device = suite = None
    try:
        subprocess.run(certfleet("keys", "generate"), env=env, check=True, capture_output=True)  # noqa: S603
        with (
            tls_server(good_server.pem, good_server.key_pem) as (_, good_port),
            tls_server(bad_server.pem, bad_server.key_pem) as (_, bad_port),
            tls_server(identity_server.pem, identity_server.key_pem, client_ca=device_ca.pem) as (
                _,
                identity_port,
            ),
            (workdir / "suite.json").open("wb") as out,
            (workdir / "suite.err").open("wb") as err,
        ):
            argv = certfleet("conformance", DEVICE, "--probe-good", f"127.0.0.1:{good_port}")
            argv += [
                "--probe-bad",
                f"127.0.0.1:{bad_port}",
                "--ca-good",
                str(workdir / "good-ca.pem"),
            ]
            argv += ["--step-timeout", "20", "--state-wait", "30", "--fallback-after", "2"]
            argv += ["--undo-window", "3", "--json"]
            argv += ["--identity-ca", str(workdir / "device-ca.pem")]
            argv += ["--identity-ca-key", str(workdir / "device-ca-key.pem")]
            argv += ["--probe-identity", f"127.0.0.1:{identity_port}"]
            suite = subprocess.Popen(argv, env=env, stdout=out, stderr=err)  # noqa: S603
            wait_until(
                lambda: (
                    "waiting up to" in (workdir / "suite.err").read_text()
                    or suite.poll() is not None
                ),
                timeout=60,
                what="the suite listening",
            )
            device_argv = [binary, "--dir", str(workdir / "device"), "--device-id", DEVICE]
            device_argv += [
                "--port",
                str(broker.port),
                "--probe-timeout-ms",
                "5000",
                "--active",
                "42",
            ]
            device_argv += ["--signer", signer_option(workdir / "signing-key.pem")]
            device_argv += ["--ca", f"42={workdir / 'device-ca.pem'}", "--identity", identity]
            with (workdir / "device.log").open("wb") as log:
                device = subprocess.Popen(device_argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
            code = suite.wait(timeout=SUITE_TIMEOUT_S)
    finally:
        for proc in (suite, device):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        broker.stop()
        redis.stop()
    document = json.loads((workdir / "suite.json").read_text() or "{}")
    failed = [step for step in document.get("steps", []) if not step["passed"]]
    for step in failed:
        print(
            f"FAIL {step['name']}: expected {step['expected']}, got {step['got']}: {step['detail']}"
        )
    if code != 0 or failed or not document.get("passed"):
        print((workdir / "suite.err").read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"conformance: exit {code}, {len(failed)} failed steps")
    print(f"conformance: {DEVICE} (C) passed all {len(document['steps'])} steps")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
