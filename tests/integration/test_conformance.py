"""`certfleet conformance` against simulated devices: both simulator modes pass, a firmware
that accepts replays fails naming the step (real Mosquitto, Redis and TLS probe servers)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from simulator.services import free_port, start_mosquitto
from tests.procs import Proc, certfleet, start, wait_until
from tests.softhsm import softhsm_token
from tests.tlsserver import tls_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime.now(UTC)
SUITE_TIMEOUT_S = 240


@dataclass(frozen=True)
class Pki:
    device_ca: IssuedCA
    good_ca: IssuedCA
    good_server: IssuedCert
    bad_server: IssuedCert


@dataclass(frozen=True)
class Servers:
    good: str
    bad: str


@pytest.fixture(scope="module")
def pki() -> Pki:
    """The device's CA, the CA of the good probe server, and a server no suite CA validates."""
    since, until = NOW - timedelta(days=1), NOW + timedelta(days=60)
    good = make_ca("Conformance good CA", not_before=since, not_after=until)
    stranger = make_ca("Conformance stranger CA", not_before=since, not_after=until)
    return Pki(
        device_ca=make_ca("Conformance device CA", not_before=since, not_after=until),
        good_ca=good,
        good_server=issue_server_cert(good, not_before=since, not_after=until),
        bad_server=issue_server_cert(stranger, not_before=since, not_after=until),
    )


@pytest.fixture(scope="module")
def servers(pki: Pki) -> Iterator[Servers]:
    """The good and the bad probe server, real TLS on loopback."""
    with (
        tls_server(pki.good_server.pem, pki.good_server.key_pem) as (_, good),
        tls_server(pki.bad_server.pem, pki.bad_server.key_pem) as (_, bad),
    ):
        yield Servers(good=f"127.0.0.1:{good}", bad=f"127.0.0.1:{bad}")


@pytest.fixture
def env(service_env: dict[str, str], tmp_path: Path, pki: Pki) -> dict[str, str]:
    """The test services and a fresh signing key the simulated device trusts."""
    env = {**service_env, "CERTFLEET_SIGNING_KEY_FILE": str(tmp_path / "signing-key.pem")}
    done = subprocess.run(
        certfleet("keys", "generate"),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "device-ca.pem").write_bytes(pki.device_ca.pem)
    (tmp_path / "good-ca.pem").write_bytes(pki.good_ca.pem)
    return env


def suite_argv(servers: Servers, tmp_path: Path, device_id: str, *, state_wait: float) -> list[str]:
    """`certfleet conformance DEVICE_ID ... --json` with the test's servers and short waits."""
    return certfleet(
        "conformance",
        device_id,
        "--probe-good",
        servers.good,
        "--probe-bad",
        servers.bad,
        "--ca-good",
        str(tmp_path / "good-ca.pem"),
        "--step-timeout",
        "20",
        "--state-wait",
        str(state_wait),
        "--fallback-after",
        "2",
        "--undo-window",
        "3",
        "--json",
    )


def simulate_argv(tmp_path: Path, prefix: str, *options: str) -> list[str]:
    """`certfleet simulate` of one device `{prefix}00000` holding the device CA in tag 42."""
    return certfleet(
        "simulate",
        "--devices",
        "1",
        "--id-prefix",
        prefix,
        "--ca",
        str(tmp_path / "device-ca.pem"),
        "--tag",
        "42",
        *options,
    )


def run_suite(
    env: dict[str, str],
    servers: Servers,
    tmp_path: Path,
    log_dir: Path,
    prefix: str,
    *simulate: str,
    suite: tuple[str, ...] = (),
) -> tuple[int, dict[str, Any], str]:
    """Start the suite, then the device `{prefix}00000` (it publishes its state on CONNECT);
    the suite's exit code, JSON document and stderr.

    Each test has a device id of its own: the broker keeps a device's session, and the
    bundles queued in it, from one test to the next.
    """
    stdout, stderr = tmp_path / "suite.json", tmp_path / "suite.err"
    argv = [*suite_argv(servers, tmp_path, f"{prefix}00000", state_wait=30), *suite]
    device: Proc | None = None
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=err)
    try:
        wait_until(
            lambda: "waiting up to" in stderr.read_text() or process.poll() is not None,
            timeout=60,
            what="the suite listening",
        )
        device = start(
            "simulate", simulate_argv(tmp_path, prefix, *simulate), env=env, log_dir=log_dir
        )
        code = process.wait(timeout=SUITE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if device is not None:
            device.stop()
    text = stdout.read_text()
    assert text, f"{stderr.read_text()}\n{device.log() if device else ''}"
    return code, json.loads(text), stderr.read_text()


def _devices_known(env: dict[str, str]) -> int:
    """How many devices certfleet's inventory holds (`fleet status`)."""
    done = subprocess.run(
        certfleet("fleet", "status", "--json"),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return int(json.loads(done.stdout)["devices"]) if done.returncode == 0 else 0


def _failures(document: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["detail"] for s in document["steps"] if not s["passed"]}


def test_the_per_device_simulator_passes_every_step(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path
) -> None:
    """A device that follows the contract passes the whole suite and ends as it started."""
    # when
    code, document, stderr = run_suite(env, servers, tmp_path, log_dir, "conf-a-")

    # then
    assert _failures(document) == {}, stderr
    assert code == 0
    assert document["device_id"] == "conf-a-00000"
    assert document["passed"] is True
    names = [s["name"] for s in document["steps"]]
    assert names[0] == "state"
    assert names[-1] == "ends as it started"
    assert {"replay (same seq)", "fallback at commit_by", "case 3: abort of A"} <= set(names)
    assert {"delegated commit", "expired delegation", "revoked key refused"} <= set(names)
    assert {"revocation restored", "out of scope: rollout"} <= set(names)
    assert set(document["steps"][0]) == {"name", "passed", "expected", "got", "detail"}


def test_the_scale_mode_simulator_passes_every_step_with_the_root_in_a_token(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path
) -> None:
    """The multiplexed simulator speaks the same contract: the suite passes on it too. The
    root key the devices trust is in a SoftHSM2 token (CERTFLEET_ROOT_SIGNER=pkcs11): the
    suite signs its bundles, trust-signers, revokes and delegations through it."""
    with softhsm_token(tmp_path / "hsm") as token:
        # given: the devices provisioned with the token's public key
        root = tmp_path / "root.pub.pem"
        root.write_bytes(
            token.create_root().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        # when
        code, document, stderr = run_suite(
            {**env, **token.env},
            servers,
            tmp_path,
            log_dir,
            "conf-b-",
            "--scale",
            "--signer-pub",
            str(root),
        )

    # then
    assert _failures(document) == {}, stderr
    assert code == 0
    assert document["passed"] is True


def test_a_device_with_an_identity_passes_the_identity_steps_too(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path, pki: Pki
) -> None:
    """A device that presents an identity gets the identity group (keygen, its csr report
    as certfleet checks it, key_mismatch, the keygen's deadline) and, given a CA and a
    mutual-TLS server, a whole rotation (a certificate the suite issues for the device's
    CSR, probed presenting it, committed) and its rollback; it passes, ending with the
    identity it began with."""
    # given: the device leaves the factory with a client certificate of the device CA in
    # sec_tag 44; a server under that CA requires client certificates of it
    ca, key = tmp_path / "identity-ca.pem", tmp_path / "identity-ca-key.pem"
    ca.write_bytes(pki.device_ca.pem)
    key.write_bytes(
        pki.device_ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    since, until = NOW - timedelta(days=1), NOW + timedelta(days=60)
    server = issue_server_cert(pki.device_ca, not_before=since, not_after=until)
    with tls_server(server.pem, server.key_pem, client_ca=pki.device_ca.pem) as (_, port):
        # when
        code, document, stderr = run_suite(
            env,
            servers,
            tmp_path,
            log_dir,
            "conf-i-",
            "--identity-ca",
            str(ca),
            "--identity-ca-key",
            str(key),
            "--identity-tag",
            "44",
            suite=(
                "--identity-ca",
                str(ca),
                "--identity-ca-key",
                str(key),
                "--probe-identity",
                f"127.0.0.1:{port}",
            ),
        )

    # then
    assert _failures(document) == {}, stderr
    assert code == 0
    steps = {s["name"]: s for s in document["steps"]}
    assert steps["keygen and its rollback"]["got"].startswith(
        "received, csr; received, rolled_back"
    )
    rotation = steps["identity rotation: keygen, stage, commit"]["got"]
    assert rotation.startswith("received, csr; received, staged, health_ok; received, committed")
    assert "identity rotation: rollback" in steps
    assert document["steps"][-1]["name"] == "ends as it started"


def test_a_device_that_accepts_replays_fails_naming_the_replay_steps(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path
) -> None:
    """A firmware that skips the sequence check fails exactly at the replay steps."""
    # when
    code, document, stderr = run_suite(
        env, servers, tmp_path, log_dir, "conf-c-", "--fault", "accept-replay"
    )

    # then
    failures = _failures(document)
    assert code == 1
    assert document["passed"] is False
    assert {"replay (same seq)", "replay (older seq)"} <= set(failures)
    assert "phases ['received'" in failures["replay (same seq)"]
    assert "replay (same seq)" in stderr.splitlines()[-1]


def test_a_device_whose_probes_fail_fails_the_stage_steps_and_ends_as_it_started(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path
) -> None:
    """Every stage fails health, so the steps built on one fail, the refusals still pass,
    and the device ends with the trust it started with."""
    # when
    code, document, _ = run_suite(
        env, servers, tmp_path, log_dir, "conf-d-", "--fault", "probe-refused"
    )

    # then
    failures = _failures(document)
    assert code == 1
    assert "stage" in failures
    assert "health_failed/handshake_error" in next(
        s["got"] for s in document["steps"] if s["name"] == "stage"
    )
    assert "tampered signature" not in failures
    assert "ends as it started" not in failures


def test_without_a_state_or_an_inventory_entry_the_suite_exits_2_saying_what_to_do(
    env: dict[str, str], servers: Servers, tmp_path: Path
) -> None:
    """A device that never speaks, and that certfleet never recorded, is not tested blind."""
    # when
    done = subprocess.run(
        suite_argv(servers, tmp_path, "conf-silent-00000", state_wait=1),
        env={**os.environ, **env, "COLUMNS": "500"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    # then
    assert done.returncode == 2
    assert done.stdout == ""
    assert "no state from conf-silent-00000 within 1 s" in done.stderr
    assert "reset the device" in done.stderr


def test_a_device_already_connected_is_read_from_certfleets_inventory(
    env: dict[str, str], servers: Servers, tmp_path: Path, log_dir: Path
) -> None:
    """With the listener recording the device, the suite needs no reconnect: it builds its
    plan from the inventory's state and the device passes. The fleet has revoked 8 key ids
    (the most a device keeps) and a time later than the suite's own: the revocation steps
    still fit the limit, and end by sending the fleet's revocation back."""
    # given: the listener, then the device, until certfleet knows it; the fleet's revocation
    # sent to it
    listener = start("listener", certfleet("listener"), env=env, log_dir=log_dir)
    device: Proc | None = None
    kids = [f"{n:02x}" * 8 for n in range(8)]
    try:
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="listener")
        device = start("simulate", simulate_argv(tmp_path, "conf-e-"), env=env, log_dir=log_dir)
        wait_until(lambda: _devices_known(env) == 1, timeout=30, what="the device in the inventory")
        revoked = subprocess.run(
            certfleet(
                "keys",
                "revoke",
                *(arg for kid in kids for arg in ("--kid", kid)),
                "--before",
                "1600001000",
                "--device",
                "conf-e-00000",
            ),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr

        # when
        done = subprocess.run(
            suite_argv(servers, tmp_path, "conf-e-00000", state_wait=1),
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=SUITE_TIMEOUT_S,
        )
    finally:
        if device is not None:
            device.stop()
        listener.stop()

    # then
    document = json.loads(done.stdout)
    assert _failures(document) == {}, done.stderr
    assert done.returncode == 0
    assert document["steps"][0]["got"].startswith("certfleet's inventory: active [42]")
    steps = {s["name"]: s for s in document["steps"]}
    assert steps["revocation restored"]["got"].startswith("received, committed")


def test_over_a_tls_broker_every_commit_is_proven_on_a_new_connection_and_passes(
    env: dict[str, str],
    servers: Servers,
    tmp_path: Path,
    log_dir: Path,
    pki: Pki,
) -> None:
    """The suite connects over TLS like the device, whose every active list must validate
    the broker (a commit reconnects first): the per-device simulator passes over TLS."""
    # given: a broker whose TLS listener presents a certificate under the device's CA
    base = tmp_path / "tls-broker"
    base.mkdir()
    port = free_port()
    since, until = NOW - timedelta(days=1), NOW + timedelta(days=60)
    server = issue_server_cert(pki.device_ca, not_before=since, not_after=until)
    (base / "cert.pem").write_bytes(server.pem)
    (base / "key.pem").write_bytes(server.key_pem)
    broker = start_mosquitto(
        base / "mosquitto",
        extra_config=(
            f"listener {port} 127.0.0.1\ncertfile {base / 'cert.pem'}\n"
            f"keyfile {base / 'key.pem'}\ntls_version tlsv1.2\n"
        ),
    )
    tls = ("--tls", "--broker-port", str(port))
    try:
        # when
        code, document, stderr = run_suite(
            {**env, "CERTFLEET_MQTT_PORT": str(broker.port)},
            servers,
            tmp_path,
            log_dir,
            "conf-f-",
            *tls,
            suite=(*tls, "--broker-ca", str(tmp_path / "device-ca.pem")),
        )
    finally:
        broker.stop()

    # then
    assert _failures(document) == {}, stderr
    assert code == 0
