"""The project's shared bundle vectors, opened by the orchestrator's own `open_bundle`.

firmware/tests/vectors/bundles holds the valid and invalid bundles the C device library
is tested with (written by firmware/tests/make_bundles.py). Its MANIFEST names the
reason checks 1 to 12 of docs/protocol.md §4 give for each, its CONTEXT the device
they are for; the Python side must give the same reason, so the two decoders are held
to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.protocol.bundle import BundleRejectedError, Reason, Revocation, open_bundle
from orchestrator.protocol.limits import MAX_BUNDLE_BYTES

pytestmark = pytest.mark.unit

VECTORS: Final = Path(__file__).resolve().parents[2] / "firmware" / "tests" / "vectors" / "bundles"

PYTHON_READS: Final = {
    "env-signature-63": Reason.BAD_SIGNATURE,
    "payload-not-deterministic": Reason.OK,
    "dlg-label-first": Reason.OK,
    "dlg-label-after-other": Reason.OK,
}
"""The `c-only` cases, where the C decoder is stricter (firmware/README.md): a 63-byte
signature is `bad_envelope` in C (§3 fixes it at 64 bytes) and fails verification here
(check 5); a payload map out of the deterministic order of §3 is `bad_payload` in C
(the generated decoder reads keys in that order) and read whole here. The same holds of
a protected header out of its order (label -65537 first: `bad_envelope` in C) or with
another label before -65537 (`bad_delegation` in C), which the Python side reads by
label."""


@dataclass(frozen=True, slots=True)
class Context:
    """The device the vectors are for: its id, clock, last accepted seq, trusted signer,
    and its revocation (`revoked` key ids, `revoked_before`)."""

    device_id: str
    now: datetime
    last_seq: int
    signers: dict[bytes, ec.EllipticCurvePublicKey]
    revocation: Revocation


def _context() -> Context:
    """CONTEXT as the C tests read it: only the key named `signer` is trusted."""
    fields: dict[str, str] = {}
    signers: dict[bytes, ec.EllipticCurvePublicKey] = {}
    revoked: set[bytes] = set()
    for line in (VECTORS / "CONTEXT").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "revoked":
            revoked.add(bytes.fromhex(value))
        elif name == "key":
            role, kid, point = value.split()
            if role == "signer":
                curve = ec.SECP256R1()
                signers[bytes.fromhex(kid)] = ec.EllipticCurvePublicKey.from_encoded_point(
                    curve, bytes.fromhex(point)
                )
        else:
            fields[name] = value
    return Context(
        device_id=fields["device"],
        now=datetime.fromtimestamp(int(fields["now"]), UTC),
        last_seq=int(fields["last_seq"]),
        signers=signers,
        revocation=Revocation(frozenset(revoked), int(fields.get("revoked_before", "0"))),
    )


def _manifest() -> list[tuple[str, str, str]]:
    """(name, reason, `agree` or `c-only`) per line of MANIFEST."""
    rows = [line.split() for line in (VECTORS / "MANIFEST").read_text().splitlines()]
    return [(name, reason, scope) for name, reason, scope in rows]


CONTEXT: Final = _context()
MANIFEST: Final = _manifest()


def _python_reason(data: bytes) -> Reason:
    try:
        open_bundle(
            data,
            signers=CONTEXT.signers,
            device_id=CONTEXT.device_id,
            last_seq=CONTEXT.last_seq,
            now=CONTEXT.now,
            revocation=CONTEXT.revocation,
        )
    except BundleRejectedError as exc:
        return exc.reason
    return Reason.OK


@pytest.mark.parametrize(("name", "reason", "scope"), MANIFEST, ids=[row[0] for row in MANIFEST])
def test_each_vector_gives_the_reason_its_manifest_names(
    name: str, reason: str, scope: str
) -> None:
    """open_bundle gives the MANIFEST reason; a c-only case the Python side's own one."""
    data = (VECTORS / f"{name}.cbor").read_bytes()

    got = _python_reason(data)

    if scope == "c-only":
        assert got is PYTHON_READS[name]
        assert got.value != reason
    else:
        assert scope == "agree"
        assert got.value == reason


def test_the_manifest_names_every_vector_and_every_c_only_case_is_explained() -> None:
    """Each .cbor file has one manifest line, and only the explained cases are c-only."""
    names = [name for name, _, _ in MANIFEST]
    c_only = {name for name, _, scope in MANIFEST if scope == "c-only"}

    assert sorted(names) == sorted(p.stem for p in VECTORS.glob("*.cbor"))
    assert len(set(names)) == len(names)
    assert c_only == set(PYTHON_READS)


def test_the_vectors_meet_every_reason_of_checks_1_to_12() -> None:
    """Between them the agreeing cases give ok and every reason checks 1 to 12 can give,
    those of a delegation's checks 4 to 5d and 7a included."""
    checks_1_to_12 = {
        Reason.BAD_DELEGATION,
        Reason.DELEGATION_REVOKED,
        Reason.DELEGATION_EXPIRED,
        Reason.OUT_OF_SCOPE,
        Reason.OK,
        Reason.TOO_LARGE,
        Reason.BAD_ENVELOPE,
        Reason.UNSUPPORTED_ALGORITHM,
        Reason.UNKNOWN_KEY,
        Reason.BAD_SIGNATURE,
        Reason.BAD_PAYLOAD,
        Reason.UNSUPPORTED_VERSION,
        Reason.WRONG_DEVICE,
        Reason.REPLAY,
        Reason.BUNDLE_EXPIRED,
        Reason.NOT_YET_VALID,
    }

    seen = {Reason(reason) for _, reason, scope in MANIFEST if scope == "agree"}

    assert seen == checks_1_to_12


def test_the_size_limit_vectors_sit_on_the_contracts_limit() -> None:
    """size-at-limit is exactly the bundle limit and size-over-limit one byte more."""
    at = (VECTORS / "size-at-limit.cbor").read_bytes()
    over = (VECTORS / "size-over-limit.cbor").read_bytes()

    assert (len(at), len(over)) == (MAX_BUNDLE_BYTES, MAX_BUNDLE_BYTES + 1)
    assert _python_reason(at) is Reason.OK
    assert _python_reason(over) is Reason.TOO_LARGE
