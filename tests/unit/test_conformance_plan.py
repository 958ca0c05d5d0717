"""The conformance suite's plan, bundles and verdicts, without a device: the plan agrees
with the product's own bundle checks, ends where it began, and the docs list its steps."""

from __future__ import annotations

import hashlib
import inspect
import re
from datetime import UTC, datetime
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.conformance.forge import Forge
from orchestrator.conformance.inbox import Heard, trust_problems
from orchestrator.conformance.material import SuiteKey, chain_of_size, public_point, throwaway_ca
from orchestrator.conformance.model import Delegate, Expect, Send, Step, Trust
from orchestrator.conformance.plan import PlanInputs
from orchestrator.conformance.plan_delegation import OFF_CURVE, ONLINE_KEYS, REVOKED_BEFORE
from orchestrator.conformance.plan_delegation import _kid as _point_kid
from orchestrator.conformance.restore import restore_bundles
from orchestrator.conformance.suite import Outcome, build_plan, spare_tags
from orchestrator.conformance.verdict import Sent, StepResult, judge, order_problems
from orchestrator.protocol.bundle import BundleRejectedError, open_bundle
from orchestrator.protocol.cose import sign1
from orchestrator.protocol.delegation import (
    DELEGABLE_OPS,
    REVOKED_KIDS_MAX,
    Revocation,
    Scope,
    decode_delegation,
    delegation_of,
    sign_delegation,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEVICE = "nrf-352656100000000"
REPO = Path(__file__).resolve().parents[2]
INITIAL = Trust(items={(42, 0): "a" * 64, (42, 1): "b" * 64}, active=(42,))
OPERATION_CHECKS = frozenset(
    {
        "tag_in_use",
        "nothing_staged",
        "invalid_operation",
        "unsafe_active",
        "nothing_to_undo",
        "superseded",
    }
)
"""Reasons of check 13: the bundle passed every check `open_bundle` makes."""
SIGNER_STATE = {"retired key refused", "temporary key refused"}
"""Refused for keys the device stopped trusting during the run: not a property of the bytes."""

KEYS = {
    name: SuiteKey.generate()
    for name in ("main", "temp1", "temp2", "temp3", "temp4", "temp9", *ONLINE_KEYS)
}
TRUSTED = {key.key_id: key.public_key for name, key in KEYS.items() if name not in ONLINE_KEYS}
"""The keys a device may trust: the suite's online keys are never trusted, only delegated."""
FOREIGN = SuiteKey.generate()
GOOD, BAD = throwaway_ca(NOW), throwaway_ca(NOW)


def _inputs(**changes: object) -> PlanInputs:
    values: dict[str, object] = {
        "device_id": DEVICE,
        "initial": INITIAL,
        "spare": spare_tags(INITIAL),
        "ca_good": GOOD,
        "ca_bad": BAD,
        "probe_good": ("probe.example.net", 8443),
        "probe_bad": ("probe.example.net", 9443),
        "probe_bad_reason": "unknown_ca",
        "signers": {
            name: (key.key_id, public_point(key))
            for name, key in {**KEYS, "foreign": FOREIGN}.items()
        },
        "run_id": "0a1b2c3d",
        **changes,
    }
    return PlanInputs(**values)  # type: ignore[arg-type]  # the test's own table


PLAN = build_plan(_inputs())


def _revocations(plan: list[Step], forge: Forge) -> dict[str, Revocation]:
    """The revocation a device holds before each step: each revoke the plan expects
    committed applied in turn."""
    held, before = Revocation(), dict[str, Revocation]()
    for step in plan:
        before[step.name] = held
        for send, expect in zip(step.sends, step.expects, strict=True):
            if send.op == "revoke" and expect.last == "committed":
                document = forge.payload(send, seq=7, now=NOW)
                held = held.applied(document["kids"], document["before"])
    return before


REVOCATION = _revocations(PLAN, Forge(DEVICE, {**KEYS, "foreign": FOREIGN}))
CHECKED = [
    step
    for step in PLAN
    if len(step.sends) == 1
    and step.sends[0].resend is None
    and step.sends[0].raw is None
    and step.name not in SIGNER_STATE
]


@pytest.mark.parametrize("step", CHECKED, ids=[s.name for s in CHECKED])
def test_each_bundle_meets_the_products_checks_as_the_plan_expects(step: Step) -> None:
    """A bundle the plan expects refused before check 13 is refused by `open_bundle` with
    that reason; every other bundle passes it (the device then decides by its state)."""
    # given
    forge = Forge(DEVICE, {**KEYS, "foreign": FOREIGN})
    send, expect = step.sends[0], step.expects[0]

    # when
    data = forge.build(send, seq=7, now=NOW)
    try:
        open_bundle(
            data,
            signers=TRUSTED,
            device_id=DEVICE,
            last_seq=0,
            now=NOW,
            revocation=REVOCATION[step.name],
        )
        refused = None
    except BundleRejectedError as exc:
        refused = exc.reason.value

    # then
    if expect.last == "rejected" and not expect.reasons <= OPERATION_CHECKS:
        assert refused in expect.reasons
    else:
        assert refused is None


def test_the_plan_names_each_step_once_and_keeps_a_working_trust_throughout() -> None:
    """Replays point at earlier steps by name; no expected trust breaks an invariant; the
    last step expects the trust the device started with."""
    names = [step.name for step in PLAN]
    assert len(names) == len(set(names))
    for index, step in enumerate(PLAN):
        for send in step.sends:
            if send.resend is not None:
                assert send.resend in names[:index]
        assert step.trust is not None
        assert trust_problems(step.trust) == []
    assert PLAN[-1].trust == INITIAL
    assert PLAN[-1].name == "ends as it started"


def test_the_plan_touches_only_spare_tags() -> None:
    """Every stage and retire of an expected change names a tag the device held nothing in."""
    spare = set(spare_tags(INITIAL))
    for step in PLAN:
        changed = {tag for tag, _ in (step.trust.items if step.trust else {})} - {42}
        assert changed <= spare, step.name


@pytest.mark.parametrize("trusted", [1, 2, 3])
def test_the_signer_steps_fill_the_key_limit_whatever_the_device_trusts(trusted: int) -> None:
    """Keys are added until the device holds 4, the fifth is refused, then all are retired."""
    plan = build_plan(_inputs(trusted_keys=trusted))
    added = [s for s in plan if s.name.startswith("trust-signer: add temp")]
    retired = [s for s in plan if s.name.startswith("trust-signer: restore main, retire")]
    assert trusted + len(added) == 4
    assert len(retired) == len(added)


@pytest.mark.parametrize("size", [4096, 4097, 12288])
def test_a_chain_of_size_is_exactly_that_many_bytes_and_parses(size: int) -> None:
    """The limit steps' CA items: exact byte counts, the good CA first, every block a cert."""
    text = chain_of_size(GOOD, size)
    assert len(text.encode()) == size
    assert text.startswith(GOOD)
    certificates = x509.load_pem_x509_certificates(text.encode())
    assert certificates[0] == x509.load_pem_x509_certificate(GOOD.encode())
    assert len(certificates) > 1


def _report(
    phase: str, reason: str = "ok", *, seq: int = 5, rid: str = "r", op: str = "stage"
) -> Heard:
    return Heard(
        {
            "phase": phase,
            "reason": reason,
            "seq": seq,
            "rollout_id": rid,
            "op": op,
            "active_tags": [42],
        }
    )


STATE = Heard(
    {
        "credentials": [
            {"sec_tag": 42, "type": 0, "sha256": "a" * 64},
            {"sec_tag": 42, "type": 1, "sha256": "b" * 64},
        ],
        "active_tags": [42],
    }
)
STEP = Step(
    name="stage",
    proves="",
    sends=(Send(op="stage", rid="r"),),
    expects=(
        Expect(phases=("received", "staged", "health_failed"), reasons=frozenset({"unknown_ca"})),
    ),
    trust=INITIAL,
)


def test_a_step_passes_only_on_its_phases_reason_names_and_trust() -> None:
    """The right answer passes; a wrong reason, a report naming another seq, or a state
    that named an empty tag live on the way each fail with what was wrong."""
    right = [_report("received"), _report("staged"), _report("health_failed", "unknown_ca")]
    sent = [Sent(5, "r", "stage")]
    broken = Heard({"credentials": [], "active_tags": [42]})

    ok = judge(STEP, sent, [right], state=STATE, states_seen=[STATE], timeout=1)
    wrong_reason = judge(
        STEP,
        sent,
        [[*right[:2], _report("health_failed", "timeout")]],
        state=STATE,
        states_seen=[],
        timeout=1,
    )
    wrong_seq = judge(
        STEP,
        sent,
        [[_report("received", seq=4), *right[1:]]],
        state=STATE,
        states_seen=[],
        timeout=1,
    )
    dark = judge(STEP, sent, [right], state=STATE, states_seen=[broken, STATE], timeout=1)

    assert ok.passed, ok.detail
    assert ok.got == "received, staged, health_failed/unknown_ca -> active [42]"
    assert not wrong_reason.passed
    assert "reason 'timeout'" in wrong_reason.detail
    assert not wrong_seq.passed
    assert "names seq/rid/op [4, 'r', 'stage']" in wrong_seq.detail
    assert not dark.passed
    assert "active tags [42] hold no CA chain item" in dark.detail


def test_a_refusal_before_the_signature_must_name_no_bundle() -> None:
    """An unverified refusal that names a seq fails: a stranger's bundle cannot speak."""
    step = Step(
        name="foreign key",
        proves="",
        sends=(Send(op="rollback"),),
        expects=(Expect(phases=("rejected",), reasons=frozenset({"unknown_key"}), named=False),),
        trust=INITIAL,
    )
    named = _report("rejected", "unknown_key", seq=9, rid="", op="rollback")
    anonymous = Heard({"phase": "rejected", "reason": "unknown_key", "seq": 0, "rollout_id": ""})

    failed = judge(
        step, [Sent(9, "", "rollback")], [[named]], state=STATE, states_seen=[], timeout=1
    )
    passed = judge(
        step, [Sent(9, "", "rollback")], [[anonymous]], state=STATE, states_seen=[], timeout=1
    )

    assert not failed.passed
    assert "must name none" in failed.detail
    assert passed.passed, passed.detail


def test_the_docs_list_every_step_and_only_real_options() -> None:
    """docs/conformance.md names each step of the plan, and each option it shows exists."""
    from orchestrator.conformance.cli import conformance  # noqa: PLC0415

    doc = (REPO / "docs" / "conformance.md").read_text()
    rows = set(re.findall(r"^\| ([^|]+?) \|", doc.replace("\\|", "¦"), re.M))
    missing = [s.name for s in PLAN if s.name.replace("|", "¦") not in rows]
    assert missing == []
    source = inspect.getsource(conformance)
    shown = set(re.findall(r"`(--[a-z-]+)", doc)) | set(
        re.findall(r"certfleet conformance[^\n]*?(--[a-z-]+)", doc)
    )
    assert shown
    unknown = [option for option in shown if f'"{option}"' not in source]
    assert unknown == []


def test_nothing_is_restored_after_a_run_that_passed() -> None:
    """A device that ends with its first trust and no failed signer step gets no bundle."""
    assert restore_bundles(_inputs(), PLAN, set(), INITIAL) == []


def test_a_failed_signer_step_makes_the_original_key_the_trusted_one_again() -> None:
    """Each temporary key is retired by temp1, then temp1 itself by temp1 and by main."""
    bundles = restore_bundles(_inputs(), PLAN, {"trust-signer: add temp3"}, INITIAL)

    ops = {send.op for send, _ in bundles}
    last = bundles[-1][0]
    assert ops == {"trust-signer"}
    assert (last.signer, last.fields["retire_kid"]) == ("main", KEYS["temp1"].key_id)
    assert {send.fields["retire_kid"] for send, _ in bundles} == {
        KEYS[name].key_id for name in ("temp1", "temp2", "temp3", "temp4", "temp9")
    }


def test_a_left_spare_tag_is_retired_only_while_the_first_trust_is_intact() -> None:
    """An extra committed tag is retired back to the first active list; if the device's own
    CA is gone, no retire could make that list safe, so none is sent."""
    left = INITIAL.with_ca(43, "c" * 64).activating((42, 43))
    broken = left.without(42).with_ca(42, "d" * 64)

    bundles = restore_bundles(_inputs(), PLAN, {"case 3: clean up"}, left)
    none = restore_bundles(_inputs(), PLAN, {"case 3: clean up"}, broken)

    assert [(s.op, s.fields["tags"], s.fields["active"]) for s, _ in bundles] == [
        ("retire", [43], [42])
    ]
    assert none == []


def test_bundles_sent_at_once_must_be_answered_in_order() -> None:
    """The queue step fails when the device answers a later bundle before an earlier one."""
    sent = [Sent(seq, "", "rollback") for seq in (1, 2, 3, 4)]

    shuffled = order_problems([2, 1, 1, 3, 4], sent)
    in_order = order_problems([1, 1, 2, 3, 4], sent)

    assert shuffled == ["bundles sent in seq order [1, 2, 3, 4] were answered [2, 1, 3, 4]"]
    assert in_order == []


def test_the_table_shows_each_step_with_its_result() -> None:
    """Without --json the command prints one row per step, the failed one marked FAIL."""
    from orchestrator.conformance import cli  # noqa: PLC0415 -- the command module

    outcome = Outcome(
        DEVICE,
        [
            StepResult("state", True, "a state", "state message: active [42]"),
            StepResult("replay (same seq)", False, "rejected/replay", "received", "phases"),
        ],
    )
    cli.out.width = 200
    with cli.out.capture() as captured:
        cli.print_table(outcome)

    text = captured.get()
    assert f"conformance of {DEVICE}" in text
    assert re.search(r"state\s*│\s*pass", text)
    assert re.search(r"replay \(same seq\)\s*│\s*FAIL", text)
    assert outcome.failed == ["replay (same seq)"]
    assert outcome.to_json()["passed"] is False


class _FixedSignature:
    """A key whose signatures are always the same bytes: two encoders' outputs compare."""

    def __init__(self, key: SuiteKey) -> None:
        self.key_id, self.public_key = key.key_id, key.public_key

    def sign(self, to_be_signed: bytes) -> bytes:
        return hashlib.sha256(to_be_signed).digest() * 2


def test_the_suites_delegated_bundle_is_byte_for_byte_what_certfleet_signs() -> None:
    """The suite writes delegations and delegated envelopes itself (to spoil them); a valid
    one is exactly the product's: `sign_delegation`, then `sign1(..., delegation=...)`."""
    # given
    keys = {name: _FixedSignature(KEYS[name]) for name in ("main", "online1")}
    forge = Forge(DEVICE, keys)
    moment = int(NOW.timestamp())
    send = Send(op="rollback", rid="r", signer="online1", delegation=Delegate(rids=("r", "s")))

    # when
    delegation = forge.delegation(Delegate(rids=("r", "s")), now=NOW)
    data = forge.build(send, seq=7, now=NOW)

    # then
    expected = sign_delegation(
        root=keys["main"],
        public_key=KEYS["online1"].public_key,
        not_before=moment - 60,
        expires_at=moment + 7200,
        issued_at=moment,
        scope=Scope(ops=DELEGABLE_OPS, kinds=(0, 1), rollouts=("r", "s")),
    )
    assert delegation == expected
    payload = cbor2.dumps(forge.payload(send, seq=7, now=NOW), canonical=True)
    assert data == sign1(
        payload, sign=keys["online1"].sign, kid=KEYS["online1"].key_id, delegation=expected
    )
    assert delegation_of(data) == decode_delegation(expected)[1]


def test_the_revocation_steps_keep_a_fleet_revocation_and_send_it_back() -> None:
    """With the fleet's 8 revoked key ids and a later revocation time, every revoke fits
    the limit, the by-time steps use the fleet's time, and the last revoke restores both."""
    # given
    fleet = Revocation(frozenset(bytes([n]) * 8 for n in range(8)), REVOKED_BEFORE + 500)
    plan = build_plan(_inputs(revocation=fleet))
    forge = Forge(DEVICE, {**KEYS, "foreign": FOREIGN})
    held = _revocations(plan, forge)

    # when
    last = next(s for s in plan if s.name == "revocation restored")
    document = forge.payload(last.sends[0], seq=7, now=NOW)

    # then
    assert (frozenset(document["kids"]), document["before"]) == (fleet.kids, fleet.before)
    for step in plan:
        for send in step.sends:
            if send.op == "revoke" and step.expects[0].last == "committed":
                kids = forge.payload(send, seq=7, now=NOW)["kids"]
                assert len(kids) <= REVOKED_KIDS_MAX, step.name
    by_time = next(s for s in plan if s.name == "issued before the revocation time")
    assert by_time.sends[0].delegation is not None
    assert by_time.sends[0].delegation.iat == fleet.before - 1
    assert held["issued at the revocation time"].before == fleet.before


def test_a_failed_revoke_step_sends_the_fleets_revocation_back() -> None:
    """The device may hold the suite's list: the restore sends the fleet's, root-signed."""
    fleet = Revocation(frozenset({b"\x07" * 8}), 1234)
    inputs = _inputs(revocation=fleet)
    plan = build_plan(inputs)

    bundles = restore_bundles(inputs, plan, {"revoke by time"}, INITIAL)

    assert [(s.op, s.signer, s.fields["kids"], s.fields["before"]) for s, _ in bundles] == [
        ("revoke", "main", [b"\x07" * 8], 1234)
    ]


def test_the_off_curve_delegation_differs_from_a_real_one_only_in_its_point() -> None:
    """Its kid is what a device computes for the bytes (SHA-256 of the SPKI DER), so only
    the curve check can refuse it; and (1, 1) is no P-256 point."""
    point = public_point(KEYS["online1"])

    assert _point_kid(point) == KEYS["online1"].key_id
    assert len(OFF_CURVE) == len(point)
    with pytest.raises(ValueError, match="Invalid EC key"):
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), OFF_CURVE)
