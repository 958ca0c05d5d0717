"""The per-batch Lua scripts against a real redis-server: a batch acts as its items one by one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.adapters.redis_connection import RedisClient, connect
from orchestrator.adapters.redis_inventory import SCRIPT_CHUNK, RedisInventory
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.adapters.redis_rollouts import TRANSITION_CHUNK, RedisRollouts
from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential
from orchestrator.domain.inventory import DeviceState, ExpiryWindow
from orchestrator.domain.reports import DeviceReport
from orchestrator.domain.rollout import RolloutSpec, parse_waves
from orchestrator.domain.rollout_aggregate import Rollout
from orchestrator.domain.rollout_changes import Change
from orchestrator.domain.rollout_states import (
    DeviceRolloutState,
    DeviceTransition,
    PushStep,
    RolloutState,
    sources_of,
)
from orchestrator.services.rollout import RolloutDeps, apply_reports
from tests.conftest import CLUSTER, flush_store

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
D = DeviceRolloutState


def _ca(tag: int, digest_char: str, days: float | None) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256=digest_char * 64,
        not_after=NOW + timedelta(days=days) if days is not None else None,
        subject=f"CN=CA {digest_char}",
        issuer=f"CN=CA {digest_char}",
    )


def _cert(tag: int, days: float) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CLIENT_CERT,
        sha256="c" * 64,
        not_after=NOW + timedelta(days=days),
        subject="CN=device",
        issuer="CN=CA",
    )


def _history() -> list[DeviceState]:
    """Reports that add, replace and drop items, move digests and tags, and arrive late."""

    def at(minutes: int) -> datetime:
        return NOW + timedelta(minutes=minutes)

    return [
        DeviceState(
            device_id="a",
            reported_at=at(0),
            credentials=(_ca(42, "a", 10), _cert(42, 5)),
            active_tags=(42,),
        ),
        DeviceState(device_id="b", reported_at=at(0), credentials=(_ca(42, "a", 300),)),
        DeviceState(
            device_id="c",
            reported_at=at(0),
            credentials=(_ca(42, "b", -3), _ca(43, "a", 20)),
            active_tags=(42, 43),
        ),
        DeviceState(
            device_id="a",
            reported_at=at(2),
            credentials=(_ca(42, "b", 40), _ca(44, "d", None)),
            active_tags=(42, 44),
        ),
        DeviceState(
            device_id="b", reported_at=at(-5), credentials=(_ca(43, "e", 1),)
        ),  # stale: older than b's report
        DeviceState(
            device_id="c", reported_at=at(3), credentials=(_ca(43, "a", 20),), active_tags=(43,)
        ),
        DeviceState(
            device_id="b", reported_at=at(4), credentials=()
        ),  # b reports an empty key store
        DeviceState(
            device_id="a", reported_at=at(1), credentials=(_ca(45, "f", 1),)
        ),  # stale again
        DeviceState(device_id="d", reported_at=at(1), credentials=(_ca(42, "a", 1),)),
    ]


def _dump(client: RedisClient) -> dict[str, Any]:
    """Every key of the inventory (every shard's) with its type and content."""
    found: dict[str, Any] = {}
    for key in sorted(client.scan_iter("certfleet:inv:*")):
        kind = client.type(key)
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        else:
            value = client.get(key)
        found[key] = (kind, value)
    return found


@pytest.fixture
def client(service_env: dict[str, str]) -> Iterator[RedisClient]:
    """A client of the flushed test store (a Redis or a cluster)."""
    c = connect(service_env["CERTFLEET_REDIS_URL"], cluster=CLUSTER)
    yield c
    c.close()


def test_a_batch_of_states_records_as_its_states_one_by_one(
    client: RedisClient, service_env: dict[str, str]
) -> None:
    """One script call over the batch leaves every key as one call per state does."""
    inventory, history = RedisInventory(client), _history()
    one_by_one = [inventory.record_states([s], received_at=NOW) for s in history]
    expected = _dump(client)
    flush_store(service_env["CERTFLEET_REDIS_URL"])

    applied = inventory.record_states(history, received_at=NOW)

    assert one_by_one == [1, 1, 1, 1, 0, 1, 1, 0, 1]
    assert applied == sum(one_by_one)
    assert _dump(client) == expected
    assert inventory.device_credentials("b") is not None
    assert inventory.device_credentials("b").credentials == ()  # type: ignore[union-attr]
    window = ExpiryWindow(now=NOW, warning=timedelta(days=100))
    assert [
        (i.device_id, i.not_after) for i in inventory.expiring_items([42], window, limit=9)
    ] == [("d", NOW + timedelta(days=1)), ("a", NOW + timedelta(days=40))]
    assert inventory.sec_tags() == [42, 43, 44]


def test_a_batch_longer_than_a_script_call_goes_in_chunks(client: RedisClient) -> None:
    """Past SCRIPT_CHUNK states, the later chunks still see the earlier ones (stale check)."""
    inventory = RedisInventory(client)
    fresh = [
        DeviceState(device_id=f"d{n}", reported_at=NOW, credentials=(_ca(42, "a", 5),))
        for n in range(SCRIPT_CHUNK + 3)
    ]
    late = DeviceState(
        device_id="d0", reported_at=NOW - timedelta(seconds=1), credentials=(_ca(42, "b", 5),)
    )

    applied = inventory.record_states([*fresh, late], received_at=NOW)

    assert applied == SCRIPT_CHUNK + 3
    assert inventory.ca_digest_counts([42]) == {42: {"a" * 64: SCRIPT_CHUNK + 3}}


def _report(device: str, phase: str, *, n: int = 0, detail: str = "") -> DeviceReport:
    return DeviceReport(
        device_id=device,
        rollout_id="ro-1",
        seq=2**63 + n,
        op="stage" if n % 2 else None,
        phase=phase,
        reason="ok",
        detail=detail,
        time=NOW + timedelta(seconds=n),
        active_tags=(42, 43) if n % 3 else None,
    )


def test_a_batch_of_reports_is_kept_and_counted_per_device(client: RedisClient) -> None:
    """Each report reads back from its device's stream as sent; phases count every one."""
    inventory = RedisInventory(client)
    reports = [
        _report(f"d{n % 7}", ("received", "staged", "rejected")[n % 3], n=n, detail='é ✓ "q"')
        for n in range(SCRIPT_CHUNK + 10)
    ]

    inventory.record_reports(reports)

    for device in ("d0", "d6"):
        sent = [r for r in reports if r.device_id == device]
        assert inventory.recent_reports(device, limit=200) == sent
    assert inventory.report_phase_counts() == {
        p: sum(r.phase == p for r in reports) for p in ("received", "staged", "rejected")
    }


def _allowed(new: str) -> frozenset[DeviceRolloutState]:
    return sources_of(DeviceRolloutState(new))


def _rollout(container: Container, devices: list[str]) -> RedisRollouts:
    rollouts = container.rollouts
    spec = RolloutSpec(
        kind="trust.add",
        ca_pems=("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",),
        tag=42,
        spare_tag=43,
        probe_host="broker.example.net",
        probe_port=8883,
        waves=parse_waves("100%"),
    )
    rollouts.create(
        Rollout.planned("ro-1", spec, seed="test", sizes=[len(devices)], now=NOW),
        waves=[devices],
        active={d: [42] for d in devices},
        actor="test",
    )
    assert rollouts.change("ro-1", Change(state=RolloutState.RUNNING))
    return rollouts


def test_one_transition_call_applies_its_moves_in_order(container: Container) -> None:
    """In one batch: a second identical move is refused, an unknown device is -1, a late one 0."""
    rollouts = _rollout(container, ["a", "b"])
    moves = [
        DeviceTransition("a", D.SENT, _allowed("sent"), "push", deadline=NOW.timestamp() + 60),
        DeviceTransition("a", D.SENT, _allowed("sent"), "push again"),
        DeviceTransition("x", D.SENT, _allowed("sent"), "not in the rollout"),
        DeviceTransition("a", D.RECEIVED, _allowed("received"), "report received"),
        DeviceTransition("b", D.STAGED, _allowed("staged"), "report staged", clear_deadline=True),
        DeviceTransition("b", D.SENT, _allowed("sent"), "late push"),
    ]

    results = rollouts.transition("ro-1", moves, now=NOW, actor="test")

    assert [(r.applied, r.previous) for r in results] == [
        (True, "pending"),
        (False, "sent"),
        (False, None),
        (True, "sent"),
        (True, "pending"),
        (False, "staged"),
    ]
    assert rollouts.wave_counts("ro-1", 1) == [{"received": 1, "staged": 1}]
    assert rollouts.overdue("ro-1", NOW.timestamp() + 61) == ["a"]
    log = [e for e in rollouts.log("ro-1") if e.get("kind") == "device"]
    assert [(e["subject"], e["from"], e["to"], e["cause"]) for e in log] == [
        ("a", "pending", "sent", "push"),
        ("a", "sent", "received", "report received"),
        ("b", "pending", "staged", "report staged"),
    ]


def test_step_bundles_land_with_their_devices_across_script_calls(container: Container) -> None:
    """Bundles of a batch longer than one script call are stored under their own devices."""
    devices = [f"d{n:04d}" for n in range(TRANSITION_CHUNK + 7)]
    rollouts = _rollout(container, devices)
    moves = [
        DeviceTransition(
            d,
            D.SENT,
            _allowed("sent"),
            "push",
            step=PushStep.STAGE if n % 3 else None,
            bundle=f"bundle-{d}".encode() + bytes([0, 255, n % 256]) if n % 3 else None,
        )
        for n, d in enumerate(devices)
    ]

    results = rollouts.transition("ro-1", moves, now=NOW, actor="test")

    assert all(r.applied for r in results)
    stored = rollouts.bundles("ro-1", devices, PushStep.STAGE)
    assert stored == {m.device_id: m.bundle for m in moves if m.bundle is not None}


def test_reports_count_each_applied_move_once_and_ignore_stale_ones(
    container: Container,
) -> None:
    """A batch's metrics add up to its applied moves; a late `staged` after health_ok is not one."""
    rollouts = _rollout(container, ["a", "b", "c"])
    rollouts.transition(
        "ro-1",
        [  # each sent a stage bundle with the seq its reports (n=1) answer
            DeviceTransition(
                d, D.SENT, _allowed("sent"), "push", step=PushStep.STAGE, bundle=b"s", seq=2**63 + 1
            )
            for d in ("a", "b", "c")
        ],
        now=NOW,
        actor="test",
    )
    metrics = RedisMetrics(container.redis)
    deps = RolloutDeps(
        store=rollouts, inventory=container.inventory, tasks=container.tasks, metrics=metrics
    )
    reports = [
        _report("a", "received", n=1),
        _report("a", "staged", n=1),
        _report("a", "health_ok", n=1),
        _report("a", "staged", n=1),  # late: a is already health_ok
        _report("b", "received", n=1),
        _report("b", "received", n=1),  # duplicate delivery
        _report("c", "rejected", n=1),
        DeviceReport(
            device_id="c",
            rollout_id="ro-other",
            seq=1,
            op=None,
            phase="received",
            reason="ok",
            detail="",
            time=NOW,
        ),
    ]

    moved = apply_reports(deps, reports, now=NOW)

    assert moved == {"ro-1"}
    assert rollouts.device_states("ro-1", ["a", "b", "c"]) == {
        "a": "health_ok",
        "b": "received",
        "c": "rejected",
    }
    counted = {
        dict(labels)["to"]: value
        for (name, labels), value in metrics.snapshot().items()
        if name == "certfleet_device_transitions_total"
    }
    assert counted == {"received": 2, "staged": 1, "health_ok": 1, "rejected": 1}
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.snapshot().items()
        if name == "certfleet_bundles_rejected_total"
    }
    assert rejected == {"ok": 1}


def test_the_expiring_list_names_each_items_subject_soonest_first(client: RedisClient) -> None:
    """Subjects come from the CA chain item, else the certificate; the limit spans the tags."""
    inventory = RedisInventory(client)
    nameless = ReportedCredential(
        sec_tag=43,
        type=CredentialType.CA_CHAIN,
        sha256="e" * 64,
        not_after=NOW + timedelta(days=2),
    )
    accented = ReportedCredential(
        sec_tag=44,
        type=CredentialType.CA_CHAIN,
        sha256="f" * 64,
        not_after=NOW - timedelta(days=1),
        subject="CN=CA ü",
    )
    inventory.record_states(
        [
            DeviceState(
                device_id="a", reported_at=NOW, credentials=(_ca(42, "a", 3), _cert(42, 1))
            ),
            DeviceState(device_id="b", reported_at=NOW, credentials=(_cert(42, 2), nameless)),
            DeviceState(device_id="c", reported_at=NOW, credentials=(accented,)),
            DeviceState(device_id="d", reported_at=NOW, credentials=(_ca(42, "d", 90),)),
        ],
        received_at=NOW,
    )
    window = ExpiryWindow(now=NOW, warning=timedelta(days=30))

    listed = inventory.expiring_items([42, 43, 44], window, limit=4)

    assert [(i.device_id, i.sec_tag, i.subject) for i in listed] == [
        ("c", 44, "CN=CA ü"),
        ("a", 42, "CN=CA a"),
        ("b", 42, "CN=device"),
        ("b", 43, None),
    ]
    assert listed[0].not_after == NOW - timedelta(days=1)
    assert [i.device_id for i in inventory.expiring_items([42, 43, 44], window, limit=2)] == [
        "c",
        "a",
    ]
