"""Issue 17 end to end: the root key in a SoftHSM2 token signs only delegations and root
ops; the Celery worker signs every bundle with a key of its own under a delegation.

Real Redis, Mosquitto, certfleet's listener, Celery worker and beat, and simulated
devices that trust only the token's root (`tests/e2e/delegation_stack.py`): 20 take a
`trust.replace` rollout, 9 more get bundles the test signs itself and refuse each for
its own reason, with nothing written. Each scenario runs in a module-scoped fixture and
its test checks the outcome, so the last test (no private key in anything the run
recorded) sees every scenario's records whatever runs first.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.adapters.delegated_signer import DelegatedSigner
from orchestrator.adapters.redis_delegations import RedisDelegations
from orchestrator.adapters.redis_metrics import RedisMetrics
from orchestrator.conformance.material import SuiteKey
from orchestrator.protocol.bundle import decode_payload, open_bundle
from orchestrator.protocol.cose import Sign1Message
from orchestrator.protocol.delegation import (
    DELEGABLE_OPS,
    Scope,
    decode_delegation,
    delegation_of,
    sign_delegation,
)
from orchestrator.services.bundles import BundleBody, issue_bundle, stage_body
from tests.e2e.delegation_stack import DelegationStack, running_delegation_stack
from tests.e2e.recorded import find_leaks, redis_repr
from tests.procs import wait_until
from tests.softhsm import softhsm_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROLLED = 20
REFUSING = 9
ROLLED_IDS = [f"dev-{n:05d}" for n in range(ROLLED)]
REFUSING_IDS = [f"ref-{n:05d}" for n in range(REFUSING)]
ROLLOUT_ID = "e2e-refusals"
"""The rollout id of every bundle the test signs itself (no such rollout exists)."""
FULL = Scope(ops=DELEGABLE_OPS, kinds=(0, 1))
ROOT_SIGNATURES = "certfleet_root_signatures_total"
STOLEN_LIFETIME_S = 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DelegationStack]:
    base = tmp_path_factory.mktemp("delegation")
    fleets = {"dev-": ROLLED, "ref-": REFUSING}
    with (
        softhsm_token(base / "token") as token,  # skips without SoftHSM2
        running_delegation_stack(base, token, fleets) as s,
    ):
        yield s


def _root_signatures(stack: DelegationStack) -> dict[str, float]:
    """certfleet_root_signatures_total by purpose, as every process counted them."""
    return {
        dict(labels)["purpose"]: value
        for (name, labels), value in RedisMetrics(stack.redis).snapshot().items()
        if name == ROOT_SIGNATURES
    }


# -- 1. a trust.replace rollout, every bundle under a delegation -------------------------------


@pytest.fixture(scope="module")
def rollout(stack: DelegationStack) -> dict[str, Any]:
    before = _root_signatures(stack)
    selection = stack.dir / "rolled.txt"
    selection.write_text("\n".join(ROLLED_IDS) + "\n")
    created = stack.json(
        *("rollout", "create", "--kind", "trust.replace"),
        *("--ca", str(stack.dir / "ca2.pem"), "--tag", "42", "--spare-tag", "43"),
        *("--probe", f"127.0.0.1:{stack.probe_port}", "--select", f"file:{selection}"),
        *("--waves", "1,100%", "--bake", "0", "--advance", "auto"),
        *("--max-failure", "10%", "--min-sample", "1", "--device-timeout", "30"),
    )
    status = stack.wait_final(str(created["id"]))
    return {
        "id": created["id"],
        "status": status,
        "bundles": stack.bundles(),
        "before": before,
        "after": _root_signatures(stack),
        "registry": [
            issued.delegation.kid.hex()
            for issued in RedisDelegations(stack.redis).active(datetime.now(UTC))
        ],
    }


def test_a_trust_replace_completes_with_every_bundle_signed_under_a_delegation(
    stack: DelegationStack, rollout: dict[str, Any]
) -> None:
    status = rollout["status"]
    assert status["state"] == "completed", status
    assert status["totals"]["committed"] == ROLLED, status["totals"]
    sent = rollout["bundles"]
    assert {device for device, _ in sent} == set(ROLLED_IDS)
    ops = {decode_payload(Sign1Message.decode(data).payload).op for _, data in sent}
    assert ops == {"stage", "commit"}, ops
    registered = set(rollout["registry"])
    used = set()
    for device, data in sent:
        delegation = delegation_of(data)
        assert delegation is not None, f"a bundle to {device} without a delegation"
        kid = Sign1Message.decode(data).kid
        assert kid == delegation.kid != stack.root_kid
        assert delegation.root_kid == stack.root_kid
        # the whole device check: root -> delegation -> revocation -> validity -> signature -> scope
        opened = open_bundle(
            data,
            signers={stack.root_kid: stack.root.public_key()},
            device_id=device,
            last_seq=0,
            now=datetime.now(UTC),
        )
        assert opened.rollout_id == rollout["id"]
        used.add(delegation.kid.hex())
    assert used <= registered, used - registered
    worker_log = next(p for p in stack.procs if p.name == "worker").log()
    issued = "\n".join(line for line in worker_log.splitlines() if "delegation_issued" in line)
    assert all(kid in issued for kid in used), (used, issued)


def test_the_root_signed_only_delegations_one_per_registry_entry(
    rollout: dict[str, Any],
) -> None:
    """certfleet_root_signatures_total: as many delegations as the registry lists, and no
    bundle signed by the root during the rollout."""
    after, before = rollout["after"], rollout["before"]
    assert after.get("delegation", 0) == len(rollout["registry"]) >= 1, (after, rollout)
    assert after.get("bundle", 0) == before.get("bundle", 0) == 0, (before, after)


# -- 2. devices refuse what a delegation does not allow, and write nothing ---------------------


@dataclass
class Crafted:
    """A `BundleSigner` the test puts together: a key, and the delegation it shows (or none)."""

    key: SuiteKey
    delegation: bytes | None

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    def sign(self, to_be_signed: bytes) -> bytes:
        return self.key.sign(to_be_signed)

    def delegation_for(self, expires_at: int) -> bytes | None:
        return self.delegation


class NoSequences:
    """Every bundle here names its seq."""

    def next_sequence(self, device_id: str) -> int:
        raise AssertionError(f"no seq given for {device_id}")


def _stage(stack: DelegationStack, *, now: datetime) -> BundleBody:
    """A stage of CA2 into 43 that a device would take: what each refusal sends."""
    return stage_body(
        ca_pems=[stack.ca2.pem.decode()],
        tag=43,
        probe_host="127.0.0.1",
        probe_port=stack.probe_port,
        probe_tags=[43],
        active_after=[42, 43],
        commit_by=now + timedelta(seconds=60),
    )


def _bundle(
    signer: Any,
    device: str,
    body: BundleBody,
    *,
    seq: int,
    now: datetime,
    ttl: int = 300,
    rollout_id: str = ROLLOUT_ID,
) -> bytes:
    return issue_bundle(
        signer=signer,
        sequences=NoSequences(),  # type: ignore[arg-type]  # seq is always given
        device_id=device,
        rollout_id=rollout_id,
        body=body,
        now=now,
        ttl_seconds=ttl,
        seq=seq,
    ).data


def _send(stack: DelegationStack, device: str, data: bytes) -> dict[str, Any]:
    """Publish the bundle and return the device's next report."""
    seen = len(stack.reports(device))
    stack.publish_bundle(device, data)
    reports = wait_until(
        lambda: stack.reports(device)[seen:], timeout=20, what=f"a report from {device}"
    )
    report: dict[str, Any] = reports[0]
    return report


def _delegation(
    root: Any,
    key: SuiteKey,
    *,
    t0: int,
    nbf: int = -60,
    exp: int = 3600,
    iat: int = -60,
    scope: Scope = FULL,
) -> bytes:
    return sign_delegation(
        root=root,
        public_key=key.public_key,
        not_before=t0 + nbf,
        expires_at=t0 + exp,
        issued_at=t0 + iat,
        scope=scope,
    )


def _stolen_key(signer: DelegatedSigner) -> ec.EllipticCurvePrivateKey:
    """The private key a DelegatedSigner holds, as a thief with the process's memory has it
    (the class shows it nowhere: found among its attributes)."""
    holders = [getattr(signer, name, None) for name in getattr(signer, "__slots__", ())]
    holders += list(getattr(signer, "__dict__", {}).values())
    found = [h for h in holders if isinstance(h, ec.EllipticCurvePrivateKey)]
    assert len(found) == 1, "where does the DelegatedSigner keep its key?"
    return found[0]


@pytest.fixture(scope="module")
def refusals(stack: DelegationStack, rollout: dict[str, Any]) -> dict[str, Any]:
    """Each refusing device gets one bundle the test signed (seq 1), refused for its own
    reason; then `certfleet keys revoke` revokes a stolen key's delegation (sent to every
    device with certfleet's next seq: 1 to these, so a refusal that consumed it would
    show), and the stolen keys are used again."""
    root = stack.token.signer()
    held_before = {d: stack.held(d) for d in REFUSING_IDS}
    states_before = {d: len(stack.messages(d, "state")) for d in REFUSING_IDS}
    t0 = int(time.time())
    now = datetime.fromtimestamp(t0, UTC)
    registry = RedisDelegations(stack.redis)

    def worker_signer(name: str, lifetime: int) -> DelegatedSigner:
        """A signer as a worker has it (its delegation listed in the registry)."""
        return DelegatedSigner(
            root,
            scope=FULL,
            lifetime_seconds=lifetime,
            clock=lambda: datetime.now(UTC),
            registry=registry,
            worker=name,
        )

    short = worker_signer("stolen-short", STOLEN_LIFETIME_S)
    revoked = worker_signer("stolen-revoked", 3600)
    keys = [SuiteKey.generate() for _ in range(7)]
    stranger_root = SuiteKey.generate()
    stage = _stage(stack, now=now)
    rollback = BundleBody(op="rollback", tag=43)
    ref = REFUSING_IDS
    sent: dict[str, tuple[str, dict[str, Any]]] = {}

    def refuse(
        name: str, device: str, signer: Any, body: BundleBody = stage, ttl: int = 300
    ) -> None:
        data = _bundle(signer, device, body, seq=1, now=now, ttl=ttl)
        sent[name] = (device, _send(stack, device, data))

    # the two workers' keys work (refused only at check 13, which names the bundle); a
    # thief copies each one's key and delegation out of its memory
    refuse("short-valid", ref[7], short, rollback, ttl=STOLEN_LIFETIME_S - 2)
    refuse("revoked-valid", ref[8], revoked, rollback)
    captured = time.time()
    stolen = {
        name: Crafted(SuiteKey(_stolen_key(signer)), signer.delegation_for(t0 + 1))
        for name, signer in (("short", short), ("revoked", revoked))
    }
    # an expired delegation, and one not valid yet
    expired = _delegation(root, keys[0], t0=t0, nbf=-7200, exp=-3600, iat=-7200)
    refuse("expired", ref[0], Crafted(keys[0], expired))
    early = _delegation(root, keys[1], t0=t0, nbf=3600, exp=7200, iat=0)
    refuse("not-yet-valid", ref[1], Crafted(keys[1], early))
    # out of scope: the op, the credential kind, the rollout
    ops = _delegation(root, keys[2], t0=t0, scope=Scope(ops=("commit", "rollback"), kinds=(0,)))
    refuse("scope-op", ref[2], Crafted(keys[2], ops))
    kinds = _delegation(root, keys[3], t0=t0, scope=Scope(ops=DELEGABLE_OPS, kinds=(1,)))
    refuse("scope-kind", ref[3], Crafted(keys[3], kinds))
    rids = _delegation(
        root, keys[4], t0=t0, scope=Scope(ops=DELEGABLE_OPS, kinds=(0,), rollouts=("other",))
    )
    refuse("scope-rollout", ref[4], Crafted(keys[4], rids))
    # an online key without a delegation: a worker's key, its delegation left out
    refuse("no-delegation", ref[5], Crafted(stolen["revoked"].key, None))
    # a delegation signed by a root no device trusts
    foreign = _delegation(stranger_root, keys[5], t0=t0)
    refuse("unknown-root", ref[6], Crafted(keys[5], foreign))

    # the revocation: certfleet sends every device a root-signed revoke
    revoked_kid = stolen["revoked"].key_id.hex()
    revoke = stack.run("keys", "revoke", "--kid", revoked_kid, "--all", timeout=120)
    assert revoke.returncode == 0, revoke.stderr.decode(errors="replace")
    wait_until(
        lambda: all(
            any(r.get("op") == "revoke" and r["phase"] == "committed" for r in stack.reports(d))
            for d in ref
        ),
        timeout=30,
        what="every refusing device committed the revoke",
    )
    after: dict[str, dict[str, Any]] = {}
    late = datetime.now(UTC)
    after["revoked"] = _send(
        stack, ref[8], _bundle(stolen["revoked"], ref[8], rollback, seq=2, now=late)
    )
    # the short delegation ends; the thief signs on with the key and delegation (seq 2)
    ends = decode_delegation(stolen["short"].delegation or b"")[1].expires_at
    assert ends <= captured + STOLEN_LIFETIME_S + 1
    wait_until(lambda: time.time() >= ends + 1, timeout=ends + 5 - time.time(), what="its end")
    late = datetime.now(UTC)
    after["short-expired"] = _send(
        stack, ref[7], _bundle(stolen["short"], ref[7], stage, seq=2, now=late)
    )
    return {
        "sent": sent,
        "after": after,
        "held_before": held_before,
        "held_after": {d: stack.held(d) for d in REFUSING_IDS},
        "states_before": states_before,
        "states_after": {d: len(stack.messages(d, "state")) for d in REFUSING_IDS},
        "revoke_output": revoke.stdout.decode(errors="replace"),
        "revoked_kid": stolen["revoked"].key_id,
        "root_signatures": _root_signatures(stack),
        "revokes": [
            (device, data)
            for device, data in stack.bundles()
            if decode_payload(Sign1Message.decode(data).payload).op == "revoke"
        ],
        "stolen": [thief.key.private for thief in stolen.values()],
        "keys": [k.private for k in (*keys, stranger_root)],
    }


UNVERIFIED = {"unknown_key", "bad_delegation", "delegation_revoked", "delegation_expired"}
EXPECTED = {
    "short-valid": "nothing_to_undo",
    "revoked-valid": "nothing_to_undo",
    "expired": "delegation_expired",
    "not-yet-valid": "delegation_expired",
    "scope-op": "out_of_scope",
    "scope-kind": "out_of_scope",
    "scope-rollout": "out_of_scope",
    "no-delegation": "unknown_key",
    "unknown-root": "unknown_key",
}


def test_devices_refuse_each_bundle_outside_its_delegation_for_its_reason(
    refusals: dict[str, Any],
) -> None:
    got = {name: report["reason"] for name, (_, report) in refusals["sent"].items()}
    assert got == EXPECTED
    for name, (_, report) in refusals["sent"].items():
        assert report["phase"] == "rejected", (name, report)
        if report["reason"] in UNVERIFIED:  # checks 1..5d: the refusal names no bundle
            assert (report["rollout_id"], report["seq"]) == ("", 0), (name, report)
        else:  # scope (7a) and later: it names the bundle
            assert (report["rollout_id"], report["seq"]) == (ROLLOUT_ID, 1), (name, report)


def test_keys_revoke_sends_every_device_a_root_signed_revoke_with_the_kid(
    stack: DelegationStack, refusals: dict[str, Any]
) -> None:
    """The root signs root ops itself, and counts them (purpose bundle)."""
    revokes = refusals["revokes"]
    assert {device for device, _ in revokes} == {*ROLLED_IDS, *REFUSING_IDS}, refusals
    assert refusals["root_signatures"].get("bundle") == len(revokes), refusals["root_signatures"]
    for device, data in revokes:
        assert delegation_of(data) is None, device
        assert Sign1Message.decode(data).kid == stack.root_kid, device
        bundle = decode_payload(Sign1Message.decode(data).payload)
        assert bundle.revoke_kids == (refusals["revoked_kid"],), (device, bundle)


def test_a_revoked_or_expired_stolen_key_is_refused(refusals: dict[str, Any]) -> None:
    after = refusals["after"]
    assert (after["revoked"]["phase"], after["revoked"]["reason"]) == (
        "rejected",
        "delegation_revoked",
    ), after
    assert (after["short-expired"]["phase"], after["short-expired"]["reason"]) == (
        "rejected",
        "delegation_expired",
    ), after


def test_a_refused_bundle_writes_nothing(stack: DelegationStack, refusals: dict[str, Any]) -> None:
    """Inventory as before, no new state message; and the revoke that came next with seq 1
    was taken, so no refusal consumed the seq."""
    assert refusals["held_after"] == refusals["held_before"]
    assert refusals["states_after"] == refusals["states_before"]
    for device in REFUSING_IDS:
        revoke = [r for r in stack.reports(device) if r.get("op") == "revoke"]
        assert [(r["seq"], r["phase"]) for r in revoke] == [(1, "received"), (1, "committed")], (
            device,
            revoke,
        )


# -- 3. nothing recorded holds a private key ---------------------------------------------------

PKCS8_P256 = bytes.fromhex(
    "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420"
)
SEC1_P256 = bytes.fromhex("30770201010420")
"""The DER prefixes of every P-256 private key (PKCS#8, and SEC 1 / "EC PRIVATE KEY")."""


def _marker_forms() -> list[bytes]:
    """PEM's words, and the DER prefixes raw, as MONITOR escapes them, in hex and in base64
    (how a PEM or a base64 DER of any P-256 key begins)."""
    forms = [b"PRIVATE KEY"]
    for prefix in (PKCS8_P256, SEC1_P256):
        forms += [prefix, redis_repr(prefix), prefix.hex().encode(), prefix.hex().upper().encode()]
        forms.append(base64.b64encode(prefix[: len(prefix) // 3 * 3]))
    return forms


def find_any_key(recorded: dict[str, bytes]) -> list[str]:
    """Where a private key of any P-256 key, known to the test or not, shows in PEM or DER."""
    flat = {where: re.sub(rb"\\n|\\r|[\r\n]", b"", data) for where, data in recorded.items()}
    return [
        f"{where}: {form!r}" for where, d in flat.items() for form in _marker_forms() if form in d
    ]


def test_no_private_key_is_in_any_log_redis_key_report_or_message(
    stack: DelegationStack,
    rollout: dict[str, Any],
    refusals: dict[str, Any],
) -> None:
    """Every process log (the Redis MONITOR's too), the broker's log, every Redis key and
    value, every MQTT message and all the CLI printed: no scalar of a key the test knows (the
    root in the token, the stolen workers' keys, its own), no private key in PEM or DER of
    any key (the worker's own), and not the token's PIN."""
    recorded = stack.recorded()
    assert recorded["mqtt"]
    assert recorded["redis"]
    assert {"logs/worker.log", "logs/listener.log", "logs/beat.log"} <= set(recorded)
    assert any(name.endswith("redis-monitor.log") for name in recorded)
    keys: list[ec.EllipticCurvePrivateKey] = [stack.root, *refusals["stolen"], *refusals["keys"]]
    # the searches find a key where one is: a PEM in a JSON log line, a DER as MONITOR writes it
    control = keys[0]
    pem = control.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = control.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    planted = {"json": json.dumps({"k": pem.decode()}).encode(), "monitor": redis_repr(der)}
    assert set(find_leaks([control], planted)) == {"json: text form", "monitor: raw scalar"}
    assert len(find_any_key({"pem": pem.replace(b"PRIVATE KEY", b"")})) == 1
    assert find_any_key({"json": planted["json"]})
    assert find_any_key({"monitor": planted["monitor"]})

    assert not find_leaks(keys, recorded)
    assert not find_any_key(recorded)
    pin = stack.token.pin_file.read_bytes().strip()
    assert len(pin) >= 8, "a PIN long enough to search for"
    assert not [where for where, data in recorded.items() if pin in data], "the PIN"
