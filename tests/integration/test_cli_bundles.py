"""The `certfleet keys`, `device send` and `bundle inspect` commands, run as the installed
command against a real Redis, Mosquitto, simulated device and TLS server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.file_signer import FileSigner
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CA_CHAIN_MAX_BYTES
from orchestrator.domain.inventory import DeviceState
from orchestrator.services.bundles import issue_bundle, stage_body
from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from tests.pem_sizes import ca_pems_of_total
from tests.procs import Proc, certfleet, start, wait_until
from tests.tlsserver import tls_server

pytestmark = [pytest.mark.integration]

NOW = datetime.now(UTC)
DEVICE = "cli-00000"


@dataclass(frozen=True)
class Pki:
    ca1: IssuedCA
    ca2: IssuedCA
    server2: IssuedCert


@pytest.fixture(scope="module")
def pki() -> Pki:
    """CA1 (the device's), CA2 (its successor), and a server certificate under CA2."""
    since, until = NOW - timedelta(days=1), NOW + timedelta(days=60)
    ca1 = make_ca("CLI CA 1", not_before=since, not_after=until)
    ca2 = make_ca("CLI CA 2", not_before=since, not_after=until)
    server2 = issue_server_cert(ca2, not_before=since, not_after=until)
    return Pki(ca1=ca1, ca2=ca2, server2=server2)


@pytest.fixture
def env(service_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test services, a signing key path in tmp_path, and wide lines for error messages."""
    key = tmp_path / "signing-key.pem"
    return {**service_env, "CERTFLEET_SIGNING_KEY_FILE": str(key), "COLUMNS": "500"}


def run(
    env: dict[str, str], *args: str, stdin: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`certfleet ARGS` as a subprocess, reading `stdin` (default: nothing)."""
    with open(stdin or os.devnull, "rb") as source:
        return subprocess.run(
            certfleet(*args),
            check=False,
            env={**os.environ, **env},
            stdin=source,
            capture_output=True,
            text=True,
            timeout=90,
        )


def generate(env: dict[str, str]) -> str:
    """A fresh key at CERTFLEET_SIGNING_KEY_FILE; its key id."""
    result = run(env, "keys", "generate")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def send(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    """`device send DEVICE ARGS --json`: exit code and the JSON document."""
    result = run(env, "device", "send", DEVICE, *args, "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_generate_writes_a_0600_key_and_replaces_it_only_with_force(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The key file is mode 0600; an existing one is kept unless --force is given."""
    # given: no key file yet
    key = tmp_path / "keys" / "k.pem"

    # when: generating, generating again, then generating with --force
    first = run(env, "keys", "generate", "--out", str(key))
    content = key.read_bytes()
    mode = key.stat().st_mode & 0o7777
    again = run(env, "keys", "generate", "--out", str(key))
    kept = key.read_bytes()
    forced = run(env, "keys", "generate", "--out", str(key), "--force")

    # then
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(r"[0-9a-f]{16}", first.stdout.strip())
    assert mode == 0o600
    assert again.returncode != 0
    assert "exists; pass --force" in again.stderr
    assert kept == content
    assert forced.returncode == 0, forced.stderr
    assert re.fullmatch(r"[0-9a-f]{16}", forced.stdout.strip())
    assert forced.stdout.strip() != first.stdout.strip()
    assert key.read_bytes() != content
    assert key.stat().st_mode & 0o7777 == 0o600


def test_export_public_prints_the_kid_and_the_p256_half_of_the_key_file(
    env: dict[str, str],
) -> None:
    """export-public's kid is generate's, and its PEM is the private key's public half."""
    # given
    kid = generate(env)

    # when
    result = run(env, "keys", "export-public", "--json")

    # then
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["kid"], document["alg"]) == (kid, "ES256")
    public = serialization.load_pem_public_key(document["public_key_pem"].encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    private = FileSigner(Path(env["CERTFLEET_SIGNING_KEY_FILE"]))
    assert public.public_numbers() == private.public_key.public_numbers()


@pytest.mark.parametrize(
    "command",
    [("keys", "export-public"), ("device", "send", DEVICE, "--op", "rollback", "--wait", "0")],
    ids=["export-public", "device-send"],
)
def test_a_key_file_readable_by_others_is_refused_with_a_chmod_hint(
    env: dict[str, str], command: tuple[str, ...]
) -> None:
    """A 0644 key file makes the command fail and tell the user to chmod 600 it."""
    # given
    generate(env)
    key = Path(env["CERTFLEET_SIGNING_KEY_FILE"])
    key.chmod(0o644)

    # when
    result = run(env, *command)

    # then
    assert result.returncode == 1
    assert f"chmod 600 {key}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def simulator(env: dict[str, str], pki: Pki, tmp_path: Path, log_dir: Path) -> Iterator[Proc]:
    """`certfleet listener`, then `simulate` of DEVICE with CA1.pem in tag 42, until it is known."""
    generate(env)
    (tmp_path / "CA1.pem").write_bytes(pki.ca1.pem)
    (tmp_path / "CA2.pem").write_bytes(pki.ca2.pem)
    simulate = ("simulate", "--devices", "1", "--ca", str(tmp_path / "CA1.pem"), "--tag", "42")
    listener = start("listener", certfleet("listener"), env=env, log_dir=log_dir)
    proc: Proc | None = None
    try:
        # a device sends its state once per connect: the listener must hear the first one
        wait_until(lambda: "listener_subscribed" in listener.log(), timeout=30, what="listener")
        argv = certfleet(*simulate, "--id-prefix", "cli-")
        proc = start("simulate", argv, env=env, log_dir=log_dir)
        wait_until(
            lambda: json.loads(run(env, "fleet", "status", "--json").stdout)["devices"] == 1,
            timeout=30,
            what="the device in the inventory",
        )
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        listener.stop()


def test_manual_send_stages_commits_fails_retires_and_times_out(
    env: dict[str, str], pki: Pki, simulator: Proc, tmp_path: Path, container: Container
) -> None:
    """Each op ends in its final report; a wrong CA fails unknown_ca; silence exits 2."""
    # given: the device holding CA1 in 42, and a TLS server under CA2
    with tls_server(pki.server2.pem, pki.server2.key_pem) as (_, port):
        probe = f"127.0.0.1:{port}"

        # when: staging CA2 into 43 without --active, then committing it
        stage = ("--op", "stage", "--probe", probe)
        staged_code, staged = send(env, *stage, "--ca", str(tmp_path / "CA2.pem"), "--tag", "43")
        commit_code, commit = send(env, "--op", "commit", "--tag", "43")
        # and: staging CA1, which cannot validate the CA2 server, into 44
        failed_code, failed = send(env, *stage, "--ca", str(tmp_path / "CA1.pem"), "--tag", "44")
    # and: retiring 42 once the inventory has heard the committed list
    wait_until(
        lambda: (
            getattr(container.inventory.device_credentials(DEVICE), "active_tags", None) == (42, 43)
        ),
        timeout=30,
        what="active tags (42, 43) in the inventory",
    )
    retire_code, retire = send(env, "--op", "retire", "--tag", "42")
    # and: a rollback to a device that is gone
    simulator_code = simulator.stop()
    silent = run(env, "device", "send", DEVICE, "--op", "rollback", "--wait", "2", "--json")

    # then
    assert staged_code == 0, staged
    assert [r["phase"] for r in staged["reports"]] == ["received", "staged", "health_ok"]
    assert {r["seq"] for r in staged["reports"]} == {staged["seq"]}
    assert commit_code == 0, commit
    assert _last(commit, "phase", "active_tags") == ("committed", [42, 43])
    assert failed_code == 1, failed
    assert _last(failed, "phase", "reason") == ("health_failed", "unknown_ca")
    assert retire_code == 0, retire
    assert _last(retire, "phase", "active_tags") == ("retired", [43])
    assert simulator_code == 0, simulator.log()
    assert silent.returncode == 2, silent.stderr
    assert json.loads(silent.stdout)["reports"] == []
    assert f"no final report from {DEVICE} within 2s" in silent.stderr


def test_retire_right_after_a_commit_keeps_the_committed_tag_active(
    env: dict[str, str], pki: Pki, simulator: Proc, tmp_path: Path
) -> None:
    """A retire of 42 sent right after committing 43 (no --active) ends retired with [43]."""
    # given: CA2 staged into 43 and committed, so the device's active list is [42, 43]
    with tls_server(pki.server2.pem, pki.server2.key_pem) as (_, port):
        stage = ("--op", "stage", "--ca", str(tmp_path / "CA2.pem"), "--tag", "43")
        staged_code, _ = send(env, *stage, "--probe", f"127.0.0.1:{port}")
    commit_code, commit = send(env, "--op", "commit", "--tag", "43")
    assert (staged_code, commit_code) == (0, 0)
    assert _last(commit, "active_tags") == ([42, 43],)

    # when: at once retiring 42 without --active (no reconnect happens after a plain commit)
    result = run(env, "device", "send", DEVICE, "--op", "retire", "--tag", "42", "--json")

    # then
    assert result.returncode == 0, result.stderr
    assert _last(json.loads(result.stdout), "phase", "active_tags") == ("retired", [43])


def _last(document: dict[str, Any], *fields: str) -> tuple[Any, ...]:
    """Fields of the last report of a `device send --json` document."""
    report = document["reports"][-1] if document["reports"] else {}
    return tuple(report.get(field) for field in fields)


class _Sequences:
    """A sequence store for one bundle: every device's next number is 1."""

    def next_sequence(self, device_id: str) -> int:
        return 1


@pytest.fixture
def bundle_file(env: dict[str, str], pki: Pki, tmp_path: Path) -> Path:
    """A stage bundle for dev-inspect signed with the env's key; PUB.pem and OTHER.pem beside it."""
    generate(env)
    exported = run(env, "keys", "export-public", "--json")
    (tmp_path / "PUB.pem").write_text(json.loads(exported.stdout)["public_key_pem"])
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "OTHER.pem").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    body = stage_body(
        ca_pems=[pki.ca2.pem.decode()],
        tag=43,
        probe_host="127.0.0.1",
        probe_port=8883,
        probe_tags=[43],
        active_after=[42, 43],
        commit_by=NOW + timedelta(minutes=15),
    )
    issued = issue_bundle(
        signer=FileSigner(Path(env["CERTFLEET_SIGNING_KEY_FILE"])),
        sequences=_Sequences(),
        device_id="dev-inspect",
        rollout_id="r-1",
        body=body,
        now=NOW,
        ttl_seconds=3600,
    )
    path = tmp_path / "bundle.cbor"
    path.write_bytes(issued.data)
    return path


@pytest.mark.parametrize(
    ("source", "key", "verified"),
    [("file", "PUB.pem", True), ("-", "PUB.pem", True), ("file", "OTHER.pem", False)],
    ids=["file", "stdin", "another-key"],
)
def test_inspect_shows_the_bundle_and_whether_the_key_signed_it(
    env: dict[str, str], bundle_file: Path, source: str, key: str, verified: bool
) -> None:
    """inspect shows what the bundle asks; verified (exit 0) only with the signer's key."""
    # given: the bundle, as a file or on stdin
    argv = (str(bundle_file) if source == "file" else "-", "--key", str(bundle_file.parent / key))

    # when
    result = run(env, "bundle", "inspect", *argv, "--json", stdin=bundle_file)

    # then
    assert result.returncode == (0 if verified else 1), result.stderr
    document = json.loads(result.stdout)
    assert document["verified"] is verified
    assert (document["op"], document["seq"], document["device_id"]) == ("stage", 1, "dev-inspect")
    assert document["probe"] == {"host": "127.0.0.1", "port": 8883, "tags": [43]}
    assert [c["subjects"] for c in document["credentials"]] == [
        ["CN=CLI CA 2,O=certfleet simulation"]
    ]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\x00 this is not CBOR at all \x9f\x9f", id="garbage"),
        pytest.param(None, id="missing"),
    ],
)
def test_inspect_of_what_is_not_a_bundle_fails_with_a_message(
    env: dict[str, str], tmp_path: Path, content: bytes | None
) -> None:
    """Garbage bytes, or no file at all, fail with an error naming the problem, no traceback."""
    # given: a file of garbage, or no file
    path = tmp_path / "bundle.bin"
    if content is not None:
        path.write_bytes(content)

    # when
    result = run(env, "bundle", "inspect", str(path))

    # then
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert ("not a certfleet bundle" if content else str(path)) in result.stderr


@pytest.mark.parametrize("total", [CA_CHAIN_MAX_BYTES, CA_CHAIN_MAX_BYTES + 1])
def test_several_cas_are_one_item_refused_over_4096_bytes_before_anything_is_signed(
    env: dict[str, str], tmp_path: Path, container: Container, total: int
) -> None:
    """`--ca a --ca b` is one CA chain item: 4096 bytes is sent, 4097 exits 1 saying so,
    and no sequence number is spent on it (nothing signed, nothing published)."""
    # given: two CA files whose concatenation is `total` bytes
    generate(env)
    files = []
    for n, pem in enumerate(ca_pems_of_total(total)):
        files += ["--ca", str(tmp_path / f"ca{n}.pem")]
        (tmp_path / f"ca{n}.pem").write_text(pem)

    # when
    result = run(
        env, "device", "send", DEVICE, "--op", "stage", *files, "--tag", "43",
        "--probe", "127.0.0.1:8883", "--active", "42,43", "--wait", "0",
    )  # fmt: skip

    # then
    sequence = container.redis.get(f"certfleet:seq:{DEVICE}")
    if total <= CA_CHAIN_MAX_BYTES:
        assert result.returncode == 0, result.stderr
        assert "sent stage seq 1" in result.stderr
        assert sequence == "1"
    else:
        assert result.returncode == 1
        assert f"{total} bytes as one CA chain item" in result.stderr
        assert "Traceback" not in result.stderr
        assert sequence is None


@pytest.mark.parametrize("total", [CA_CHAIN_MAX_BYTES, CA_CHAIN_MAX_BYTES + 1])
def test_rollout_create_with_repeated_ca_refuses_an_item_over_4096_bytes(
    env: dict[str, str], tmp_path: Path, container: Container, total: int
) -> None:
    """`rollout create --ca a --ca b`: 4096 bytes of CAs is created (held), 4097 exits 1
    saying so and stores no rollout."""
    # given: one device with sec_tag 42 active, and two CA files of `total` bytes together
    container.inventory.record_states(
        [DeviceState(device_id=DEVICE, reported_at=NOW, credentials=(), active_tags=(42,))],
        received_at=NOW,
    )
    files = []
    for n, pem in enumerate(ca_pems_of_total(total)):
        files += ["--ca", str(tmp_path / f"ca{n}.pem")]
        (tmp_path / f"ca{n}.pem").write_text(pem)

    # when
    result = run(
        env, "rollout", "create", "--kind", "trust.add", *files, "--tag", "42",
        "--spare-tag", "43", "--probe", "127.0.0.1:8883", "--waves", "100%", "--hold",
    )  # fmt: skip

    # then
    if total <= CA_CHAIN_MAX_BYTES:
        assert result.returncode == 0, result.stderr
        assert container.rollouts.list_ids() == [result.stdout.strip().split()[-1]]
    else:
        assert result.returncode == 1
        assert f"{total} bytes as one CA chain item" in result.stderr
        assert container.rollouts.list_ids() == []
