"""The conformance suite's identity steps, without a device: when they run, what their
bundles are to the product's checks, and how a `csr` report is judged."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from orchestrator.conformance.csr_form import csr_problems
from orchestrator.conformance.forge import Forge
from orchestrator.conformance.inbox import Heard, trust_of, trust_problems
from orchestrator.conformance.material import SuiteKey, public_point, throwaway_ca
from orchestrator.conformance.model import Send, Step, Trust
from orchestrator.conformance.plan import CSR, PlanInputs
from orchestrator.conformance.suite import build_plan, spare_tags
from orchestrator.conformance.verdict import Sent, judge
from orchestrator.protocol.bundle import BundleRejectedError, open_bundle
from orchestrator.protocol.keygen import encode_keygen_output, sign_attestation

pytestmark = pytest.mark.unit

NOW: Final = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEVICE: Final = "nrf-352656100000000"
REPO: Final = Path(__file__).resolve().parents[2]
WITH_IDENTITY: Final = Trust(
    items={(42, 0): "a" * 64, (44, 1): "b" * 64, (44, 2): "c" * 64}, active=(42,), identity=44
)
WITHOUT: Final = Trust(items={(42, 0): "a" * 64}, active=(42,))
KEYS: Final = {name: SuiteKey.generate() for name in ("main", "temp1", "temp2", "temp3", "temp4")}
ATTESTATION_KEY: Final = ec.generate_private_key(ec.SECP256R1())
AFTER_SIGNATURE: Final = frozenset(
    {"tag_in_use", "nothing_staged", "key_mismatch", "unsafe_active", "nothing_to_undo"}
)
"""Reasons of check 13: the bytes pass every check `open_bundle` makes."""


def _inputs(initial: Trust) -> PlanInputs:
    keys = {**KEYS, "temp9": SuiteKey.generate(), "foreign": SuiteKey.generate()}
    return PlanInputs(
        device_id=DEVICE,
        initial=initial,
        spare=spare_tags(initial),  # type: ignore[arg-type]  # three tags
        ca_good=throwaway_ca(NOW),
        ca_bad=throwaway_ca(NOW),
        probe_good=("probe.example.net", 8443),
        probe_bad=("probe.example.net", 9443),
        probe_bad_reason="unknown_ca",
        signers={name: (key.key_id, public_point(key)) for name, key in keys.items()},
        run_id="0a1b2c3d",
    )


PLAN: Final = build_plan(_inputs(WITH_IDENTITY))
IDENTITY_STEPS: Final = PLAN[len(build_plan(_inputs(WITHOUT))) - 1 : -1]


def test_the_identity_steps_run_only_for_a_device_with_an_identity() -> None:
    """A device naming an identity tag gets the identity group; one without, none of it."""
    without = {step.name for step in build_plan(_inputs(WITHOUT))}
    names = [step.name for step in IDENTITY_STEPS]
    assert names[0] == "keygen into an active tag"
    assert "keygen and its rollback" in names
    assert not set(names) & without
    assert PLAN[-1].name == "ends as it started"


def test_the_plan_keeps_the_identity_and_ends_where_it_began() -> None:
    """No expected trust breaks an invariant, identity ones included; spare tags avoid it."""
    assert 44 not in spare_tags(WITH_IDENTITY)
    for step in PLAN:
        assert step.trust is not None
        assert trust_problems(step.trust) == [], step.name
        assert step.trust.identity == 44
    assert PLAN[-1].trust == WITH_IDENTITY


@pytest.mark.parametrize(
    ("index", "step_name"),
    [(i, step.name) for i, step in enumerate(IDENTITY_STEPS)],
)
def test_each_identity_bundle_meets_the_products_checks(index: int, step_name: str) -> None:
    """A bundle expected refused before check 13 is refused so by `open_bundle`; any other
    bundle passes every check up to 12 (the device then decides by its state)."""
    # given
    step = IDENTITY_STEPS[index]
    forge = Forge(DEVICE, KEYS)
    for send, expect in zip(step.sends, step.expects, strict=True):
        # when
        try:
            open_bundle(
                forge.build(send, seq=7, now=NOW),
                signers={key.key_id: key.public_key for key in KEYS.values()},
                device_id=DEVICE,
                last_seq=0,
                now=NOW,
            )
            refused = None
        except BundleRejectedError as exc:
            refused = exc.reason.value
        # then
        if expect.last == "rejected" and not expect.reasons <= AFTER_SIGNATURE:
            assert refused in expect.reasons, step_name
        else:
            assert refused is None, step_name


def _csr_der(common_name: str = DEVICE, *, key: Any = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def _csr_report(csr_der: bytes | None = None, *, attested_seq: int = 31, **fields: Any) -> Heard:
    """A `csr` report for seq 31, its field made of this CSR and an attestation of it."""
    der = csr_der if csr_der is not None else _csr_der()
    attestation = sign_attestation(ATTESTATION_KEY, DEVICE, attested_seq, 45, der)
    document = {
        "v": 2,
        "device_id": DEVICE,
        "rollout_id": "r",
        "seq": 31,
        "op": "keygen",
        "phase": "csr",
        "reason": "ok",
        "active_tags": [42],
        "csr": encode_keygen_output(der, attestation),
        **fields,
    }
    return Heard(document)


def test_a_csr_report_as_the_contract_says_has_no_problem() -> None:
    """A P-256 CSR for CN=device id, signed, with an attestation naming device, seq, CSR."""
    assert csr_problems(_csr_report()) == []


@pytest.mark.parametrize(
    ("report", "words"),
    [
        (_csr_report(csr="AAAA"), "not_two_parts"),
        (_csr_report(csr=None), "no csr field"),
        (_csr_report(_csr_der("another-device")), "not CN=nrf-352656100000000"),
        (
            _csr_report(_csr_der(key=rsa.generate_private_key(65537, 2048))),
            "not a P-256 key",
        ),
        (_csr_report(attested_seq=30), "names seq 30"),
        (_csr_report(b"\x30\x03\x02\x01\x00"), "not a PKCS#10 CSR"),
    ],
    ids=["malformed field", "no field", "wrong subject", "rsa key", "other seq", "not a csr"],
)
def test_a_csr_report_that_breaks_the_contract_is_named(report: Heard, words: str) -> None:
    """Each way a csr field can be wrong is a problem of the step, said in words."""
    assert any(words in problem for problem in csr_problems(report))


def test_a_keygen_step_fails_on_a_bad_csr_and_passes_on_a_good_one() -> None:
    """judge reads the csr report's field, not only its phase."""
    # given
    step = Step(
        name="keygen", proves="", sends=(Send(op="keygen"),), expects=(CSR,), trust=WITH_IDENTITY
    )
    state = Heard(
        {
            "credentials": [
                {"sec_tag": tag, "type": kind, "sha256": digest}
                for (tag, kind), digest in WITH_IDENTITY.items.items()
            ],
            "active_tags": [42],
            "identity_tag": 44,
        }
    )
    received = Heard(
        {"seq": 31, "rollout_id": "r", "op": "keygen", "phase": "received", "reason": "ok"}
    )
    sent = [Sent(31, "r", "keygen")]
    # when
    good = judge(step, sent, [[received, _csr_report()]], state=state, states_seen=[], timeout=1)
    bad = judge(
        step,
        sent,
        [[received, _csr_report(_csr_der("someone"))]],
        state=state,
        states_seen=[],
        timeout=1,
    )
    # then
    assert trust_of(state.document or {}) == WITH_IDENTITY
    assert good.passed, good.detail
    assert not bad.passed
    assert "not CN=nrf-352656100000000" in bad.detail


@pytest.mark.parametrize(
    ("trust", "words"),
    [
        (
            Trust(items={(42, 0): "a" * 64, (44, 1): "b" * 64}, active=(42,), identity=44),
            "type [2]",
        ),
        (
            Trust(
                items={(42, 0): "a" * 64, (42, 1): "b" * 64, (42, 2): "c" * 64},
                active=(42,),
                identity=42,
            ),
            "is in the active list",
        ),
    ],
    ids=["no key", "identity is a CA tag"],
)
def test_a_state_breaking_an_identity_invariant_is_a_problem(trust: Trust, words: str) -> None:
    """The identity tag holds a certificate and its key, and is not an active tag."""
    assert any(words in problem for problem in trust_problems(trust))


def test_the_docs_list_every_identity_step() -> None:
    """docs/conformance.md has a row for each identity step, under its own heading."""
    doc = (REPO / "docs" / "conformance.md").read_text()
    rows = set(re.findall(r"^\| ([^|]+?) \|", doc, re.M))
    assert [s.name for s in IDENTITY_STEPS if s.name not in rows] == []
    assert "### Identity" in doc
