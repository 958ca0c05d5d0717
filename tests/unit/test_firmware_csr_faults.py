"""certfleet's CSR checks refuse each broken keygen the simulator can be told to make.

A simulated device with an identity in 44 runs a keygen into 45 (the `World` of the
firmware tests); its `csr` report goes through `check_csr` with the fleet's attestation
keys and the device's certificate in use, as the rollout engine calls it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from orchestrator.domain.identity import CsrRefusal
from orchestrator.domain.identity_keys import spki_sha256
from orchestrator.protocol import CredentialType
from orchestrator.protocol.report import Phase
from orchestrator.services.identity import CheckedCsr, RefusedCsr, check_csr
from simulator.attestation import attestation_key
from tests.fakes import FakeIdentityStore
from tests.unit.firmware_world import IDENTITY_TAG, World

pytestmark = pytest.mark.unit


class _Keys:
    """The fleet's attestation keys, as certfleet's attestation keys file gives them."""

    def key_for(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """Every device's: derived from the fleet seed and its id."""
        return attestation_key(device_id).public_key()


NEIGHBOUR = ec.generate_private_key(ec.SECP256R1())
"""The factory key of another device (dev-2), whose certificate certfleet knows."""


def _key_holders(spkis: Sequence[str]) -> dict[str, str]:
    """The inventory's lookup: dev-2's certificate carries NEIGHBOUR's key."""
    known = {spki_sha256(NEIGHBOUR.public_key()): "dev-2"}
    return {spki: known[spki] for spki in spkis if spki in known}


def _checked(faults: frozenset[str]) -> CheckedCsr | RefusedCsr:
    world = World(identity=True, modem_faults=faults, modem_foreign_key=NEIGHBOUR)
    reports = world.deliver(world.sign(world.keygen(45, "r1")))
    (csr,) = [r for r in reports if r.phase is Phase.CSR]
    assert csr.csr is not None
    current = world.firmware.modem.read(IDENTITY_TAG, CredentialType.CLIENT_CERT).decode()
    return check_csr(
        csr.csr,
        device_id="dev-1",
        rollout_id="r1",
        keygen_seq=csr.seq,
        keygen_tag=45,
        attestation_keys=_Keys(),
        identity_store=FakeIdentityStore(),
        current_certificate_pem=current,
        key_holders=_key_holders,
    )


def test_a_sound_keygen_passes_every_check() -> None:
    """No fault: the CSR is accepted and its key claimed."""
    assert isinstance(_checked(frozenset()), CheckedCsr)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("csr-wrong-subject", CsrRefusal.WRONG_SUBJECT),
        ("csr-bad-signature", CsrRefusal.BAD_SIGNATURE),
        ("attestation-forged", CsrRefusal.BAD_ATTESTATION),
        ("csr-reused-key", CsrRefusal.KEY_REUSED),
        ("csr-foreign-key", CsrRefusal.KEY_REUSED),
    ],
)
def test_each_keygen_fault_is_refused_with_its_reason(fault: str, reason: CsrRefusal) -> None:
    """The refusal names what the fault broke."""
    result = _checked(frozenset({fault}))
    assert isinstance(result, RefusedCsr)
    assert result.reason is reason, result.detail
