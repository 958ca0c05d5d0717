"""The whole certfleet stack for identity rotations, on the parts a deployment runs.

Redis; a Mosquitto with a plain listener for certfleet's services and the shipped
mutual-TLS device listener (require_certificate, use_identity_as_username, the shipped
ACL, `crlfile`; `tests/mtls.py`); a real `cfssl serve` as the issuer, which also signed
the devices' factory certificates (valid 10 days, so its database can revoke them);
certfleet's listener, Celery worker and beat; fleets of simulated devices
(`tests/e2e/identity_fleets.py`); a witness subscribed to `#` on the plain listener
and a Redis MONITOR (`tests/e2e/recorded.py`), so a test can search everything the
run recorded.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.file_signer import generate_key_file
from orchestrator.adapters.redis_inventory import RedisCredentialLibrary, RedisInventory
from orchestrator.adapters.redis_rollouts import RedisRollouts
from simulator.services import start_redis
from tests.cfssl import CfsslServer, start_cfssl
from tests.e2e.identity_fleets import (
    FACTORY,
    NEW_TAG,
    OLD_TAG,
    FleetSpec,
    Identity,
    attestation_keys,
    factory_identities,
    start_fleet,
)
from tests.e2e.recorded import RedisMonitor, Witness, redis_everything
from tests.mtls import MtlsBroker, make_pki, start_mtls_broker
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until

__all__ = ["IdentityStack", "running_identity_stack"]

RELOAD_WITNESS: Final = """
import signal, sys, time
out = open(sys.argv[1], "a")
def reloaded(*_):
    out.write("SIGHUP\\n")
    out.flush()
signal.signal(signal.SIGHUP, reloaded)
while True:
    time.sleep(3600)
"""
"""A process that appends a line to a file for each SIGHUP: where certfleet's CRL reload goes."""


@dataclass
class IdentityStack:
    env: dict[str, str]
    redis: redis.Redis
    redis_url: str
    broker: MtlsBroker
    cfssl: CfsslServer
    dir: Path
    logs: Path
    procs: list[Proc]
    witness: Witness
    identities: dict[str, Identity]
    """Each device's factory identity (the test made the key, CFSSL signed it)."""
    keys_files: list[Path]
    """Where the fleets record every private key their modems held."""
    outputs: list[bytes] = field(default_factory=list)
    """Everything the CLI printed to the test."""

    # -- the CLI ---------------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            certfleet(*args), env=self.env, capture_output=True, timeout=timeout, check=False
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def rotate(self, devices: Sequence[str], *args: str) -> str:
        """`rollout create --kind identity.rotate` of `devices` (44 -> 45), probing the
        device listener."""
        selection = self.dir / f"select-{len(self.outputs)}.txt"
        selection.write_text("\n".join(devices) + "\n")
        created = self.json(
            "rollout",
            "create",
            "--kind",
            "identity.rotate",
            "--probe",
            f"127.0.0.1:{self.broker.device_port}",
            "--select",
            f"file:{selection}",
            *args,
        )
        return str(created["id"])

    def wait_final(self, rollout_id: str, timeout: float = 120) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            status = self.json("rollout", "status", rollout_id)
            ended = ("completed", "completed_with_timeouts", "rolled_back")
            return status if status["state"] in ended else None

        return wait_until(final, timeout=timeout, interval=1.0, what=f"{rollout_id} to end")

    def log(self, rollout_id: str) -> list[dict[str, str]]:
        return list(self.json("rollout", "log", rollout_id))

    # -- what Redis holds ------------------------------------------------------------------

    def device_states(self, rollout_id: str) -> dict[str, str]:
        found = RedisRollouts(self.redis).device_states(rollout_id)
        return {device: state.value for device, state in found.items()}

    def identity_tag(self, device: str) -> int | None:
        return RedisInventory(self.redis).identity_tags_of([device])[device]

    def client_certificate(self, device: str, tag: int) -> x509.Certificate | None:
        """The type-1 item of `tag` in the device's inventory, from the credential library."""
        held = RedisInventory(self.redis).device_credentials(device)
        item = next(
            (c for c in (held.credentials if held else ()) if (c.sec_tag, int(c.type)) == (tag, 1)),
            None,
        )
        if item is None:
            return None
        pem = RedisCredentialLibrary(self.redis).get(item.sha256)
        return x509.load_pem_x509_certificate(pem.encode()) if pem else None

    def modem_keys(self) -> list[bytes]:
        """Every private key (PKCS#8 PEM) a modem held so far, from the fleets' key escrow
        files (`certfleet simulate --key-escrow`: a JSON line per key)."""
        return [
            json.loads(line)["pem"].encode()
            for path in self.keys_files
            if path.exists()
            for line in path.read_text().splitlines()
        ]

    def modem_key_of(self, certificate: x509.Certificate) -> bytes | None:
        """The private key (PEM) a modem made for `certificate`'s public key, if any."""
        wanted = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for pem in self.modem_keys():
            key = serialization.load_pem_private_key(pem, password=None)
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if spki == wanted:
                return pem
        return None

    def private_keys(self) -> list[ec.EllipticCurvePrivateKey]:
        """Every key a modem held: the factory ones the test made and every %KEYGEN's."""
        keys: dict[int, ec.EllipticCurvePrivateKey] = {}
        for pem in [*self.modem_keys(), *(i.key_pem for i in self.identities.values())]:
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            keys[key.private_numbers().private_value] = key
        return list(keys.values())

    def recorded(self) -> dict[str, bytes]:
        """Everything the run recorded, by where it came from: every process log (the
        Redis MONITOR's too), the broker's log and persistence, the CRL, CFSSL's database
        and log, every Redis key and value, every MQTT message, all the CLI printed."""
        broker_dir = self.broker.service.workdir
        files = [
            *self.logs.iterdir(),
            *(broker_dir / n for n in ("mosquitto.log", "mosquitto.out", "mosquitto.db")),
            self.broker.pki.crl_file,
            self.cfssl.db_file,
            self.cfssl.workdir / "cfssl.log",
        ]
        found = {str(p.relative_to(self.dir)): p.read_bytes() for p in files if p.is_file()}
        found["redis"] = redis_everything(self.redis_url)
        found["mqtt"] = b"\n".join(t.encode() + b" " + p for t, p in self.witness.seen())
        found["cli"] = b"\n".join(self.outputs)
        return found

    # -- the parts -------------------------------------------------------------------------

    def restart_broker(self) -> int:
        """Restart mosquitto on its config: every device must connect anew, and the broker
        reads the CRL as it is now. Returns the broker log's mark from before the restart."""
        return self.broker.restart()

    def crl_reloads(self) -> int:
        """How many times certfleet asked for a CRL reload (SIGHUP to its reload pid)."""
        signals = self.logs / "crl-reloads"
        return signals.read_text().count("SIGHUP") if signals.exists() else 0

    def connected_since(self, mark: int) -> set[str]:
        """Usernames (certificate CNs) of the device connections logged after `mark`."""
        return {username for _, username in self.broker.usernames(since=mark)}

    @contextlib.contextmanager
    def worker_with(self, overrides: Mapping[str, str]) -> Iterator[None]:
        """Run the Celery worker with other settings (e.g. another issuer) for a while."""
        worker = next(p for p in self.procs if p.name == "worker")
        worker.stop()
        self.procs.remove(worker)
        other = celery_worker(self.logs, {**self.env, **overrides}, name="worker-other")
        try:
            yield
        finally:
            other.stop()
            self.procs.append(other)
            self.procs.append(celery_worker(self.logs, self.env, name="worker"))


def _settings(redis_url: str, broker: MtlsBroker, cfssl: CfsslServer, base: Path) -> dict[str, str]:
    """certfleet's settings: the services' listener, CFSSL as issuer, the CRL signed with
    CFSSL's CA (1.2 makes none) into the broker's crlfile, the modems' attestation keys."""
    signing_key = base / "signing-key.pem"
    generate_key_file(signing_key)
    return {
        **broker.settings_env(issuer=False),
        "CERTFLEET_REDIS_URL": redis_url,
        "CERTFLEET_SIGNING_KEY_FILE": str(signing_key),
        "CERTFLEET_TICK_INTERVAL_SECONDS": "1",
        "CERTFLEET_LOG_FORMAT": "json",
        **cfssl.settings_env(),
        "CERTFLEET_ISSUER_PROFILE": "device",
        "CERTFLEET_ISSUER_TIMEOUT_SECONDS": "2",
        "CERTFLEET_ATTESTATION_KEYS_FILE": str(base / "attestation-keys.json"),
        "CERTFLEET_IDENTITY_TAGS": f"{OLD_TAG},{NEW_TAG}",
        "CERTFLEET_IDENTITY_PROBE": f"127.0.0.1:{broker.device_port}",
    }


@contextlib.contextmanager
def running_identity_stack(base: Path, fleets: Sequence[FleetSpec]) -> Iterator[IdentityStack]:
    """Everything running, every fleet connected over mutual TLS with its factory identity."""
    logs = base / "logs"
    logs.mkdir()
    procs: list[Proc] = []
    with contextlib.ExitStack() as cleanup:
        redis_service = start_redis(base / "redis")
        cleanup.callback(redis_service.stop)
        redis_url = f"redis://{redis_service.host}:{redis_service.port}/0"
        cleanup.callback(RedisMonitor(redis_url, logs / "redis-monitor.log").close)
        broker = start_mtls_broker(base / "broker", make_pki(base / "pki"), persistent=True)
        cleanup.callback(broker.stop)
        cfssl = start_cfssl(base / "cfssl", broker.pki.device_ca, profiles={"factory": FACTORY})
        cleanup.callback(cfssl.stop)
        all_ids = [d for spec in fleets for d in spec.ids()]
        env = _settings(redis_url, broker, cfssl, base)
        attestation_keys(base, fleets, env)
        identities = factory_identities(cfssl, all_ids)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        cleanup.callback(client.close)
        witness = Witness("127.0.0.1", broker.port)
        cleanup.callback(witness.close)
        cleanup.callback(lambda: [proc.stop(signal.SIGTERM) for proc in reversed(procs)])
        # Mosquitto 2.0.11 crashes when SIGHUP comes while mutual-TLS devices with sessions
        # reconnect (they do, on each commit and retire): certfleet signals a stand-in that
        # counts its reloads, and the test restarts the broker to apply the CRL.
        reload_witness = start(
            "crl-reload",
            [sys.executable, "-c", RELOAD_WITNESS, str(logs / "crl-reloads")],
            env={},
            log_dir=logs,
        )
        procs.append(reload_witness)
        (base / "crl-reload.pid").write_text(f"{reload_witness.process.pid}\n")
        env["CERTFLEET_CRL_RELOAD_PID_FILE"] = str(base / "crl-reload.pid")
        listener = start("listener", certfleet("listener"), env=env, log_dir=logs)
        procs.append(listener)
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="listener")
        procs.append(celery_worker(logs, env))
        procs.append(
            start("beat", [str(BIN / "celery"), "-A", "workers.app", "beat"], env=env, log_dir=logs)
        )
        keys_files = []
        for spec in fleets:
            proc, keys_out = start_fleet(
                env, base, logs, spec, identities=identities, broker=broker
            )
            procs.append(proc)
            keys_files.append(keys_out)
        wait_until(
            lambda: all(RedisInventory(client).identity_tags_of(all_ids).values()),
            timeout=90,
            what="every device reported its identity",
        )
        yield IdentityStack(
            env,
            client,
            redis_url,
            broker,
            cfssl,
            base,
            logs,
            procs,
            witness,
            identities,
            keys_files,
        )
