"""Mutated bundles at a device's firmware: each refused for a reason its class allows.

The device is `simulator.firmware.Firmware`, driven in-process through a link that
keeps its reports. It holds the old CA in sec_tag 42 (active) and has accepted
bundles up to seq `LAST_SEQ`. Every bundle comes from a seeded generator, so a run is
reproducible; after each one the device must have published exactly one `rejected`
report with a reason of the bundle's class (docs/protocol.md §4 and §8 name them; a
class lists every documented reason that fits it, so a firmware that checks in
another order still passes), and its key store, active list, last seq and pending
key store work must be what they were: never without trust.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol import CA_CHAIN_MAX_BYTES, CredentialType, Topics
from orchestrator.protocol.bundle import MAX_BUNDLE_BYTES, Bundle, Probe, encode_payload
from orchestrator.protocol.bundle import Credential as BundleCredential
from orchestrator.protocol.cose import Sign1Message, key_id, sign1
from simulator.firmware import Firmware
from simulator.modem import Modem
from simulator.pki import IssuedCA, make_ca

__all__ = ["CLASSES", "BundleOutcome", "run_bundles"]

DEVICE = "dev-chaos"
OTHER = "dev-other"
LAST_SEQ = 1000
"""The last seq the device accepted before the run: lower ones are replays."""
ACTIVE, SPARE = 42, 43
UNVERIFIED = frozenset({"bad_envelope", "unsupported_algorithm", "unknown_key", "bad_signature"})
"""Refusals before the signature verified (docs/protocol.md §4, checks 2 to 5)."""

CLASSES: dict[str, frozenset[str]] = {
    "bit_flip": UNVERIFIED,
    "truncated": UNVERIFIED,
    "wrong_key": frozenset({"unknown_key"}),
    "wrong_kid": frozenset({"bad_signature"}),
    "wrong_device": frozenset({"wrong_device"}),
    "replayed": frozenset({"replay"}),
    "expired": frozenset({"bundle_expired"}),
    "not_yet_valid": frozenset({"not_yet_valid"}),
    "oversized": frozenset({"too_large"}),
    "oversized_chain": frozenset({"too_large"}),
    "bad_payload": frozenset({"bad_payload", "unsupported_version"}),
    "stage_over_active": frozenset({"tag_in_use", "unsafe_active", "invalid_operation"}),
    "commit_unstaged": frozenset({"nothing_staged"}),
    "retire_unsafe": frozenset({"invalid_operation", "unsafe_active"}),
}
"""Mutation class -> the documented rejection reasons that fit it."""


@dataclass
class BundleOutcome:
    """What a run of mutated bundles did."""

    sent: Counter[str] = field(default_factory=Counter)
    """Bundles per class."""
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(class, reason reported) -> bundles."""
    redrawn: int = 0
    """Bit flips redrawn because they left every signed byte as it was."""
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class _Link:
    """Stands in for the MQTT connection: every publish acknowledged, reports kept."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if topic.endswith("/report"):
            self.reports.append(json.loads(payload))


@dataclass(frozen=True)
class _Keys:
    trusted: ec.EllipticCurvePrivateKey
    stranger: ec.EllipticCurvePrivateKey
    old_ca: IssuedCA
    new_ca: IssuedCA


def _keys(seed: int) -> _Keys:
    """Signer keys derived from the seed; the CAs are fresh (only their bytes matter)."""
    now = datetime.now(UTC)
    return _Keys(
        trusted=ec.derive_private_key(1_000_003 + seed, ec.SECP256R1()),
        stranger=ec.derive_private_key(2_000_003 + seed, ec.SECP256R1()),
        old_ca=make_ca(
            "Chaos old CA", not_before=now - timedelta(days=9), not_after=now + timedelta(days=9)
        ),
        new_ca=make_ca(
            "Chaos new CA", not_before=now - timedelta(days=1), not_after=now + timedelta(days=900)
        ),
    )


def _device(keys: _Keys) -> Firmware:
    modem = Modem()
    modem.write(ACTIVE, CredentialType.CA_CHAIN, keys.old_ca.pem)
    firmware = Firmware(
        DEVICE,
        modem,
        topics=Topics("certfleet"),
        signers={key_id(keys.trusted.public_key()): keys.trusted.public_key()},
        active_tags=[ACTIVE],
    )
    firmware.last_seq = LAST_SEQ
    return firmware


def _snapshot(device: Firmware) -> tuple[object, ...]:
    """Everything a refused bundle must leave as it was."""
    items = sorted(
        (i.sec_tag, int(i.type), device.modem.digest(i.sec_tag, i.type))
        for i in device.modem.items()
    )
    return (
        items,
        list(device.active_tags),
        device.last_seq,
        device.needs_offline,
        sorted(device.signers),
    )


def _trusted(device: Firmware) -> bool:
    """The device can still validate a server: an active tag holding a CA chain."""
    return any(device.modem.exists(t, CredentialType.CA_CHAIN) for t in device.active_tags)


class _Maker:
    """Bundles of every class, from a seeded generator."""

    def __init__(self, keys: _Keys, rng: random.Random) -> None:
        self.keys = keys
        self.rng = rng
        self.now = int(datetime.now(UTC).timestamp())
        self.kid = key_id(keys.trusted.public_key())

    def seq(self) -> int:
        return LAST_SEQ + 1 + self.rng.randrange(1_000_000)

    def stage(self, **overrides: Any) -> Bundle:
        fields: dict[str, Any] = {
            "device_id": DEVICE,
            "rollout_id": f"r-{self.rng.randrange(100)}",
            "seq": self.seq(),
            "op": "stage",
            "issued_at": self.now - 5,
            "expires_at": self.now + 3600,
            "tag": SPARE,
            "credentials": (
                BundleCredential(CredentialType.CA_CHAIN, self.keys.new_ca.pem.decode()),
            ),
            "probe": Probe(host="127.0.0.1", port=8883, tags=(SPARE,)),
            "active": (ACTIVE, SPARE),
            "commit_by": self.now + 600,
        }
        fields.update(overrides)
        return Bundle(**fields)

    def genuine(self) -> Bundle:
        """A bundle the device would take, of one of the ops a rollout sends."""
        base = self.stage()
        op = self.rng.choice(("stage", "commit", "retire"))
        if op == "commit":
            return replace(base, op="commit", credentials=(), probe=None, active=(), commit_by=None)
        if op == "retire":
            return self.retire(base.seq, tags=(SPARE,), active=(ACTIVE,))
        return base

    def retire(self, seq: int, *, tags: tuple[int, ...], active: tuple[int, ...]) -> Bundle:
        return Bundle(
            device_id=DEVICE,
            rollout_id="r-1",
            seq=seq,
            op="retire",
            issued_at=self.now - 5,
            expires_at=self.now + 3600,
            tags=tags,
            active=active,
        )

    def signed(
        self,
        payload: bytes,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: bytes | None = None,
    ) -> bytes:
        key = key or self.keys.trusted
        return sign1(payload, private_key=key, kid=kid or key_id(key.public_key()))

    def sign(self, bundle: Bundle) -> bytes:
        return self.signed(encode_payload(bundle))

    def document(self, bundle: Bundle, **changes: Any) -> bytes:
        """The bundle's payload map with keys changed (None removes one), re-encoded."""
        doc = cbor2.loads(encode_payload(bundle))
        for name, value in changes.items():
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        return cbor2.dumps(doc, canonical=True)


def _bit_flip(m: _Maker) -> bytes | None:
    original = m.sign(m.genuine())
    data = bytearray(original)
    for _ in range(m.rng.choice((1, 1, 1, 2, 8))):
        data[m.rng.randrange(len(data))] ^= 1 << m.rng.randrange(8)
    mutated = bytes(data)
    try:
        a, b = Sign1Message.decode(original), Sign1Message.decode(mutated)
    except Exception:  # the mutation broke the envelope: a fine case
        return mutated
    same = (a.protected_bytes, a.payload, a.signature) == (
        b.protected_bytes,
        b.payload,
        b.signature,
    )
    return None if same else mutated  # None: only unsigned bytes changed, redraw


def _truncated(m: _Maker) -> bytes:
    data = m.sign(m.genuine())
    return data[: m.rng.randrange(len(data))]


def _payload_mutation(m: _Maker) -> bytes:
    bundle = m.genuine()
    choice = m.rng.randrange(6)
    changes: dict[str, Any] = [
        {"seq": str(bundle.seq)},
        {"v": 3 + m.rng.randrange(100)},
        {"op": "format-modem"},
        {"dev": None},
        {"x-extra": m.rng.randrange(10)},
        {"exp": bundle.issued_at - 1},
    ][choice]
    payload = m.document(bundle, **changes)
    if m.rng.random() < 0.1:
        payload = payload[:-1] if len(payload) > 1 else b"\xff"  # not CBOR at all
    return m.signed(payload)


def _oversized_chain(m: _Maker) -> bytes:
    """A CA item over 4096 bytes in a bundle within the bundle limit: check 12, not check 1."""
    pem = m.keys.new_ca.pem.decode()
    extra = m.rng.randrange(MAX_BUNDLE_BYTES - CA_CHAIN_MAX_BYTES - 1024)  # the rest of a stage
    big = (pem * (4096 // len(pem) + 1 + m.rng.randrange(3)))[: CA_CHAIN_MAX_BYTES + 1 + extra]
    return m.sign(m.stage(credentials=(BundleCredential(CredentialType.CA_CHAIN, big),)))


_MAKERS: dict[str, Callable[[_Maker], bytes | None]] = {
    "bit_flip": _bit_flip,
    "truncated": _truncated,
    "wrong_key": lambda m: m.signed(encode_payload(m.genuine()), key=m.keys.stranger),
    "wrong_kid": lambda m: m.signed(encode_payload(m.genuine()), key=m.keys.stranger, kid=m.kid),
    "wrong_device": lambda m: m.sign(replace(m.genuine(), device_id=OTHER)),
    "replayed": lambda m: m.sign(replace(m.genuine(), seq=1 + m.rng.randrange(LAST_SEQ))),
    "expired": lambda m: m.sign(
        replace(m.genuine(), issued_at=m.now - 7200, expires_at=m.now - 1 - m.rng.randrange(3600))
    ),
    "not_yet_valid": lambda m: m.sign(
        replace(
            m.genuine(),
            issued_at=m.now + 400 + m.rng.randrange(10**6),
            expires_at=m.now + 2 * 10**6,
        )
    ),
    "oversized": lambda m: m.sign(m.genuine()) + bytes(MAX_BUNDLE_BYTES + m.rng.randrange(1, 4096)),
    "oversized_chain": _oversized_chain,
    "bad_payload": _payload_mutation,
    "stage_over_active": lambda m: m.sign(
        m.stage(tag=ACTIVE, probe=Probe("127.0.0.1", 8883, (ACTIVE,)))
    ),
    "commit_unstaged": lambda m: m.sign(
        replace(m.stage(), op="commit", credentials=(), probe=None, active=(), commit_by=None)
    ),
    "retire_unsafe": lambda m: m.sign(
        m.retire(m.seq(), tags=(ACTIVE,), active=m.rng.choice(((SPARE,), (ACTIVE,), (44, 45))))
    ),
}


def _check(
    outcome: BundleOutcome,
    kind: str,
    reports: list[dict[str, Any]],
    device: Firmware,
    before: tuple[object, ...],
) -> None:
    problem = ""
    if len(reports) != 1 or reports[0]["phase"] != "rejected":
        problem = f"reports {[(r['phase'], r['reason']) for r in reports]}, want one rejected"
    elif reports[0]["reason"] not in CLASSES[kind]:
        problem = f"reason {reports[0]['reason']}, want one of {sorted(CLASSES[kind])}"
    elif reports[0]["reason"] in UNVERIFIED and (reports[0]["rollout_id"] or reports[0]["seq"]):
        problem = "a rejection before the signature verified names a rollout or seq"
    elif _snapshot(device) != before:
        problem = "the key store, active list, last seq or signers changed"
    elif not _trusted(device):
        problem = "the device holds no active CA chain"
    if reports and not problem:
        outcome.reasons[kind, reports[0]["reason"]] += 1
    if problem and len(outcome.problems) < 20:
        outcome.problems.append(f"{kind} #{outcome.sent[kind]}: {problem}")


async def _drive(count: int, seed: int) -> BundleOutcome:
    rng = random.Random(seed)
    keys = _keys(seed)
    maker = _Maker(keys, rng)
    device = _device(keys)
    before = _snapshot(device)
    outcome = BundleOutcome()
    kinds = sorted(CLASSES)
    for n in range(count):
        kind = kinds[n % len(kinds)]
        payload = _MAKERS[kind](maker)
        while payload is None:
            outcome.redrawn += 1
            payload = _MAKERS[kind](maker)
        link = _Link()
        await device.handle(link, payload)
        device.check_commit_deadline()
        outcome.sent[kind] += 1
        _check(outcome, kind, link.reports, device, before)
    return outcome


def run_bundles(count: int, *, seed: int = 11) -> BundleOutcome:
    """`count` mutated bundles, the classes in turn, at one device; what became of them."""
    return asyncio.run(_drive(count, seed))
