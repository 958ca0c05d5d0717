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
from orchestrator.conformance.inbox import Heard, Inbox, trust_of, trust_problems
from orchestrator.conformance.material import (
    IdentityIssuer,
    SuiteKey,
    public_point,
    throwaway_ca,
)
from orchestrator.conformance.model import ANY_DIGEST, Send, Step, Trust
from orchestrator.conformance.plan import CSR, PlanInputs
from orchestrator.conformance.plan_delegation import ONLINE_KEYS
from orchestrator.conformance.restore import restore_bundles
from orchestrator.conformance.runner import Runner
from orchestrator.conformance.suite import build_plan, spare_tags
from orchestrator.conformance.verdict import Sent, judge
from orchestrator.protocol.bundle import BundleRejectedError, open_bundle
from orchestrator.protocol.keygen import encode_keygen_output, sign_attestation
from orchestrator.protocol.topics import Topics

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


def _inputs(initial: Trust, *, probe_identity: tuple[str, int] | None = None) -> PlanInputs:
    keys = {
        **KEYS,
        "temp9": SuiteKey.generate(),
        "foreign": SuiteKey.generate(),
        **{name: SuiteKey.generate() for name in ONLINE_KEYS},
    }
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
        probe_identity=probe_identity,
    )


PLAN: Final = build_plan(_inputs(WITH_IDENTITY))
ROTATING: Final = build_plan(_inputs(WITH_IDENTITY, probe_identity=("probe.example.net", 8883)))
ROTATION: Final = [s for s in ROTATING if s.name.startswith("identity rotation")]
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
    [(i, step.name) for i, step in enumerate([*IDENTITY_STEPS, *ROTATION])],
)
def test_each_identity_bundle_meets_the_products_checks(index: int, step_name: str) -> None:
    """A bundle expected refused before check 13 is refused so by `open_bundle`; any other
    bundle passes every check up to 12 (the device then decides by its state)."""
    # given
    step = [*IDENTITY_STEPS, *ROTATION][index]
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
    assert [s.name for s in [*IDENTITY_STEPS, *ROTATION] if s.name not in rows] == []
    assert "### Identity" in doc


def _issuer() -> IdentityIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Device CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=2027))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IdentityIssuer(ca, key)


def test_a_rotation_runs_only_with_a_probe_for_identities() -> None:
    """keygen, certified stage and commit in one step, then its rollback, back to the start."""
    # then
    assert [s.name for s in ROTATION] == [
        "identity rotation: keygen, stage, commit",
        "identity rotation: rollback",
    ]
    assert not any(s.name.startswith("identity rotation") for s in PLAN)
    rotate, back = ROTATION
    assert [send.op for send in rotate.sends] == ["keygen", "stage", "commit"]
    assert rotate.sends[1].certify
    assert rotate.trust is not None
    tag = rotate.sends[0].fields["tag"]
    assert rotate.trust.identity == tag
    assert rotate.trust.items[(tag, 2)] == ANY_DIGEST
    assert back.trust == WITH_IDENTITY


def test_a_trust_with_unknown_digests_matches_any_bytes_but_not_a_missing_item() -> None:
    """ANY_DIGEST stands for the device's own key and its certificate, not for absence."""
    expected = WITH_IDENTITY.holding(45, 1, 2).presenting(45)
    reported = Trust(
        items={**WITH_IDENTITY.items, (45, 1): "d" * 64, (45, 2): "e" * 64},
        active=(42,),
        identity=45,
    )
    assert reported.same_as(expected)
    assert not Trust(
        items={**WITH_IDENTITY.items, (45, 1): "d" * 64}, active=(42,), identity=45
    ).same_as(expected)
    assert not reported.same_as(expected.presenting(44))


def test_the_suites_ca_certifies_the_key_and_subject_of_a_csr() -> None:
    """The certificate carries the CSR's key and subject, issued by the CA, for clients."""
    # given
    issuer = _issuer()
    device_key = ec.generate_private_key(ec.SECP256R1())
    # when
    pem = issuer.certify(_csr_der(key=device_key), NOW)
    # then
    certificate = x509.load_pem_x509_certificate(pem.encode())
    assert certificate.public_key() == device_key.public_key()
    assert certificate.subject.rfc4514_string() == f"CN={DEVICE}"
    assert certificate.issuer == issuer.certificate.subject
    certificate.verify_directly_issued_by(issuer.certificate)


def test_the_suites_ca_refuses_a_key_of_another_certificate() -> None:
    """--identity-ca-key must be the key of --identity-ca."""
    issuer = _issuer()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="not the key of its certificate"):
        IdentityIssuer.load(
            issuer.certificate.public_bytes(serialization.Encoding.PEM),
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def test_the_runner_stages_the_certificate_it_issued_for_the_reported_csr() -> None:
    """A certify send carries a certificate for the key of its rid's csr report."""
    # given: the device reported a CSR for rollout r
    issuer, device_key = _issuer(), ec.generate_private_key(ec.SECP256R1())
    inbox = Inbox(DEVICE)
    inbox.reports.append(_csr_report(_csr_der(key=device_key), rollout_id="r"))
    runner = Runner(
        None,  # type: ignore[arg-type]  # no bundle is published here
        inbox,
        topics=Topics("certfleet"),
        forge=Forge(DEVICE, KEYS),
        next_seq=lambda: 1,
        clock=lambda: NOW,
        step_timeout=1,
        certify=issuer.certify,
    )
    placeholder = Send(op="stage", rid="r", fields={"creds": []}, certify=True)
    # when
    certified = runner._certified(placeholder)
    other_rid = runner._certified(Send(op="stage", rid="q", fields={"creds": []}, certify=True))
    # then
    creds = certified.fields["creds"]
    assert [c["type"] for c in creds] == [1]
    certificate = x509.load_pem_x509_certificate(creds[0]["pem"].encode())
    assert certificate.public_key() == device_key.public_key()
    assert other_rid.fields["creds"] == []


def test_a_device_left_on_the_suites_identity_is_rolled_back_before_the_spare_is_retired() -> None:
    """restore rolls the rotation back first, then retires the spare tag it held."""
    # given: the device presents the rotated identity (the rollback step failed)
    rotate = ROTATION[0]
    tag = rotate.sends[0].fields["tag"]
    current = WITH_IDENTITY.holding(tag, 1, 2).presenting(tag)
    # when
    bundles = restore_bundles(
        _inputs(WITH_IDENTITY, probe_identity=("probe.example.net", 8883)),
        ROTATING,
        {"identity rotation: rollback"},
        current,
    )
    # then
    assert [(send.op, send.rid) for send, _ in bundles] == [
        ("rollback", rotate.sends[0].rid),
        ("retire", ""),
    ]
