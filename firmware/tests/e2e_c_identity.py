"""C devices rotate their identities through the whole certfleet stack: `make -C firmware
e2e-identity`.

Real Redis; a Mosquitto with a plain listener for certfleet's services and the shipped
mutual-TLS device listener (require_certificate, use_identity_as_username, the shipped
ACL, `crlfile`: tests/mtls.py); certfleet's listener, Celery worker and beat with the
device CA as local issuer and the CRL file (the broker reads it when restarted), and the C
devices' attestation keys (derived from the fleet seed and each id, as `certfleet-device
--fleet-seed` derives them). One `certfleet-device --devices N --tls` process: each
device leaves the factory with a client certificate of the device CA (CN = its id) and
its key in sec_tag 44, and connects presenting it.

What must hold: an identity.rotate (44 -> 45) of every device completes; certfleet's
inventory names identity tag 45 for each, the old certificates' serials are in the CRL
the broker reads, a client presenting an old certificate is refused by the broker while
every device is connected again after that CRL took effect (so with its new
certificate), and no device's new private key is in any log of the run. Then, on a
fresh stack whose issuer is a CA the broker does not trust, a rotation's canary is
`identity_refused` by its mutual-TLS probe, the rollout rolls back, and every device
keeps its identity (44) and connects with it after a broker restart.

Usage: e2e_c_identity.py BINARY WORKDIR [C_DEVICES] (default 20).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.protocol.cose import key_id
from simulator.attestation import attestation_keys_json
from simulator.pki import IssuedCA, IssuedCert, make_ca
from simulator.services import start_redis
from tests.mtls import (
    ACCEPTED,
    MtlsBroker,
    device_identity,
    make_pki,
    start_mtls_broker,
    try_connect,
)
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until

FLEET_SEED = "c-identity-e2e"
OLD_TAG, NEW_TAG, CA_TAG = 44, 45, 42


def signer_option(key_file: Path) -> str:
    """`--signer` for certfleet's signing key: what `certfleet keys export-public` gives."""
    public = serialization.load_pem_private_key(key_file.read_bytes(), None).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SystemExit(f"{key_file} is not an EC key")
    point = public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return f"{key_id(public).hex()}:{point.hex()}"


def device_ids(count: int) -> list[str]:
    return [f"cdev-{n:05d}" for n in range(count)]


def run_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(  # noqa: S603 -- the project's own CLI
        certfleet(*args, "--json"), env=env, capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"certfleet {' '.join(args)}: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def factory_identities(broker: MtlsBroker, ids: list[str], folder: Path) -> dict[str, IssuedCert]:
    """Each device's factory identity as `--identity 44={id}.pem,{id}.key` reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for device in ids:
        identity = device_identity(broker.pki.device_ca, device)
        (folder / f"{device}.pem").write_bytes(identity.pem)
        (folder / f"{device}.key").write_bytes(identity.key_pem)
        made[device] = identity
    return made


def start_c_fleet(binary: str, base: Path, broker: MtlsBroker, count: int, logs: Path) -> Proc:
    ids_dir = base / "identities"
    argv = [binary, "--dir", str(base / "c-fleet"), "--devices", str(count), "--tls"]
    argv += ["--host", "127.0.0.1", "--port", str(broker.device_port), "--active", str(CA_TAG)]
    argv += [
        "--ca",
        f"{CA_TAG}={broker.pki.server_ca_file}",
        "--signer",
        signer_option(base / "signing-key.pem"),
    ]
    argv += ["--identity", f"{OLD_TAG}={ids_dir}/{{id}}.pem,{ids_dir}/{{id}}.key"]
    argv += ["--fleet-seed", FLEET_SEED, "--probe-timeout-ms", "5000"]
    return start("c-fleet", argv, env=dict(os.environ), log_dir=logs)


def unrevoked(broker: MtlsBroker, old: dict[str, IssuedCert]) -> list[str]:
    """The devices whose old certificate the CRL file does not list yet."""
    crl = x509.load_pem_x509_crl(broker.pki.crl_file.read_bytes())
    revoked = {entry.serial_number for entry in crl}
    return [d for d, cert in old.items() if cert.certificate.serial_number not in revoked]


def check_rotated(client: redis.Redis, broker: MtlsBroker, old: dict[str, IssuedCert]) -> None:
    """Inventory on 45, an old certificate refused by the broker."""
    for device in old:
        tag = RedisInventory(client).identity_tags_of([device])[device]
        if tag != NEW_TAG:
            raise SystemExit(f"{device}: inventory identity tag {tag}, not {NEW_TAG}")
    first = next(iter(old))
    refused = try_connect(broker, old[first].pem, old[first].key_pem, client_id=first)
    if refused == ACCEPTED:
        raise SystemExit("the broker accepted an old, revoked certificate")
    print(f"  the broker refuses {first}'s old certificate: {refused}")


def check_keys_unseen(base: Path, logs: Path, devices: int) -> None:
    """No new private key (the 45-2 items) in any log of the run."""
    recorded = "".join(path.read_text(errors="replace") for path in logs.glob("*"))
    recorded += (base / "broker" / "mosquitto.log").read_text(errors="replace")
    keys = list((base / "c-fleet").glob(f"*/keystore/{NEW_TAG}-2"))
    if len(keys) != devices:
        raise SystemExit(f"{len(keys)} devices hold a key in sec_tag {NEW_TAG}, not {devices}")
    for key_file in keys:
        body = "".join(key_file.read_text().strip().splitlines()[1:-1])
        if body[:48] in recorded:
            raise SystemExit(f"a private key ({key_file}) appears in a log")


@dataclass
class Run:
    """A running stack and its C fleet."""

    env: dict[str, str]
    client: redis.Redis
    broker: MtlsBroker
    ids: list[str]
    old: dict[str, IssuedCert]
    base: Path
    logs: Path

    def rotate(self, waves: str) -> dict[str, Any]:
        """An identity.rotate of every device; its status once it ended."""
        selection = self.base / "devices.txt"
        selection.write_text("\n".join(self.ids) + "\n")
        created = run_json(
            self.env, "rollout", "create", "--kind", "identity.rotate",
            "--probe", f"127.0.0.1:{self.broker.device_port}", "--select", f"file:{selection}",
            "--waves", waves, "--bake", "2", "--device-timeout", "60",
        )  # fmt: skip
        rollout_id = str(created["id"])

        def final() -> dict[str, Any] | None:
            status = run_json(self.env, "rollout", "status", rollout_id)
            ended = ("completed", "completed_with_timeouts", "rolled_back", "aborted")
            return status if status["state"] in ended else None

        status: dict[str, Any] = wait_until(final, timeout=240, interval=1.0, what="the rollout")
        status["log"] = run_json(self.env, "rollout", "log", rollout_id)
        return status

    def all_back_after_restart(self) -> None:
        """Restart the broker: every device must connect anew (under the CRL as it is)."""
        mark = self.broker.restart()
        wait_until(
            lambda: {c for c, _ in self.broker.usernames(since=mark)} >= set(self.ids),
            timeout=90,
            what="every C device connected again after the restart",
        )


@contextlib.contextmanager
def running(binary: str, base: Path, count: int, *, issuer_ca: IssuedCA | None) -> Iterator[Run]:
    """The stack and `count` C devices; `issuer_ca`: certfleet issues with this CA instead
    of the device CA the broker trusts (CRLs are still the device CA's)."""
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    logs = base / "logs"
    logs.mkdir()
    redis_service = start_redis(base / "redis")
    broker = start_mtls_broker(base / "broker", make_pki(base / "pki"))
    ids = device_ids(count)
    attestation = base / "attestation-keys.json"
    attestation.write_text(json.dumps(attestation_keys_json(ids, FLEET_SEED)))
    generate_key_file(base / "signing-key.pem")
    # the broker reads a new CRL when restarted, not on SIGHUP: Mosquitto 2.0.11 may crash
    # on a SIGHUP while devices with persistent sessions reconnect
    settings = {k: v for k, v in broker.settings_env(issuer=True).items() if "RELOAD" not in k}
    env = {
        **settings,
        "CERTFLEET_REDIS_URL": f"redis://{redis_service.host}:{redis_service.port}/0",
        "CERTFLEET_SIGNING_KEY_FILE": str(base / "signing-key.pem"),
        "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
        "CERTFLEET_LOG_FORMAT": "json",
        "CERTFLEET_ATTESTATION_KEYS_FILE": str(attestation),
        "CERTFLEET_IDENTITY_TAGS": f"{OLD_TAG},{NEW_TAG}",
        "CERTFLEET_IDENTITY_PROBE": f"127.0.0.1:{broker.device_port}",
    }
    if issuer_ca is not None:
        (base / "issuer-ca.pem").write_bytes(issuer_ca.pem)
        key = issuer_ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (base / "issuer-ca-key.pem").write_bytes(key)
        (base / "issuer-ca-key.pem").chmod(0o600)
        env |= {
            "CERTFLEET_ISSUER_CA_CERT_FILE": str(base / "issuer-ca.pem"),
            "CERTFLEET_ISSUER_CA_KEY_FILE": str(base / "issuer-ca-key.pem"),
            "CERTFLEET_CRL_CA_CERT_FILE": str(broker.pki.device_ca_file),
            "CERTFLEET_CRL_CA_KEY_FILE": str(broker.pki.device_ca_key_file),
        }
    old = factory_identities(broker, ids, base / "identities")
    client = redis.Redis(host=redis_service.host, port=redis_service.port, decode_responses=True)
    procs: list[Proc] = []
    try:
        procs.append(start("listener", certfleet("listener"), env=env, log_dir=logs))
        wait_until(lambda: "listener_subscribed" in procs[0].log(), timeout=30, what="listener")
        procs.append(celery_worker(logs, env))
        procs.append(
            start("beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=logs)
        )
        procs.append(start_c_fleet(binary, base, broker, count, logs))
        wait_until(
            lambda: all(RedisInventory(client).identity_tags_of(ids).values()),
            timeout=90,
            what="every C device stated its identity",
        )
        yield Run(env, client, broker, ids, old, base, logs)
    except (SystemExit, TimeoutError, AssertionError):
        for proc in procs:
            print(f"--- {proc.name}\n{proc.log()[-2000:]}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()
        broker.stop()
        redis_service.stop()


def rotation(binary: str, base: Path, count: int) -> None:
    """Every device rotates; the old certificates are revoked and refused."""
    with running(binary, base, count, issuer_ca=None) as run:
        status = run.rotate("10%,100%")
        if status["state"] != "completed":
            raise SystemExit(f"the rotation ended {status['state']}: {status}")
        wait_until(
            lambda: not unrevoked(run.broker, run.old),
            timeout=60,
            what="every old certificate in the CRL",
        )
        # under the CRL that revokes its old certificate, a device that gets in presents
        # its new one
        run.all_back_after_restart()
        check_rotated(run.client, run.broker, run.old)
        check_keys_unseen(base, run.logs, count)
    print(f"e2e_c_identity: {count} C devices rotated 44 -> 45 through certfleet over mutual TLS;")
    print("  inventory on 45, old certificates in the CRL and refused, every device back after a")
    print("  broker restart (so with its new certificate), the new keys in no log")


def refused(binary: str, base: Path, count: int) -> None:
    """certfleet issues from a CA the broker does not trust: the canary's mutual-TLS probe
    is identity_refused, the rollout aborts and rolls back, every device keeps its identity."""
    now = datetime.now(UTC)
    stranger = make_ca(
        "stranger issuer", not_before=now - timedelta(days=1), not_after=now + timedelta(days=30)
    )
    with running(binary, base, count, issuer_ca=stranger) as run:
        status = run.rotate("1,100%")
        if status["state"] != "rolled_back" or "identity_refused" not in json.dumps(status["log"]):
            raise SystemExit(f"the refused rotation ended {status['state']}: {status}")
        for device in run.ids:
            tag = RedisInventory(run.client).identity_tags_of([device])[device]
            if tag != OLD_TAG:
                raise SystemExit(f"{device}: identity {tag} after the rollback, not {OLD_TAG}")
            if any((base / "c-fleet" / device / "keystore").glob(f"{NEW_TAG}-*")):
                raise SystemExit(f"{device}: sec_tag {NEW_TAG} kept an item after the rollback")
        run.all_back_after_restart()
    print("  and a rotation to a certificate the broker refuses: the canary's probe is")
    print(f"  identity_refused, the rollout rolls back, all {count} devices keep identity 44")


def main(binary: str, base: Path, count: int) -> None:
    rotation(binary, base / "rotation", count)
    refused(binary, base / "refused", max(2, count // 4))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20)
