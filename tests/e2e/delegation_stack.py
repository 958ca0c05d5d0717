"""The whole certfleet stack with its root key in a SoftHSM2 token (issue 17).

Redis, Mosquitto, certfleet's listener, Celery worker and beat, all with
`CERTFLEET_ROOT_SIGNER=pkcs11` (the token of `tests/softhsm.py`) and delegations on; the
dev key file setting names a file that does not exist, so nothing can sign with one.
The root key is one the test made and imported into the token (sensitive, not
extractable), so a search of what the run recorded can look for its scalar. The devices
of `certfleet simulate` trust that root's public key as `certfleet keys export-public`
prints it, and nothing else. A witness subscribed to `#` and a Redis MONITOR record the
run (`tests/e2e/recorded.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.client import Client as MqttClient
from paho.mqtt.enums import CallbackAPIVersion

from orchestrator.adapters.redis_inventory import RedisInventory
from orchestrator.adapters.redis_rollouts import RedisRollouts
from orchestrator.protocol.cose import key_id
from simulator.pki import IssuedCA
from simulator.services import LocalService, start_mosquitto, start_redis
from tests.e2e.recorded import RedisMonitor, Witness, redis_everything
from tests.e2e.stack import prepare_stack
from tests.procs import BIN, Proc, celery_worker, certfleet, start, wait_until
from tests.softhsm import SoftHsmToken
from tests.tlsserver import tls_server

__all__ = ["DelegationStack", "running_delegation_stack"]


@dataclass
class DelegationStack:
    env: dict[str, str]
    redis: redis.Redis
    redis_url: str
    mqtt: LocalService
    dir: Path
    logs: Path
    procs: list[Proc]
    witness: Witness
    ca2: IssuedCA
    probe_port: int
    token: SoftHsmToken
    root: ec.EllipticCurvePrivateKey
    """The root key the test imported into the token (only the token signs with it)."""
    outputs: list[bytes] = field(default_factory=list)
    """Everything the CLI printed to the test."""
    _publisher: MqttClient | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root_kid(self) -> bytes:
        return key_id(self.root.public_key())

    # -- the CLI ---------------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            certfleet(*args), env=self.env, capture_output=True, timeout=timeout, check=False
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return json.loads(done.stdout)

    def wait_final(self, rollout_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the rollout to end (read from Redis), then its `rollout status --json`."""

        def ended() -> str | None:
            rollout = RedisRollouts(self.redis).get(rollout_id)
            state = rollout.state.value if rollout is not None else None
            return (
                state if state in ("completed", "completed_with_timeouts", "rolled_back") else None
            )

        wait_until(ended, timeout=timeout, interval=0.2, what=f"{rollout_id} to end")
        status: dict[str, Any] = self.json("rollout", "status", rollout_id)
        return status

    # -- MQTT ------------------------------------------------------------------------------

    def publish_bundle(self, device: str, data: bytes) -> None:
        """Publish `data` on the device's bundle topic, as certfleet would (QoS 1)."""
        with self._lock:
            if self._publisher is None:
                client = MqttClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
                client.connect(self.mqtt.host, self.mqtt.port)
                client.loop_start()
                self._publisher = client
            info = self._publisher.publish(f"certfleet/{device}/bundle", data, qos=1)
        info.wait_for_publish(10)

    def messages(self, device: str, channel: str) -> list[bytes]:
        """Every message seen on `certfleet/{device}/{channel}`, in order."""
        topic = f"certfleet/{device}/{channel}"
        return [payload for seen, payload in self.witness.seen() if seen == topic]

    def reports(self, device: str) -> list[dict[str, Any]]:
        """The device's reports, in order."""
        return [json.loads(p) for p in self.messages(device, "report")]

    def bundles(self) -> list[tuple[str, bytes]]:
        """(device, bundle) of every bundle published so far."""
        return [
            (topic.split("/")[1], payload)
            for topic, payload in self.witness.seen()
            if topic.startswith("certfleet/") and topic.endswith("/bundle")
        ]

    def held(self, device: str) -> tuple[Any, ...]:
        """What the inventory holds of the device: its credentials and active tags."""
        inventory = RedisInventory(self.redis)
        state = inventory.device_credentials(device)
        assert state is not None, device
        active = inventory.active_tags_of([device])[device]
        return (tuple(state.credentials), tuple(active or ()))

    # -- what the run recorded ---------------------------------------------------------------

    def recorded(self) -> dict[str, bytes]:
        """Every process log (the Redis MONITOR's too), the broker's log, every Redis key
        and value, every MQTT message, all the CLI printed."""
        broker_dir = self.mqtt.workdir
        files = [*self.logs.iterdir(), *(broker_dir / n for n in ("mosquitto.log",))]
        found = {str(p.relative_to(self.dir)): p.read_bytes() for p in files if p.is_file()}
        found["redis"] = redis_everything(self.redis_url)
        found["mqtt"] = b"\n".join(t.encode() + b" " + p for t, p in self.witness.seen())
        found["cli"] = b"\n".join(self.outputs)
        return found

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.loop_stop()
            self._publisher.disconnect()


def _stop_all(procs: list[Proc]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after 20 s)."""
    for proc in procs:
        if proc.process.poll() is None:
            os.killpg(proc.process.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.stop(signal.SIGKILL)


def _start_fleet(
    env: Mapping[str, str], base: Path, logs: Path, fleet: tuple[str, int], signer_pub: Path
) -> Proc:
    """`certfleet simulate` of a fleet (id prefix, devices) on CA1 in sec_tag 42 that trusts
    `signer_pub` only."""
    prefix, count = fleet
    args = ["simulate", "--devices", str(count), "--ca", str(base / "ca1.pem")]
    args += ["--tag", "42", "--id-prefix", prefix, "--signer-pub", str(signer_pub)]
    return start(f"fleet-{prefix.rstrip('-')}", certfleet(*args), env=env, log_dir=logs)


@contextlib.contextmanager
def running_delegation_stack(
    base: Path, token: SoftHsmToken, fleets: Mapping[str, int]
) -> Iterator[DelegationStack]:
    """Everything running with the root in `token`; each fleet (id prefix -> devices) on
    CA1 in sec_tag 42; a probe endpoint under CA2."""
    root = ec.generate_private_key(ec.SECP256R1())
    token.import_root(root)
    procs: list[Proc] = []
    with contextlib.ExitStack() as cleanup:
        redis_service = start_redis(base / "redis")
        cleanup.callback(redis_service.stop)
        mqtt_service = start_mosquitto(base / "mosquitto")
        cleanup.callback(mqtt_service.stop)
        redis_url = f"redis://{redis_service.host}:{redis_service.port}/0"
        setup = prepare_stack(base, redis_service, mqtt_service)
        (base / "signing-key.pem").unlink()  # no key file: the token is the only root
        env = {
            **setup.env,
            **token.env,
            "CERTFLEET_SIGNING_KEY_FILE": str(base / "no-signing-key.pem"),
        }
        cleanup.callback(RedisMonitor(redis_url, setup.logs / "redis-monitor.log").close)
        witness = Witness(mqtt_service.host, mqtt_service.port)
        cleanup.callback(witness.close)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        cleanup.callback(client.close)
        cleanup.callback(_stop_all, procs)

        listener = start("listener", certfleet("listener"), env=env, log_dir=setup.logs)
        procs.append(listener)
        exported = subprocess.run(
            certfleet("keys", "export-public", "--json"),
            env={**env},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert exported.returncode == 0, exported.stderr.decode(errors="replace")
        public = json.loads(exported.stdout)
        assert public["kid"] == key_id(root.public_key()).hex(), public
        root_pub = base / "root-public.pem"
        root_pub.write_text(public["public_key_pem"])
        # Devices report their state once on connect: the listener must be subscribed first;
        # they connect while the worker starts.
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="listener")
        for prefix, count in fleets.items():
            procs.append(_start_fleet(env, base, setup.logs, (prefix, count), root_pub))
        beat = [str(BIN / "celery"), "-A", "workers.app", "beat"]
        procs.append(start("beat", beat, env=env, log_dir=setup.logs))
        procs.append(celery_worker(setup.logs, env))
        total = sum(fleets.values())
        wait_until(
            lambda: RedisInventory(client).device_count() == total,
            timeout=60,
            what="fleets reported",
        )
        with tls_server(setup.server.pem, setup.server.key_pem) as (_, port):
            stack = DelegationStack(
                env=env,
                redis=client,
                redis_url=redis_url,
                mqtt=mqtt_service,
                dir=base,
                logs=setup.logs,
                procs=procs,
                witness=witness,
                ca2=setup.ca2,
                probe_port=port,
                token=token,
                root=root,
                outputs=[exported.stdout, exported.stderr],
            )
            try:
                yield stack
            finally:
                stack.close()
