"""The Redis adapters' shared parts: unreachable Redis as a transient error, Lua from files."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.exceptions import (
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

import orchestrator
from orchestrator.adapters.redis_errors import load_script, script_text, store_errors
from orchestrator.domain.errors import StoreUnavailableError, TransientError

pytestmark = pytest.mark.unit

SOURCE = Path(orchestrator.__file__).parent.parent
SCRIPTS = [
    (".".join(path.parent.parent.relative_to(SOURCE).parts), path.stem)
    for path in sorted(SOURCE.joinpath("orchestrator").rglob("lua/*.lua"))
]
"""Every shipped Lua script as (package, name)."""


def test_a_lost_connection_is_a_transient_store_error() -> None:
    """A dropped connection or a timeout reaches callers as `StoreUnavailableError`."""
    for failure in (redis.ConnectionError("refused"), redis.TimeoutError("timed out")):
        # when
        with pytest.raises(StoreUnavailableError) as raised, store_errors():
            raise failure
        # then
        assert isinstance(raised.value, TransientError)
        assert raised.value.__cause__ is failure
        assert "Redis is unreachable" in str(raised.value)


@pytest.mark.parametrize(
    "failure",
    [
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        SlotNotCoveredError('Slot "866" is not covered by the cluster.'),
        TryAgainError("TRYAGAIN"),
    ],
    ids=["cluster-down", "master-down", "slot-not-covered", "try-again"],
)
def test_a_cluster_mid_failover_is_a_transient_store_error(failure: Exception) -> None:
    """What a Redis Cluster answers until a replica is promoted is retried, as a lost
    connection is."""
    # when
    with pytest.raises(StoreUnavailableError) as raised, store_errors():
        raise failure
    # then
    assert raised.value.__cause__ is failure


def test_a_cluster_no_node_of_which_answers_is_a_transient_store_error() -> None:
    """The cluster client's own error when it reaches no node (a lost connection its cause)
    is retried; the same error for a misuse (a pipelined script) is a bug and passes."""
    # given
    lost = redis.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused.")
    # when
    with pytest.raises(StoreUnavailableError) as raised, store_errors():
        raise RedisClusterException("Redis Cluster cannot be connected.") from lost
    # then
    assert isinstance(raised.value.__cause__, RedisClusterException)
    with pytest.raises(RedisClusterException), store_errors():
        raise RedisClusterException("Calling pipelined function evalsha is blocked")


def test_store_errors_guards_a_method_as_a_decorator() -> None:
    """`@store_errors()` on a function maps failures as `with store_errors():` does."""

    # given
    @store_errors()
    def count() -> int:
        raise redis.ConnectionError("refused")

    # when / then
    with pytest.raises(StoreUnavailableError):
        count()


def test_other_redis_errors_pass_unchanged() -> None:
    """A command Redis refuses is a bug to see, not an outage to retry."""
    with pytest.raises(redis.ResponseError), store_errors():
        raise redis.ResponseError("WRONGTYPE")
    with pytest.raises(ClusterCrossSlotError), store_errors():
        raise ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot")


def test_load_script_registers_the_file_beside_the_adapter() -> None:
    """The loader hands the client the text of `lua/{name}.lua` in the package."""
    # given: a client that has not connected (registering sends nothing)
    client = redis.Redis(port=1)
    # when
    script = load_script(client, "orchestrator.adapters", "record_states")
    # then
    assert script.registered_client is client
    path = SOURCE / "orchestrator" / "adapters" / "lua" / "record_states.lua"
    assert script.script == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("package", "name"), SCRIPTS, ids=[name for _, name in SCRIPTS])
def test_every_script_states_its_keys_argv_and_result(package: str, name: str) -> None:
    """Each Lua file opens with a comment giving KEYS, ARGV and what it returns."""
    # given
    text = script_text(package, name)
    # when
    header = "".join(line for line in text.splitlines(True)[:30] if line.startswith("--"))
    # then
    assert text.startswith("--")
    assert "KEYS" in header
    assert "ARGV" in header
    assert "Returns" in header
