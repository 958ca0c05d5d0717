"""`certfleet keys` with the root in a SoftHSM2 token: create-root and export-public, the
delegations list, revoke (recorded, then sent root-signed to devices), and `device send`
signing trust-signer with the root while other ops go under a delegation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.mqtt import MqttSession
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.config import Settings
from orchestrator.domain.inventory import DeviceState
from orchestrator.protocol.bundle import decode_payload
from orchestrator.protocol.cose import Sign1Message, key_id
from orchestrator.protocol.delegation import (
    Scope,
    decode_delegation,
    delegation_of,
    sign_delegation,
)
from orchestrator.protocol.topics import Topics
from tests.procs import certfleet
from tests.softhsm import SoftHsmToken, softhsm_token

pytestmark = [pytest.mark.integration]

DEVICES = ("keys-00000", "keys-00001")


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    """An empty SoftHSM2 token, set as the root signer for this process and its children."""
    with softhsm_token(tmp_path / "hsm") as made:
        yield made


@pytest.fixture
def env(service_env: dict[str, str], token: SoftHsmToken) -> dict[str, str]:
    """The test services, the token as root signer, and wide lines for messages."""
    return {**service_env, **token.env, "COLUMNS": "500"}


@pytest.fixture
def stack(env: dict[str, str]) -> Iterator[Container]:
    """This process's adapters over the same services and token."""
    container = bootstrap(Settings(), logging=False)
    yield container
    container.close()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`certfleet ARGS` as a subprocess."""
    return subprocess.run(
        certfleet(*args),
        check=False,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def create_root(env: dict[str, str]) -> dict[str, Any]:
    """`keys create-root --json`: the document."""
    result = run(env, "keys", "create-root", "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


class BundleTap:
    """Every bundle published to the given devices' topics, as the broker delivers them."""

    def __init__(self, settings: Settings, devices: tuple[str, ...]) -> None:
        self.session = MqttSession(settings, client_id=f"tap-{time.monotonic_ns()}")
        topics = Topics(settings.topic_prefix)
        for device in devices:
            self.session.subscribe(topics.bundle(device))

    def take(self, count: int, timeout: float = 20) -> list[bytes]:
        """`count` bundles (fails after `timeout` seconds)."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got.extend(payload for _, payload in self.session.drain(timeout=0.5))
        assert len(got) >= count, f"{len(got)} of {count} bundles arrived"
        return got

    def close(self) -> None:
        """Disconnect."""
        self.session.close()


@pytest.fixture
def tap(env: dict[str, str]) -> Iterator[BundleTap]:
    """A subscriber of DEVICES' bundle topics."""
    listening = BundleTap(Settings(), DEVICES)
    yield listening
    listening.close()


def root_signatures(container: Container) -> float:
    """certfleet_root_signatures_total{purpose="bundle"} as Redis holds it."""
    return sum(
        value
        for (name, labels), value in container.metrics.snapshot().items()
        if name == "certfleet_root_signatures_total" and ("purpose", "bundle") in labels
    )


def test_create_root_prints_its_key_and_export_public_reads_it_from_the_token(
    env: dict[str, str],
) -> None:
    """create-root prints kid and PEM; export-public gives the same; a second create is
    refused unless --force, which makes a new key."""
    # given: an empty token

    # when
    made = create_root(env)
    exported = run(env, "keys", "export-public", "--json")
    again = run(env, "keys", "create-root")
    plain = run(env, "keys", "export-public")
    forced = run(env, "keys", "create-root", "--force", "--json")

    # then
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout) == made
    public = serialization.load_pem_public_key(made["public_key_pem"].encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key_id(public).hex() == made["kid"]
    assert made["alg"] == "ES256"
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert plain.stdout.startswith(f"# key id {made['kid']} (ES256, P-256)\n-----BEGIN PUBLIC KEY")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["kid"] != made["kid"]


def test_create_root_without_token_settings_names_them(
    service_env: dict[str, str],
) -> None:
    """Without CERTFLEET_PKCS11_* the command says which settings it needs."""
    bare = dict.fromkeys(("CERTFLEET_PKCS11_MODULE", "CERTFLEET_PKCS11_TOKEN"), "")
    result = run({**service_env, **bare}, "keys", "create-root")
    assert result.returncode == 1
    assert "CERTFLEET_PKCS11_MODULE" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_public_of_a_missing_root_key_says_to_create_it(env: dict[str, str]) -> None:
    """An empty token: export-public fails with the create-root hint, no traceback."""
    result = run(env, "keys", "export-public")
    assert result.returncode == 1
    assert "certfleet keys create-root" in result.stderr
    assert "Traceback" not in result.stderr


def _delegate(container: Container, worker: str, *, issued_at: int) -> bytes:
    """A delegation the root signs for a fresh key, recorded as the workers do; its kid."""
    root = container.root_signer
    data = sign_delegation(
        root=root,
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        not_before=issued_at - 300,
        expires_at=issued_at + 3600,
        issued_at=issued_at,
        scope=Scope(("stage", "commit"), (0,)),
    )
    _, delegation = decode_delegation(data)
    container.delegations.record(delegation, worker)
    return delegation.kid


def test_delegations_lists_the_registry_and_what_is_revoked(
    env: dict[str, str], stack: Container
) -> None:
    """keys delegations shows each delegation's kid, worker, times and scope, and which are
    revoked after keys revoke --kid."""
    # given: two delegations recorded
    create_root(env)
    now = int(time.time())
    first = _delegate(stack, "host-a:101", issued_at=now - 60)
    second = _delegate(stack, "host-b:202", issued_at=now - 30)

    # when
    listed = run(env, "keys", "delegations", "--json")
    revoked = run(env, "keys", "revoke", "--kid", first.hex(), "--json")
    after = run(env, "keys", "delegations", "--json")
    table = run(env, "keys", "delegations")

    # then
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["delegations"]
    assert [(r["kid"], r["worker"], r["revoked"]) for r in rows] == [
        (first.hex(), "host-a:101", False),
        (second.hex(), "host-b:202", False),
    ]
    assert rows[0]["ops"] == ["stage", "commit"]
    assert rows[0]["kinds"] == [0]
    assert rows[0]["root_kid"] == stack.root_signer.key_id.hex()
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {
        "kids": [first.hex()],
        "before": 0,
        "devices": 0,
        "sent": 0,
        "not_sent": 0,
    }
    document = json.loads(after.stdout)
    assert [r["revoked"] for r in document["delegations"]] == [True, False]
    assert document["revocation"] == {"kids": [first.hex()], "before": None}
    assert first.hex() in table.stdout
    assert "host-b:202" in table.stdout


def test_revoke_sends_each_device_a_root_signed_revoke_with_the_whole_list(
    env: dict[str, str], stack: Container, tap: BundleTap
) -> None:
    """revoke --kid --before --device: recorded fleet-wide, then one revoke bundle per device,
    signed by the root itself (no delegation), carrying every revoked kid and the time."""
    # given: a root, a kid revoked earlier, and a delegation to revoke now
    create_root(env)
    now = int(time.time())
    earlier = _delegate(stack, "host-a:1", issued_at=now - 10)
    assert run(env, "keys", "revoke", "--kid", earlier.hex()).returncode == 0
    target = _delegate(stack, "host-b:2", issued_at=now - 5)
    cut = datetime.fromtimestamp(now - 3600, UTC).isoformat()
    counted = root_signatures(stack)

    # when
    args = ["--kid", target.hex(), "--before", cut]
    result = run(env, "keys", "revoke", *args, "--device", DEVICES[0], "--device", DEVICES[1])
    bundles = tap.take(2)

    # then
    assert result.returncode == 0, result.stderr
    assert "sent to 2 of 2 device(s)" in result.stdout
    root = stack.root_signer
    seen = set()
    for data in bundles:
        message = Sign1Message.decode(data)
        message.verify(root.public_key)
        assert message.kid == root.key_id
        assert delegation_of(data) is None
        bundle = decode_payload(message.payload)
        assert bundle.op == "revoke"
        assert set(bundle.revoke_kids) == {earlier, target}
        assert bundle.revoke_before == now - 3600
        seen.add(bundle.device_id)
    assert seen == set(DEVICES)
    revocation = stack.delegations.revocation()
    assert revocation.kids == {earlier, target}
    assert revocation.before == now - 3600
    assert root_signatures(stack) == counted + 2


def test_revoke_refuses_bad_input_without_recording(env: dict[str, str], stack: Container) -> None:
    """A malformed kid, a time in the future, or nothing to do: exit 1, nothing recorded."""
    create_root(env)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    cases = [
        (("--kid", "abc"), "16 digits"),
        (("--before", future), "future"),
        (("--before", "yesterday"), "ISO 8601"),
        ((), "--kid or --before"),
        (("--kid", "00" * 8, "--device", "d", "--all"), "not both"),
        (("--kid", "00" * 8, "--device", "no/such+device"), "not a device id"),
    ]
    for args, words in cases:
        result = run(env, "keys", "revoke", *args)
        assert result.returncode == 1, args
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert stack.delegations.revocation().kids == frozenset()


def test_device_send_signs_trust_signer_with_the_root_and_other_ops_under_a_delegation(
    env: dict[str, str], stack: Container, tap: BundleTap, tmp_path: Path
) -> None:
    """trust-signer is a root op: the root signs it; a rollback carries the worker's
    delegation, signed by the root."""
    # given
    create_root(env)
    new_key = tmp_path / "next.pub"
    new_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    counted = root_signatures(stack)

    # when
    trust = run(
        env, "device", "send", DEVICES[0], "--op", "trust-signer",
        "--signer-pub", str(new_key), "--wait", "0",
    )  # fmt: skip
    rollback = run(env, "device", "send", DEVICES[1], "--op", "rollback", "--wait", "0")
    bundles = {decode_payload(Sign1Message.decode(b).payload).op: b for b in tap.take(2)}

    # then
    assert trust.returncode == 0, trust.stderr
    assert rollback.returncode == 0, rollback.stderr
    root = stack.root_signer
    trust_message = Sign1Message.decode(bundles["trust-signer"])
    assert trust_message.kid == root.key_id
    assert delegation_of(bundles["trust-signer"]) is None
    trust_message.verify(root.public_key)
    delegation = delegation_of(bundles["rollback"])
    assert delegation is not None
    assert delegation.root_kid == root.key_id
    assert Sign1Message.decode(bundles["rollback"]).kid == delegation.kid
    assert root_signatures(stack) == counted + 1


def test_revoke_all_sends_every_known_device_its_version_of_the_bundle(
    env: dict[str, str], stack: Container, tap: BundleTap
) -> None:
    """--before now --all: every device in the inventory gets a revoke, a v1 device a v1
    bundle and a v2 device a v2 one; the summary counts them."""
    # given: two devices that reported, one v1 and one v2
    create_root(env)
    now = datetime.now(UTC)
    stack.inventory.record_states(
        [
            DeviceState(device_id=DEVICES[0], reported_at=now, credentials=(), protocol_version=1),
            DeviceState(device_id=DEVICES[1], reported_at=now, credentials=(), protocol_version=2),
        ],
        received_at=now,
    )

    # when
    result = run(env, "keys", "revoke", "--before", "now", "--all", "--json")
    bundles = [decode_payload(Sign1Message.decode(b).payload) for b in tap.take(2)]

    # then
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["devices"], summary["sent"], summary["not_sent"]) == (2, 2, 0)
    assert summary["kids"] == []
    assert abs(summary["before"] - int(now.timestamp())) <= 5
    versions = {b.device_id: b.version for b in bundles}
    assert versions == {DEVICES[0]: 1, DEVICES[1]: 2}
    assert all(b.op == "revoke" and b.revoke_before == summary["before"] for b in bundles)


def test_inspect_verifies_a_delegated_bundle_through_its_delegation(
    env: dict[str, str], tap: BundleTap, tmp_path: Path
) -> None:
    """bundle inspect --key ROOT shows the delegation and verifies root -> delegation ->
    bundle; another key is refused (exit 1)."""
    # given: a worker-signed rollback, the root's public key and a stranger's
    made = create_root(env)
    (tmp_path / "root.pub").write_text(made["public_key_pem"])
    (tmp_path / "other.pub").write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert run(env, "device", "send", DEVICES[0], "--op", "rollback", "--wait", "0").returncode == 0
    bundle_file = tmp_path / "rollback.cbor"
    bundle_file.write_bytes(tap.take(1)[0])

    # when
    good = run(
        env, "bundle", "inspect", str(bundle_file), "--key", str(tmp_path / "root.pub"), "--json"
    )
    bad = run(
        env, "bundle", "inspect", str(bundle_file), "--key", str(tmp_path / "other.pub"), "--json"
    )

    # then
    assert good.returncode == 0, good.stderr
    document = json.loads(good.stdout)
    assert document["verified"] is True
    assert document["delegation"]["root_kid"] == made["kid"]
    assert document["delegation"]["kid"] == document["kid"]
    assert "rollback" in document["delegation"]["ops"]
    assert bad.returncode == 1
    rejected = json.loads(bad.stdout)
    assert rejected["verified"] is False
    assert "delegation is not signed by this key" in rejected["problem"]


def test_revoke_with_the_broker_away_records_it_and_exits_1_naming_the_devices_left(
    env: dict[str, str], stack: Container
) -> None:
    """The revocation is recorded first; devices it could not be sent to are counted, and
    the command fails so the operator re-sends (keys revoke --all) once the broker is back."""
    # given: a root, and a broker port nobody listens on
    create_root(env)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    away = {**env, "CERTFLEET_MQTT_PORT": str(closed_port)}

    # when
    result = run(away, "keys", "revoke", "--kid", "ab" * 8, "--device", DEVICES[0], "--json")

    # then
    assert result.returncode == 1, result.stderr
    assert result.stdout, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["not_sent"]) == (0, 1)
    assert "1 device(s) were not sent the revocation" in result.stderr
    assert "Traceback" not in result.stderr
    assert stack.delegations.revocation().kids == {bytes.fromhex("ab" * 8)}
