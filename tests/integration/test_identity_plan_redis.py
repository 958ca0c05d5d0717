"""Beat's identity rotation planning on the real inventory and rollout store (redis-server)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState
from orchestrator.domain.rollout_states import RolloutState
from orchestrator.services.identity.plan import (
    IdentityPlanDeps,
    held_devices,
    plan_identity_rotations,
)
from tests.procs import certfleet

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _device(device_id: str, tag: int, days: float, *, at: datetime = NOW) -> DeviceState:
    """A v2 device, its CA in 42 (active), presenting `tag` whose certificate expires in `days`."""
    ca = ReportedCredential(
        sec_tag=42,
        type=CredentialType.CA_CHAIN,
        sha256="a" * 64,
        not_after=at + 400 * DAY,
        subject="CN=Root",
        issuer="CN=Root",
    )
    cert = ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CLIENT_CERT,
        sha256=sha256_hex(device_id.encode()),
        not_after=at + days * DAY,
        subject=f"CN={device_id}",
        issuer="CN=Device CA",
    )
    key = ReportedCredential(sec_tag=tag, type=CredentialType.CLIENT_KEY, sha256="e" * 64)
    return DeviceState(
        device_id=device_id,
        reported_at=at,
        credentials=(ca, cert, key),
        active_tags=(42,),
        protocol_version=2,
        identity_tag=tag,
    )


def _deps(container: Container) -> IdentityPlanDeps:
    policy = replace(container.renewal_deps().policy, auto_rollout=False, rollout_min_sample=1)
    return IdentityPlanDeps(
        rollouts=container.rollout_deps(),
        policy=policy,
        identity_tags=(44, 45),
        renew_days=30,
        probe=("127.0.0.1", 8884),
    )


def test_beat_plans_held_rollouts_once_per_tag(container: Container) -> None:
    """Two ticks: one held identity.rotate per tag of the due devices, none the second time."""
    # given
    container.inventory.record_states(
        [
            _device("a", 44, 3),
            _device("b", 44, 100),
            _device("c", 45, -1),
            _device("d", 44, 29),
        ],
        received_at=NOW,
    )
    deps = _deps(container)
    # when
    first = plan_identity_rotations(deps, now=NOW)
    second = plan_identity_rotations(deps, now=NOW + timedelta(minutes=1))
    # then
    store = container.rollouts
    found = {}
    for rollout_id in first.planned:
        rollout = store.get(rollout_id)
        assert rollout is not None
        assert rollout.state is RolloutState.CREATED
        assert rollout.spec.kind == "identity.rotate"
        found[(rollout.spec.tag, rollout.spec.spare_tag)] = sorted(store.device_states(rollout_id))
    assert found == {(44, 45): ["a", "d"], (45, 44): ["c"]}
    assert second.planned == {}
    assert second.skipped == {"held": 3}
    assert held_devices(store, ["a", "b", "c", "d"]) == {"a", "c", "d"}


def _certfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        certfleet(*args),
        check=False,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_plan_by_hand_and_beat_share_the_devices(
    container: Container, service_env: dict[str, str], tmp_path: Path
) -> None:
    """`rollout plan --select expiring:30` reads the identity index; a held rollout made by
    hand from a device list keeps its devices out of beat's next plan."""
    # given: three devices presenting 44, due now (the CLI takes the time from the clock)
    now = datetime.now(UTC)
    states = [_device(d, 44, days, at=now) for d, days in (("a", 3), ("b", 10), ("c", 200))]
    container.inventory.record_states(states, received_at=now)
    listed = tmp_path / "devices.txt"
    listed.write_text("# by hand\na\n")
    common = ("--kind", "identity.rotate", "--probe", "127.0.0.1:8884", "--json")
    # when
    planned = _certfleet(service_env, "rollout", "plan", *common, "--select", "expiring:30")
    created = _certfleet(
        service_env, "rollout", "create", *common, "--select", f"file:{listed}", "--hold"
    )
    outcome = plan_identity_rotations(_deps(container), now=now)
    # then
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["devices"] == 2
    assert created.returncode == 0, created.stderr
    by_hand = json.loads(created.stdout)["id"]
    assert sorted(container.rollouts.device_states(by_hand)) == ["a"]
    (beat,) = outcome.planned
    assert sorted(container.rollouts.device_states(beat)) == ["b"]
    assert outcome.skipped == {"held": 1}
