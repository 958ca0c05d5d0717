"""Device identity rotation end to end (issue 14): real Redis, Mosquitto with the shipped
mutual-TLS device listener and `crlfile`, a real `cfssl serve`, certfleet's listener, Celery
worker and beat, and 130 devices of `certfleet simulate --tls` presenting factory
certificates that CFSSL signed and that expire in 10 days (`tests/e2e/identity_stack.py`).

Each scenario runs its rollout in a module-scoped fixture and its test checks the outcome,
so the last test (nothing recorded holds a private key) sees every scenario's records
whatever runs first.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters.redis_metrics import RedisMetrics
from simulator.pki import make_ca
from tests.cfssl import cfssl_installed
from tests.e2e.identity_fleets import NEW_TAG, OLD_TAG, FleetSpec
from tests.e2e.identity_stack import IdentityStack, running_identity_stack
from tests.e2e.recorded import find_leaks, redis_repr
from tests.mtls import try_connect
from tests.procs import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not cfssl_installed(), reason="cfssl is not installed (golang-cfssl)"),
]

ROTATE = FleetSpec("rot-", 100)
REFUSED_CSRS = {
    1: "csr_wrong_subject",
    2: "csr_key_reused",
    3: "csr_bad_signature",
    4: "csr_bad_attestation",
    5: "csr_key_reused",
}
CSRS = FleetSpec(
    "csr-",
    10,
    {
        1: ["csr-wrong-subject"],
        2: ["csr-reused-key"],
        3: ["csr-bad-signature"],
        4: ["attestation-forged"],
        5: ["csr-foreign-key"],
    },
)
DOWN = FleetSpec("down-", 10)
CANARY = FleetSpec("bad-", 10)
FLEETS = (ROTATE, CSRS, DOWN, CANARY)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStack]:
    with running_identity_stack(tmp_path_factory.mktemp("identity"), FLEETS) as s:
        yield s


def _policy(*waves: str, timeout: int = 60, max_failure: str = "10%") -> tuple[str, ...]:
    return (
        "--waves",
        ",".join(waves),
        "--bake",
        "2",
        "--advance",
        "auto",
        "--max-failure",
        max_failure,
        "--min-sample",
        "1",
        "--device-timeout",
        str(timeout),
    )


def _summary(status: dict[str, Any]) -> str:
    """A rollout's state and the counts that are not zero, for an assertion's message."""
    totals = {state: n for state, n in status["totals"].items() if n}
    return f"{status['state']} {totals} failed: {status.get('failed_devices')}"


def _crl_serials(stack: IdentityStack) -> set[int]:
    crl = x509.load_pem_x509_crl(stack.broker.pki.crl_file.read_bytes())
    return {revoked.serial_number for revoked in crl}


def _cfssl_serials_for(stack: IdentityStack, device: str) -> set[int]:
    """The serials of every certificate CFSSL signed for `CN=device`."""
    with sqlite3.connect(stack.cfssl.db_file) as db:
        rows = db.execute("SELECT pem FROM certificates").fetchall()
    pems = [p.encode() if isinstance(p, str) else bytes(p) for (p,) in rows]
    certificates = [x509.load_pem_x509_certificate(p) for p in pems]
    return {c.serial_number for c in certificates if c.subject.rfc4514_string() == f"CN={device}"}


def _keeps_factory_identity(stack: IdentityStack, device: str) -> None:
    """Inventory: the identity tag in use is still 44 with the factory certificate; the
    broker still accepts that certificate and key."""
    assert stack.identity_tag(device) == OLD_TAG, device
    certificate = stack.client_certificate(device, OLD_TAG)
    assert certificate is not None, device
    assert certificate.serial_number == stack.identities[device].serial, device
    factory = stack.identities[device]
    assert try_connect(stack.broker, factory.cert_pem, factory.key_pem, client_id=device) == (
        "accepted"
    ), device


# -- 1. 100 devices rotate to CFSSL certificates ---------------------------------------------


@pytest.fixture(scope="module")
def rotation(stack: IdentityStack) -> dict[str, Any]:
    """Waves 10%,50%,100% of the 100 `rot-` devices; then the broker restarts, so every
    device connects again under the CRL that revokes the old certificates."""
    rollout_id = stack.rotate(ROTATE.ids(), *_policy("10%", "50%", "100%"))
    status = stack.wait_final(rollout_id, timeout=150)
    old = {d: stack.identities[d].serial for d in ROTATE.ids()}
    # The revocations and the CRL run after each retire; certfleet asks for a reload.
    wait_until(
        lambda: set(old.values()) <= _crl_serials(stack),
        timeout=60,
        what="every old certificate in the CRL",
    )
    wait_until(
        lambda: set(old.values()) <= set(stack.cfssl.revocations()),
        timeout=60,
        what="every old certificate revoked at CFSSL",
    )
    reloads = stack.crl_reloads()
    states_before = len(stack.witness.seen())
    mark = stack.restart_broker()
    wait_until(
        lambda: set(ROTATE.ids()) <= stack.connected_since(mark),
        timeout=90,
        what="every device connected to the restarted broker",
    )
    return {
        "id": rollout_id,
        "status": status,
        "old": old,
        "reloads": reloads,
        "mark": mark,
        "states_before": states_before,
    }


def test_100_devices_rotate_to_cfssl_certificates_and_reconnect_with_them(
    stack: IdentityStack, rotation: dict[str, Any]
) -> None:
    status = rotation["status"]
    assert status["state"] == "completed", _summary(status)
    assert [w["size"] for w in status["waves"]] == [10, 40, 50]
    assert status["totals"]["retired"] == ROTATE.count, status["totals"]
    assert set(stack.device_states(rotation["id"]).values()) == {"retired"}
    issued = stack.cfssl.issued()
    device_ca = stack.broker.pki.device_ca.certificate.subject
    for device in ROTATE.ids():
        factory = x509.load_pem_x509_certificate(stack.identities[device].cert_pem)
        assert rotation["old"][device] in issued, device  # CFSSL signed the factory one too
        left = factory.not_valid_after_utc - datetime.now(UTC)
        assert timedelta(days=9) < left <= timedelta(days=10), (device, left)
        assert stack.identity_tag(device) == NEW_TAG, device
        assert stack.client_certificate(device, OLD_TAG) is None, device
        new = stack.client_certificate(device, NEW_TAG)
        assert new is not None, device
        assert new.serial_number in issued, device
        assert new.serial_number != rotation["old"][device], device
        assert new.issuer == device_ca, device
        assert new.subject.rfc4514_string() == f"CN={device}", device
        assert new.not_valid_after_utc > datetime.now(UTC) + timedelta(days=300), device


def test_the_old_certificates_are_revoked_and_refused_by_the_broker(
    stack: IdentityStack, rotation: dict[str, Any]
) -> None:
    old_serials = set(rotation["old"].values())
    assert old_serials <= _crl_serials(stack)
    revocations = stack.cfssl.revocations()
    assert all(revocations[s] == 4 for s in old_serials)  # 4: superseded
    assert rotation["reloads"] >= 1, "certfleet asked for a CRL reload (SIGHUP)"
    for device in ROTATE.ids():
        factory = stack.identities[device]
        refused = try_connect(stack.broker, factory.cert_pem, factory.key_pem, client_id=device)
        assert refused == "certificate_revoked", (device, refused)


def test_after_the_restart_every_device_is_known_by_its_new_certificate(
    stack: IdentityStack, rotation: dict[str, Any]
) -> None:
    """The broker, reading a CRL of every old certificate, let each device in under its own
    name (use_identity_as_username) and delivered its fresh state naming identity tag 45:
    only an unrevoked certificate of the device CA for that CN gets that far, and the device
    holds no other (its old one is retired, and refused above)."""
    assert set(ROTATE.ids()) <= stack.connected_since(rotation["mark"])

    def fresh_states() -> set[str] | None:
        seen: set[str] = set()
        for topic, payload in stack.witness.seen()[rotation["states_before"] :]:
            parts = topic.split("/")
            if (
                len(parts) == 3
                and parts[2] == "state"
                and parts[1].startswith(ROTATE.prefix)
                and json.loads(payload).get("identity_tag") == NEW_TAG
            ):
                seen.add(parts[1])
        return seen if seen >= set(ROTATE.ids()) else None

    wait_until(fresh_states, timeout=30, what="a fresh state from every device")
    # And the broker takes the new certificate with the key the modem made for it (a few
    # devices: each such connection takes over the device's session for a moment).
    for device in ROTATE.ids()[:3]:
        new = stack.client_certificate(device, NEW_TAG)
        assert new is not None, device
        key_pem = stack.modem_key_of(new)
        assert key_pem is not None, device
        cert_pem = new.public_bytes(serialization.Encoding.PEM)
        assert try_connect(stack.broker, cert_pem, key_pem, client_id=device) == "accepted"


# -- 2. refused CSRs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refused(stack: IdentityStack) -> dict[str, Any]:
    rollout_id = stack.rotate(CSRS.ids(), *_policy("100%", max_failure="50%"))
    return {"id": rollout_id, "status": stack.wait_final(rollout_id, timeout=90)}


def _refused_with_reason(stack: IdentityStack, refused: dict[str, Any], n: int) -> None:
    """Device n ended csr_refused, its reason in the audit log; CFSSL signed nothing for it;
    it keeps its factory identity."""
    device = CSRS.ids()[n]
    state = stack.device_states(refused["id"])[device]
    assert state == "csr_refused", (device, state)
    log = stack.log(refused["id"])
    causes = [e["cause"] for e in log if e["subject"] == device and e["to"] == "csr_refused"]
    assert len(causes) == 1, (device, causes)
    assert REFUSED_CSRS[n] in causes[0], (device, causes)
    assert stack.client_certificate(device, NEW_TAG) is None, device
    assert _cfssl_serials_for(stack, device) == {stack.identities[device].serial}, device
    _keeps_factory_identity(stack, device)


def test_csrs_with_a_wrong_subject_a_reused_key_or_a_bad_signature_get_no_certificate(
    stack: IdentityStack, refused: dict[str, Any]
) -> None:
    """A wrong subject, the key of the device's own certificate, a broken self-signature
    or an attestation by another key: csr_refused with that reason, the old identity kept;
    the devices without a fault rotate."""
    for n in (1, 2, 3, 4):
        _refused_with_reason(stack, refused, n)
    states = stack.device_states(refused["id"])
    for n, device in enumerate(CSRS.ids()):
        if n not in REFUSED_CSRS:
            assert states[device] == "retired", (device, states[device])
            assert stack.identity_tag(device) == NEW_TAG, device


def test_a_csr_for_the_key_of_another_devices_certificate_gets_no_certificate(
    stack: IdentityStack, refused: dict[str, Any]
) -> None:
    """Device 5 answers its keygen with device 6's factory key (a key certfleet has seen in
    device 6's certificate): refused as reused. The rollout then ends with exactly the
    refused devices unconfirmed (it completes only when every device retired)."""
    _refused_with_reason(stack, refused, 5)
    status = refused["status"]
    assert status["state"] == "completed_with_timeouts", _summary(status)
    refused_ids = {CSRS.ids()[n] for n in REFUSED_CSRS}
    assert set(status["unconfirmed"]) == refused_ids, _summary(status)
    assert all(w["state"] == "passed" for w in status["waves"]), status["waves"]
    assert status["totals"]["csr_refused"] == len(REFUSED_CSRS)
    assert status["totals"]["retired"] == CSRS.count - len(REFUSED_CSRS)
    counted = {
        dict(labels)["reason"]: value
        for (name, labels), value in RedisMetrics(stack.redis).snapshot().items()
        if name == "certfleet_csr_refused_total"
    }
    expected = Counter(REFUSED_CSRS.values())
    assert counted == {reason: float(n) for reason, n in expected.items()}, counted


# -- 4. the issuer down for the whole wave -----------------------------------------------------


@pytest.fixture(scope="module")
def issuer_down(stack: IdentityStack) -> dict[str, Any]:
    """CFSSL stopped: the rollout runs into its device timeout; CFSSL back: a new rollout."""
    stack.cfssl.stop()
    try:
        first = stack.rotate(DOWN.ids(), *_policy("100%", timeout=20, max_failure="100%"))
        first_status = stack.wait_final(first, timeout=120)
        first_states = stack.device_states(first)
        first_log = stack.log(first)
        kept = {d: stack.identity_tag(d) for d in DOWN.ids()}
        kept_serials = {
            d: getattr(stack.client_certificate(d, OLD_TAG), "serial_number", None)
            for d in DOWN.ids()
        }
    finally:
        stack.cfssl.start()
    second = stack.rotate(DOWN.ids(), *_policy("100%"))
    return {
        "first": first,
        "first_status": first_status,
        "first_states": first_states,
        "first_log": first_log,
        "kept": kept,
        "kept_serials": kept_serials,
        "second_status": stack.wait_final(second, timeout=120),
    }


def test_the_issuer_down_times_out_every_device_on_its_old_identity_then_a_new_rollout_finishes(
    stack: IdentityStack, issuer_down: dict[str, Any]
) -> None:
    first = issuer_down["first_status"]
    assert first["state"] in {"completed_with_timeouts", "rolled_back"}, _summary(first)
    assert sum(first["totals"].values()) == DOWN.count
    assert set(issuer_down["first_states"]) == set(DOWN.ids())
    assert set(issuer_down["first_states"].values()) <= {"timed_out", "rolled_back"}, issuer_down[
        "first_states"
    ]
    kept_csrs = stack.redis.hkeys(f"certfleet:ro:{{{issuer_down['first']}}}:csr")
    assert set(kept_csrs) == set(DOWN.ids()), "every device's CSR kept while the issuer was away"
    reached = {(e["subject"], e["to"]) for e in issuer_down["first_log"] if e["kind"] == "device"}
    for device in DOWN.ids():
        assert (device, "csr") in reached, device
        assert (device, "timed_out") in reached, device
        assert (device, "issued") not in reached, device
        assert (device, "csr_refused") not in reached, device
    assert set(issuer_down["kept"].values()) == {OLD_TAG}
    assert issuer_down["kept_serials"] == {d: stack.identities[d].serial for d in DOWN.ids()}
    worker_logs = "".join(p.read_text(errors="replace") for p in stack.logs.glob("worker*.log"))
    assert re.search(r"issue_identities\[[^\]]+\] retry", worker_logs), "the issuer was retried"
    second = issuer_down["second_status"]
    assert second["state"] == "completed", second
    assert second["totals"]["retired"] == DOWN.count
    for device in DOWN.ids():
        assert stack.identity_tag(device) == NEW_TAG, device
        new = stack.client_certificate(device, NEW_TAG)
        assert new is not None, device
        assert new.serial_number in stack.cfssl.issued(), device


# -- 3. a canary whose new identity the broker refuses ---------------------------------------


@pytest.fixture(scope="module")
def bad_canary(stack: IdentityStack) -> dict[str, Any]:
    """The worker issues from a local CA the broker does not trust, for this rollout only."""
    rogue = make_ca(
        "not the broker's device CA",
        not_before=datetime.now(UTC) - timedelta(days=1),
        not_after=datetime.now(UTC) + timedelta(days=400),
    )
    cert_file, key_file = stack.dir / "rogue-ca.pem", stack.dir / "rogue-ca-key.pem"
    cert_file.write_bytes(rogue.pem)
    key_file.write_bytes(
        rogue.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    local = {
        "CERTFLEET_ISSUER": "local",
        "CERTFLEET_ISSUER_CA_CERT_FILE": str(cert_file),
        "CERTFLEET_ISSUER_CA_KEY_FILE": str(key_file),
    }
    with stack.worker_with(local):
        rollout_id = stack.rotate(CANARY.ids(), *_policy("1", "100%"))
        status = stack.wait_final(rollout_id, timeout=120)
    return {"id": rollout_id, "status": status}


def test_a_canary_refused_by_the_broker_aborts_and_every_device_keeps_a_working_identity(
    stack: IdentityStack, bad_canary: dict[str, Any]
) -> None:
    status = bad_canary["status"]
    assert status["state"] == "rolled_back", status
    canary = status["waves"][0]
    assert canary["size"] == 1, canary
    assert canary["state"] == "failed", canary
    assert all(w["state"] == "pending" for w in status["waves"][1:]), status["waves"]
    log = stack.log(bad_canary["id"])
    failed = [e for e in log if e["to"] == "health_failed"]
    assert len(failed) == 1, failed
    assert "identity_refused" in failed[0]["cause"], failed
    (device,) = {e["subject"] for e in failed}
    # The device dropped the refused identity itself (health_failed needs no rollback); the
    # certificate issued to it, never used, is revoked: certfleet's CRL lists it.
    assert stack.device_states(bad_canary["id"])[device] == "health_failed"
    issued = json.loads(
        str(stack.redis.hget(f"certfleet:ro:{{{bad_canary['id']}}}:idcerts", device))
    )
    unused = x509.load_pem_x509_certificate(issued["new"].encode()).serial_number
    wait_until(lambda: unused in _crl_serials(stack), timeout=30, what="the unused one revoked")
    for device in CANARY.ids():
        _keeps_factory_identity(stack, device)


# -- 5. no private key anywhere ----------------------------------------------------------------


def test_no_private_key_is_in_any_message_log_redis_key_or_report(
    stack: IdentityStack,
    rotation: dict[str, Any],
    refused: dict[str, Any],
    issuer_down: dict[str, Any],
    bad_canary: dict[str, Any],
) -> None:
    for rollout in (rotation["id"], refused["id"], bad_canary["id"]):
        stack.run("rollout", "report", rollout)
    keys = stack.private_keys()
    keygens = sum(
        1 for e in stack.log(rotation["id"]) + stack.log(refused["id"]) if e["to"] == "csr"
    )
    assert len(keys) >= sum(f.count for f in FLEETS) + keygens, "every key the modems held"
    recorded = stack.recorded()
    assert recorded["mqtt"]
    assert recorded["redis"]
    assert "logs/worker.log" in recorded
    # The search finds a key where one is: its PEM as a JSON log writes it, its DER, its
    # raw scalar as Redis's MONITOR writes it, its hex.
    control = keys[0]
    scalar = control.private_numbers().private_value.to_bytes(32, "big")
    pem = control.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = control.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for planted in (json.dumps({"k": pem.decode()}).encode(), der, redis_repr(scalar)):
        assert find_leaks([control], {"control": b"x" + planted + b"y"}), planted
    assert find_leaks([control], {"control": scalar.hex().encode()})
    assert not find_leaks(keys, recorded)
