"""Several CAs for one sec_tag are one CA chain item, refused over 4096 bytes before
anything is stored or sent (rollout create, the stage a push signs)."""

from __future__ import annotations

import pytest

from orchestrator.domain.credentials import (
    CA_CHAIN_MAX_BYTES,
    CredentialType,
    ca_chain_item,
    sha256_hex,
)
from orchestrator.domain.errors import CaChainTooLargeError
from orchestrator.domain.rollout_states import PushStep
from orchestrator.services.rollout import (
    create_rollout,
    dispatch_wave,
    evaluate_rollout,
    start_rollout,
)
from tests.fake_rollouts import trust_add_spec
from tests.pem_sizes import ca_pems_of_total
from tests.rollout_rig import Engine, make_engine
from tests.unit.builders import NOW

pytestmark = pytest.mark.unit


@pytest.fixture
def engine() -> Engine:
    return make_engine()


def test_an_item_of_exactly_the_limit_passes_and_one_byte_more_is_refused() -> None:
    """4096 bytes of PEM text is one item, byte for byte; 4097 is refused, naming the size."""
    fits = ca_pems_of_total(CA_CHAIN_MAX_BYTES)
    assert ca_chain_item(fits) == "".join(fits)
    with pytest.raises(CaChainTooLargeError, match="4097 bytes"):
        ca_chain_item(ca_pems_of_total(CA_CHAIN_MAX_BYTES + 1))


def test_one_pem_stays_as_it_was_and_pems_are_joined_on_lines_of_their_own() -> None:
    """A single file is unchanged (its digest is the file's); a file without a final newline
    does not run into the next one's BEGIN line."""
    first, second = ca_pems_of_total(1500)
    assert ca_chain_item([first.rstrip("\n")]) == first.rstrip("\n")
    joined = ca_chain_item([first.rstrip("\n"), second])
    assert joined == first.rstrip("\n") + "\n" + second
    assert "----------" not in joined


def test_rollout_create_refuses_an_item_over_the_limit_and_stores_nothing(engine: Engine) -> None:
    """4097 bytes of CAs: refused before any claim or store; 4096 bytes: created."""
    too_large = trust_add_spec(ca_pems=tuple(ca_pems_of_total(CA_CHAIN_MAX_BYTES + 1)))
    with pytest.raises(CaChainTooLargeError, match="4097 bytes"):
        create_rollout(engine.deps, too_large, now=NOW, actor="test", start=False)
    assert engine.store.list_ids() == []
    assert engine.store.claimed_by("dev-00") is None
    fits = trust_add_spec(ca_pems=tuple(ca_pems_of_total(CA_CHAIN_MAX_BYTES)))
    assert create_rollout(engine.deps, fits, now=NOW, actor="test", start=False)


def test_two_cas_go_to_the_device_as_one_type_0_item_whose_digest_the_spec_names(
    engine: Engine,
) -> None:
    """The stage a push signs holds one CA chain item, the PEMs concatenated: a modem holds
    one per sec_tag, and its digest is what the device will report for the spare tag."""
    pems = tuple(ca_pems_of_total(2000))
    spec = trust_add_spec(ca_pems=pems)
    rid = create_rollout(engine.deps, spec, now=NOW, actor="test", start=True)
    start_rollout(engine.deps, rid, now=NOW, actor="test")
    evaluate_rollout(engine.deps, rid, now=NOW)
    dispatch_wave(engine.deps, rid, 0, now=NOW)
    assert engine.run_pushes() > 0
    device, data = engine.publisher.sent[0]
    bundle = engine.opened(device, data)
    assert [(c.type, c.pem) for c in bundle.credentials] == [
        (CredentialType.CA_CHAIN, "".join(pems))
    ]
    assert spec.new_ca_digest == sha256_hex("".join(pems).encode())
    assert engine.store.bundles(rid, [device], PushStep.STAGE)
