"""The bundle protocol between the orchestrator and a simulated device, over a real Mosquitto,
with real TLS servers for the health probe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters.file_signer import FileSigner, generate_key_file
from orchestrator.protocol import CredentialType
from orchestrator.protocol.bundle import Credential, Probe, Reason, SignerKey
from orchestrator.protocol.report import Phase
from orchestrator.services.bundles import BundleBody, stage_body
from simulator.agent import DeviceAgent
from simulator.pki import IssuedCA, IssuedCert, issue_server_cert, make_ca
from simulator.services import LocalService
from tests.integration.devices import (
    Orchestrator,
    final_report,
    in_future,
    make_device,
    running,
)
from tests.tlsserver import tls_server

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DONE = {Phase.HEALTH_OK, Phase.HEALTH_FAILED, Phase.REJECTED, Phase.FALLBACK}


@dataclass(frozen=True)
class Pki:
    ca1: IssuedCA
    ca2: IssuedCA
    expired_ca: IssuedCA
    server1: IssuedCert
    server2: IssuedCert
    expired_server: IssuedCert


@pytest.fixture(scope="module")
def pki() -> Pki:
    """CA1 (live), CA2 (its successor), an expired CA, and a server cert under each."""
    ca1 = make_ca(
        "Fleet CA 1", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=60)
    )
    ca2 = make_ca(
        "Fleet CA 2", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=800)
    )
    old = make_ca(
        "Fleet CA 0", not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=2)
    )
    window = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=30)}
    return Pki(
        ca1=ca1,
        ca2=ca2,
        expired_ca=old,
        server1=issue_server_cert(ca1, **window),
        server2=issue_server_cert(ca2, **window),
        expired_server=issue_server_cert(
            old, not_before=NOW - timedelta(days=700), not_after=NOW + timedelta(days=30)
        ),
    )


def _server(cert: IssuedCert) -> tuple[bytes, bytes]:
    return cert.pem, cert.key_pem


def _stage(ca: IssuedCA, port: int, *, commit_in: float = 60, tag: int = 43) -> BundleBody:
    return stage_body(
        ca_pems=[ca.pem.decode()],
        tag=tag,
        probe_host="127.0.0.1",
        probe_port=port,
        probe_tags=[tag],
        active_after=[42, tag],
        commit_by=in_future(commit_in),
    )


def _holds(agent: DeviceAgent, tag: int) -> bool:
    return agent.modem.exists(tag, CredentialType.CA_CHAIN)


def test_good_ca_stages_probes_healthy_and_commits(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki
) -> None:
    """A CA that validates the server's chain ends health_ok, then committed with [42, 43]."""

    async def scenario() -> None:
        agent = make_device("dev-good", pki.ca1.pem, orchestrator, mqtt_service)
        with tls_server(*_server(pki.server2)) as (_, port):
            async with running(agent):
                stage = await orchestrator.send("dev-good", _stage(pki.ca2, port))
                health = await final_report(agent, stage, DONE)
                assert (health.phase, health.reason) == (Phase.HEALTH_OK, Reason.OK)
                assert [r.phase for r in agent.reports if r.seq == stage.bundle.seq] == [
                    Phase.RECEIVED,
                    Phase.STAGED,
                    Phase.HEALTH_OK,
                ]
                assert agent.active_tags == [42], "nothing is live before the commit"

                commit = await orchestrator.send("dev-good", BundleBody(op="commit", tag=43))
                done = await final_report(agent, commit, {Phase.COMMITTED, Phase.REJECTED})
        assert done.phase is Phase.COMMITTED
        assert agent.active_tags == [42, 43]
        assert agent.modem.read(43, CredentialType.CA_CHAIN) == pki.ca2.pem

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ca_name", "reason"), [("ca1", Reason.UNKNOWN_CA), ("expired_ca", Reason.EXPIRED)]
)
def test_a_ca_that_cannot_validate_ends_health_failed_and_keeps_the_old_trust(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki, ca_name: str, reason: Reason
) -> None:
    """A wrong CA fails with unknown_ca, an expired one with expired; nothing else changes."""
    served = pki.expired_server if ca_name == "expired_ca" else pki.server2

    async def scenario() -> None:
        agent = make_device(f"dev-{ca_name}", pki.ca1.pem, orchestrator, mqtt_service)
        before = agent.modem.items()
        with tls_server(*_server(served)) as (_, port):
            async with running(agent):
                ca = getattr(pki, ca_name)
                stage = await orchestrator.send(agent.device_id, _stage(ca, port))
                failed = await final_report(agent, stage, DONE)
                assert (failed.phase, failed.reason) == (Phase.HEALTH_FAILED, reason)
                await asyncio.sleep(0.5)  # the device discards the staged item offline
        assert agent.active_tags == [42]
        assert agent.modem.items() == before

    asyncio.run(scenario())


def test_no_commit_before_the_deadline_falls_back(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki
) -> None:
    """A healthy stage whose commit never comes is discarded by the device: fallback."""

    async def scenario() -> None:
        agent = make_device("dev-late", pki.ca1.pem, orchestrator, mqtt_service)
        with tls_server(*_server(pki.server2)) as (_, port):
            async with running(agent):
                stage = await orchestrator.send(agent.device_id, _stage(pki.ca2, port, commit_in=2))
                fallback = await final_report(agent, stage, {Phase.FALLBACK, Phase.REJECTED})
                late = await orchestrator.send(agent.device_id, BundleBody(op="commit", tag=43))
                refused = await final_report(agent, late, {Phase.REJECTED, Phase.COMMITTED})
        assert (fallback.phase, fallback.reason) == (Phase.FALLBACK, Reason.COMMIT_TIMEOUT)
        assert (refused.phase, refused.reason) == (Phase.REJECTED, Reason.NOTHING_STAGED)
        assert agent.active_tags == [42]
        assert not _holds(agent, 43)

    asyncio.run(scenario())


def test_rollback_after_commit_restores_the_previous_tags(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki
) -> None:
    """A committed device told to roll back returns to [42] and deletes the new tag."""

    async def scenario() -> None:
        agent = make_device("dev-undo", pki.ca1.pem, orchestrator, mqtt_service)
        with tls_server(*_server(pki.server2)) as (_, port):
            async with running(agent):
                stage = await orchestrator.send(agent.device_id, _stage(pki.ca2, port))
                await final_report(agent, stage, DONE)
                commit = await orchestrator.send(agent.device_id, BundleBody(op="commit", tag=43))
                await final_report(agent, commit, {Phase.COMMITTED})
                rollback = await orchestrator.send(agent.device_id, BundleBody(op="rollback"))
                done = await final_report(agent, rollback, {Phase.ROLLED_BACK, Phase.REJECTED})
        assert done.phase is Phase.ROLLED_BACK
        assert agent.active_tags == [42]
        assert not _holds(agent, 43)

    asyncio.run(scenario())


def test_retire_deletes_the_old_tag_after_a_replace(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki
) -> None:
    """After committing CA2 in 43, retiring 42 leaves the device trusting CA2 only."""

    async def scenario() -> None:
        agent = make_device("dev-retire", pki.ca1.pem, orchestrator, mqtt_service)
        with tls_server(*_server(pki.server2)) as (_, port):
            async with running(agent):
                stage = await orchestrator.send(agent.device_id, _stage(pki.ca2, port))
                await final_report(agent, stage, DONE)
                commit = await orchestrator.send(agent.device_id, BundleBody(op="commit", tag=43))
                await final_report(agent, commit, {Phase.COMMITTED})
                retire = await orchestrator.send(
                    agent.device_id, BundleBody(op="retire", tags=(42,), active=(43,))
                )
                done = await final_report(agent, retire, {Phase.RETIRED, Phase.REJECTED})
        assert done.phase is Phase.RETIRED
        assert agent.active_tags == [43]
        assert [(i.sec_tag, i.type) for i in agent.modem.items()] == [(43, CredentialType.CA_CHAIN)]

    asyncio.run(scenario())


def test_refused_bundles_each_say_why_and_write_nothing(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki, tmp_path: Path
) -> None:
    """Replay, another device's bundle, an expired one, an unknown signer, a CA over 4 KB."""
    stranger_key = tmp_path / "stranger.pem"
    generate_key_file(stranger_key)
    stranger = FileSigner(stranger_key)
    big_pem = pki.ca2.pem.decode() + "\n" * 4000

    async def scenario() -> None:
        agent = make_device("dev-guard", pki.ca1.pem, orchestrator, mqtt_service)
        before = agent.modem.items()
        with tls_server(*_server(pki.server2)) as (_, port):
            async with running(agent):
                good = orchestrator.issue(agent.device_id, _stage(pki.ca2, port))
                await asyncio.to_thread(orchestrator.publish, good)
                await final_report(agent, good, DONE)
                rollback = await orchestrator.send(agent.device_id, BundleBody(op="rollback"))
                await final_report(agent, rollback, {Phase.ROLLED_BACK})
                await asyncio.sleep(0.5)
                before = agent.modem.items()
                attempts = {
                    Reason.REPLAY: good,
                    Reason.WRONG_DEVICE: orchestrator.issue("dev-other", _stage(pki.ca2, port)),
                    Reason.BUNDLE_EXPIRED: orchestrator.issue(
                        agent.device_id,
                        _stage(pki.ca2, port),
                        ttl=60,
                        now=datetime.now(UTC) - timedelta(seconds=120),
                    ),
                    Reason.UNKNOWN_KEY: orchestrator.issue(
                        agent.device_id, _stage(pki.ca2, port), signer=stranger
                    ),
                    # Built by hand: certfleet refuses to build it (stage_body), the
                    # device must refuse it all the same.
                    Reason.TOO_LARGE: orchestrator.issue(
                        agent.device_id,
                        BundleBody(
                            op="stage",
                            tag=43,
                            credentials=(Credential(CredentialType.CA_CHAIN, big_pem),),
                            probe=Probe(host="127.0.0.1", port=port, tags=(43,)),
                            active=(42, 43),
                            commit_by=int(in_future(60).timestamp()),
                        ),
                    ),
                }
                for reason, issued in attempts.items():
                    since = len(agent.reports)
                    if reason is not Reason.WRONG_DEVICE:
                        await asyncio.to_thread(orchestrator.publish, issued)
                    else:
                        await asyncio.to_thread(
                            orchestrator.session.publish_bundle,
                            agent.device_id,
                            issued.data,
                            expiry_seconds=60,
                        )
                    rejected = await final_report(
                        agent, issued, {Phase.REJECTED, Phase.RECEIVED}, since=since
                    )
                    assert (rejected.phase, rejected.reason) == (Phase.REJECTED, reason), reason
        assert agent.modem.items() == before
        assert agent.active_tags == [42]

    asyncio.run(scenario())


def test_the_signing_key_rotates_in_the_field(
    orchestrator: Orchestrator, mqtt_service: LocalService, pki: Pki, tmp_path: Path
) -> None:
    """trust-signer, signed by the old root key, makes the device trust the new key and drop
    the old: a bundle under the old root's delegation is then refused (unknown_key)."""
    new_key_file = tmp_path / "next-key.pem"
    generate_key_file(new_key_file)
    new_signer = FileSigner(new_key_file)
    old_kid = orchestrator.root.key_id
    point = new_signer.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    async def scenario() -> None:
        agent = make_device("dev-rotate", pki.ca1.pem, orchestrator, mqtt_service)
        async with running(agent):
            rotate = await orchestrator.send(
                agent.device_id,
                BundleBody(
                    op="trust-signer",
                    signer=SignerKey(kid=new_signer.key_id, public_point=point),
                    retire_kid=old_kid,
                ),
                signer=orchestrator.root,
            )
            rotated = await final_report(agent, rotate, {Phase.COMMITTED, Phase.REJECTED})
            assert rotated.phase is Phase.COMMITTED
            old = await orchestrator.send(agent.device_id, BundleBody(op="rollback"))
            refused = await final_report(agent, old, {Phase.REJECTED, Phase.ROLLED_BACK})
            new = await orchestrator.send(
                agent.device_id, BundleBody(op="rollback"), signer=new_signer
            )
            accepted = await final_report(agent, new, {Phase.REJECTED, Phase.ROLLED_BACK})
        assert (refused.phase, refused.reason) == (Phase.REJECTED, Reason.UNKNOWN_KEY)
        # the new key's bundle passed the signature checks: refused only at the
        # operation check, with nothing to undo, and naming its seq
        assert (accepted.phase, accepted.reason, accepted.seq) == (
            Phase.REJECTED,
            Reason.NOTHING_TO_UNDO,
            new.bundle.seq,
        )
        assert set(agent.signers) == {new_signer.key_id}

    asyncio.run(scenario())
