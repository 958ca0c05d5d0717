"""The inventory's identity index (client certificates, type 1) against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.bootstrap import Container
from orchestrator.domain.credentials import CredentialType, ReportedCredential, sha256_hex
from orchestrator.domain.inventory import DeviceState, ExpiryWindow
from orchestrator.services.scan import scan_fleet
from tests.conftest import flush_store
from tests.fakes import FakeInventory
from tests.procs import certfleet

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = ExpiryWindow(now=NOW, warning=timedelta(days=30))
DAY = timedelta(days=1)


def _ca(tag: int, days: float) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CA_CHAIN,
        sha256="a" * 64,
        not_after=NOW + days * DAY,
        subject="CN=Root",
        issuer="CN=Root",
    )


def _cert(tag: int, days: float, device_id: str = "dev") -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag,
        type=CredentialType.CLIENT_CERT,
        sha256=sha256_hex(f"{device_id} {tag} {days}".encode()),
        not_after=NOW + days * DAY,
        subject=f"CN={device_id}",
        issuer="CN=Device CA",
    )


def _key(tag: int) -> ReportedCredential:
    return ReportedCredential(
        sec_tag=tag, type=CredentialType.CLIENT_KEY, sha256="e" * 64, not_after=None
    )


def _state(
    device_id: str,
    *items: ReportedCredential,
    identity: int | None = 44,
    at: datetime = NOW,
) -> DeviceState:
    return DeviceState(
        device_id=device_id,
        reported_at=at,
        credentials=items,
        active_tags=(42,),
        identity_tag=identity,
    )


def _fleet() -> list[DeviceState]:
    """Five devices around the 30-day window; one without an identity tag."""
    return [
        _state("a", _ca(42, 400), _cert(44, -1, "a"), _key(44)),
        _state("b", _ca(42, 400), _cert(44, 0, "b"), _key(44)),
        _state("c", _ca(42, 400), _cert(45, 10, "c"), _key(45), identity=45),
        _state("d", _ca(42, 400), _cert(44, 200, "d"), _key(44)),
        _state("e", _ca(42, 400), identity=None),
    ]


def test_identity_tag_is_stored_with_the_state(container: Container) -> None:
    """The state's identity tag reads back per device, None where none was reported."""
    inv = container.inventory
    inv.record_states(_fleet(), received_at=NOW)

    assert inv.identity_tags_of(["a", "c", "e", "unknown"]) == {
        "a": 44,
        "c": 45,
        "e": None,
        "unknown": None,
    }
    state = inv.device_credentials("c")
    assert state is not None
    assert state.identity_tag == 45


def test_client_certificates_are_classified_apart_from_the_tag(container: Container) -> None:
    """The identity index holds type 1 only: counts, the listed items and their subjects."""
    inv = container.inventory
    inv.record_states(_fleet(), received_at=NOW)

    assert inv.identity_expiry_counts([42, 44, 45], WINDOW) == {
        42: (0, 0, 0),
        44: (1, 1, 1),
        45: (0, 1, 0),
    }
    listed = inv.expiring_identity_items([44, 45], WINDOW, limit=10)
    assert [(i.device_id, i.sec_tag, i.subject) for i in listed] == [
        ("a", 44, "CN=a"),
        ("b", 44, "CN=b"),
        ("c", 45, "CN=c"),
    ]
    assert [i.device_id for i in inv.expiring_identity_items([44, 45], WINDOW, limit=2)] == [
        "a",
        "b",
    ]
    assert inv.expiring_identities(44, NOW + 30 * DAY) == ["a", "b"]
    assert inv.expiring_identities(45, NOW + 30 * DAY) == ["c"]


def test_a_newer_state_moves_the_identity_and_an_older_one_changes_nothing(
    container: Container,
) -> None:
    """After a rotation to 45 and the retire of 44, tag 44's index forgets the device."""
    inv = container.inventory
    inv.record_states([_state("a", _cert(44, 5, "a"), _key(44))], received_at=NOW)
    later = NOW + timedelta(minutes=5)
    rotated = _state("a", _cert(45, 365, "a"), _key(45), identity=45, at=later)
    assert inv.record_states([rotated], received_at=later) == 1

    stale = _state("a", _cert(44, 5, "a"), _key(44), identity=44, at=NOW)
    assert inv.record_states([stale], received_at=later) == 0

    assert inv.identity_tags_of(["a"]) == {"a": 45}
    assert inv.expiring_identities(44, NOW + 400 * DAY) == []
    assert inv.expiring_identities(45, NOW + 400 * DAY) == ["a"]
    assert inv.identity_expiry_counts([44, 45], WINDOW) == {44: (0, 0, 0), 45: (0, 0, 1)}


def test_mid_rotation_only_the_certificate_presented_is_an_identity(
    container: Container,
) -> None:
    """Committed to 45 with the old certificate still in 44: indexed in 45 alone; a device
    naming no identity tag is indexed by every client certificate it holds."""
    inv = container.inventory
    inv.record_states(
        [
            _state("a", _cert(44, 5, "a"), _key(44), _cert(45, 365, "a"), _key(45), identity=45),
            _state("old", _cert(42, 5, "old"), _cert(43, 7, "old"), identity=None),
        ],
        received_at=NOW,
    )

    assert inv.expiring_identities(44, NOW + 400 * DAY) == []
    assert inv.expiring_identities(45, NOW + 400 * DAY) == ["a"]
    assert inv.expiring_identities(42, NOW + 30 * DAY) == ["old"]
    assert inv.expiring_identities(43, NOW + 30 * DAY) == ["old"]
    fake = FakeInventory()
    fake.record_states(
        [
            _state("a", _cert(44, 5, "a"), _key(44), _cert(45, 365, "a"), _key(45), identity=45),
            _state("old", _cert(42, 5, "old"), _cert(43, 7, "old"), identity=None),
        ],
        received_at=NOW,
    )
    for tag in (42, 43, 44, 45):
        assert fake.expiring_identities(tag, NOW + 400 * DAY) == inv.expiring_identities(
            tag, NOW + 400 * DAY
        )


def test_a_certificate_without_not_after_leaves_the_index(container: Container) -> None:
    """A type-1 item reported without a notAfter is held but not indexed for expiry."""
    inv = container.inventory
    inv.record_states([_state("a", _cert(44, 5, "a"))], received_at=NOW)
    unreadable = ReportedCredential(
        sec_tag=44, type=CredentialType.CLIENT_CERT, sha256="f" * 64, not_after=None
    )
    later = NOW + timedelta(minutes=1)
    inv.record_states([_state("a", unreadable, at=later)], received_at=later)

    assert inv.expiring_identities(44, NOW + 400 * DAY) == []
    assert inv.sec_tags() == [44]


def test_the_fake_answers_as_redis_does(container: Container) -> None:
    """FakeInventory, which the unit tests use, gives the same identity answers."""
    fake = FakeInventory()
    for store in (container.inventory, fake):
        store.record_states(_fleet(), received_at=NOW)
        store.record_states(
            [_state("d", _cert(45, 3, "d"), identity=45, at=NOW + DAY)], received_at=NOW + DAY
        )

    devices = ["a", "b", "c", "d", "e"]
    assert container.inventory.identity_tags_of(devices) == fake.identity_tags_of(devices)
    for tag in (44, 45):
        until = NOW + 30 * DAY
        assert container.inventory.expiring_identities(tag, until) == fake.expiring_identities(
            tag, until
        )
    assert container.inventory.identity_expiry_counts(
        [44, 45], WINDOW
    ) == fake.identity_expiry_counts([44, 45], WINDOW)
    assert container.inventory.expiring_identity_items(
        [44, 45], WINDOW, limit=10
    ) == fake.expiring_identity_items([44, 45], WINDOW, limit=10)


def test_the_scan_summary_round_trips_with_identities(container: Container) -> None:
    """`scan_fleet` stores the identities; `last_summary` reads them back unchanged."""
    inv = container.inventory
    inv.record_states(_fleet(), received_at=NOW)

    summary = scan_fleet(
        inv, container.library, now=NOW, warning_days=30, list_limit=10, identity_days=5
    )

    assert summary.identities is not None
    assert summary.identities.renew_days == 5
    assert {t: c.as_json() for t, c in summary.identities.by_tag.items()} == {
        44: {"expired": 1, "expiring": 1, "ok": 1},
        45: {"expired": 0, "expiring": 0, "ok": 1},
    }
    assert inv.last_summary() == summary


def test_fleet_status_shows_identities_by_tag(
    container: Container, service_env: dict[str, str]
) -> None:
    """`fleet status --json` adds `identities` and keeps its keys; the table shows them."""
    inv = container.inventory
    inv.record_states(_fleet(), received_at=NOW)
    scan_fleet(inv, container.library, now=NOW, warning_days=30, list_limit=10, identity_days=30)
    env = {**os.environ, **service_env, "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = certfleet("fleet", "status", *args)
        return subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=60
        )

    as_json, table = run("--json"), run()

    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert {"by_tag", "expiring", "expiring_total", "unknown_digests", "rejected_reports"} <= set(
        status
    )
    identities = status["identities"]
    assert identities["renew_days"] == 30
    assert identities["by_tag"] == {
        "44": {"ok": 1, "expiring": 1, "expired": 1},
        "45": {"ok": 0, "expiring": 1, "expired": 0},
    }
    assert [i["device_id"] for i in identities["expiring"]] == ["a", "b", "c"]
    assert identities["expiring_total"] == 3
    assert table.returncode == 0, table.stderr
    assert "Device identities" in table.stdout
    assert "CN=c" in table.stdout


def _identity_keys(container: Container) -> dict[str, object]:
    """The identity index's entries and every device's identity tag, as stored."""
    inv = container.inventory
    window = ExpiryWindow(now=NOW, warning=1000 * DAY)
    return {
        "idexp": [
            (i.sec_tag, i.device_id, i.not_after)
            for i in inv.expiring_identity_items([44, 45], window, limit=100)
        ],
        "identity": inv.identity_tags_of(["a", "b"]),
    }


def test_a_batch_moves_identities_as_its_states_one_by_one(container: Container) -> None:
    """Rotations, a stale state and a dropped certificate in one batch: as one call each."""
    minute = timedelta(minutes=1)
    history = [
        _state("a", _cert(44, 5, "a"), _key(44)),
        _state("b", _cert(45, 50, "b"), _key(45), identity=45),
        _state("a", _cert(44, 5, "a"), _key(44), _cert(45, 365, "a"), _key(45), at=NOW + minute),
        _state("a", _cert(45, 365, "a"), _key(45), identity=45, at=NOW + 2 * minute),
        _state("a", _cert(44, 5, "a"), _key(44), at=NOW + minute),  # stale
        _state("b", identity=None, at=NOW + minute),  # b's key store emptied
    ]
    inv = container.inventory
    one_by_one = [inv.record_states([s], received_at=NOW) for s in history]
    expected = _identity_keys(container)
    flush_store(container.settings.redis_url)

    applied = inv.record_states(history, received_at=NOW)

    assert one_by_one == [1, 1, 1, 1, 0, 1]
    assert applied == 5
    assert _identity_keys(container) == expected
    assert expected == {
        "idexp": [(45, "a", NOW + 365 * DAY)],
        "identity": {"a": 45, "b": None},
    }


def test_client_keys_are_kept_for_good_first_device_first(container: Container) -> None:
    """A reported key is held by the first device that reported it, also once no device
    holds it any more; a stale state records no key."""
    inv, fake = container.inventory, FakeInventory()
    minute = timedelta(minutes=1)
    k1, k2, k3 = (sha256_hex(name.encode()) for name in ("k1", "k2", "k3"))
    for store in (inv, fake):
        store.record_states(
            [_state("a", _cert(44, 5, "a")), _state("b", _cert(44, 5, "b"))],
            received_at=NOW,
            keys=[[k1], [k2]],
        )
        store.record_states(  # a rotated: k3 now; b reports a's old key as well
            [
                _state("a", _cert(45, 365, "a"), identity=45, at=NOW + minute),
                _state("b", _cert(44, 5, "b"), at=NOW + minute),
            ],
            received_at=NOW + minute,
            keys=[[k3], [k2, k1]],
        )
        stale = sha256_hex(b"stale")
        store.record_states([_state("a", at=NOW)], received_at=NOW + minute, keys=[[stale]])

    for store in (inv, fake):
        assert store.key_holders([k1, k2, k3, stale, "0" * 64]) == {k1: "a", k2: "b", k3: "a"}
    assert inv.key_holders([]) == {}
    with pytest.raises(ValueError, match="key lists"):
        inv.record_states([_state("a")], received_at=NOW, keys=[[k1], [k2]])
