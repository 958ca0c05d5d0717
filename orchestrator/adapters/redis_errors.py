"""What every Redis adapter shares: one way to report an unreachable Redis, one way to load Lua.

`store_errors()` turns a lost connection or a timeout into `StoreUnavailableError`
(a `TransientError`, so tasks retry it and the API answers 503), and so does what a
Redis Cluster answers while a failover is under way (`STORE_AWAY`: the cluster down
until a replica is promoted, a slot no master serves yet, TRYAGAIN) or while none of its
nodes answers, once the cluster client's own retries gave up. It is a context manager and, as any
`contextlib.contextmanager`, a decorator too:

    with store_errors():
        client.incr(key)

    @store_errors()
    def device_count(self) -> int: ...

Lua scripts live as `.lua` files in a `lua/` folder beside the adapter that runs
them, each opening with a comment giving its KEYS and ARGV and what it returns;
`load_script(client, "orchestrator.adapters", "record_states")` registers
`orchestrator/adapters/lua/record_states.lua` with the client.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import redis
from redis.commands.core import Script
from redis.exceptions import (
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.domain.errors import StoreUnavailableError

__all__ = ["STORE_AWAY", "load_script", "script_text", "store_errors"]

STORE_AWAY = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
"""What a Redis (or a Redis Cluster in a failover) raises while it cannot answer for now."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn Redis connection failures (`STORE_AWAY`) into `StoreUnavailableError`, and so
    a cluster client's `RedisClusterException` caused by one (no node of the cluster
    answered when it looked for the slots again); any other error passes unchanged."""
    try:
        yield
    except STORE_AWAY as exc:
        raise StoreUnavailableError(f"Redis is unreachable: {exc}") from exc
    except RedisClusterException as exc:
        if isinstance(exc.__cause__, STORE_AWAY):
            raise StoreUnavailableError(f"Redis Cluster is unreachable: {exc}") from exc
        raise


@functools.cache
def script_text(package: str, name: str) -> str:
    """The source of the Lua script `lua/{name}.lua` shipped in `package`."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def load_script(client: RedisClient, package: str, name: str) -> Script:
    """Register the Lua script `lua/{name}.lua` of `package` with `client` (EVALSHA, then EVAL)."""
    return client.register_script(script_text(package, name))
