"""How every certfleet Redis connection behaves when Redis restarts or goes silent.

One set of socket options serves the state store's clients (`bootstrap`), Celery's
broker and result backend, and redbeat (`celery_queue.celery_config`), so each of
them notices a dead server and reconnects the same way. docs/operations.md
("Riding out a Redis or broker restart") says why each value is what it is.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import redis
from redis.backoff import EqualJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

__all__ = [
    "COMMAND_RETRIES",
    "CONNECT_TIMEOUT_SECONDS",
    "HEALTH_CHECK_SECONDS",
    "SOCKET_TIMEOUT_SECONDS",
    "RedisClient",
    "command_retry",
    "connect",
    "socket_options",
]

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
"""A state-store client: one Redis (or Sentinel's master) or a Redis Cluster."""

SOCKET_TIMEOUT_SECONDS: Final = 30.0
"""A command without an answer for this long fails (a server that vanished
without closing the connection, e.g. a failover or a dropped NAT entry)."""

CONNECT_TIMEOUT_SECONDS: Final = 5.0
"""A connection attempt fails after this long instead of the OS default of minutes."""

HEALTH_CHECK_SECONDS: Final = 10
"""A connection idle for this long is checked with PING before it is used again."""

COMMAND_RETRIES: Final = 6
"""How often a state-store command is sent again after a lost connection or a
timeout, waiting 0.25-0.5 s, 0.5-1 s, then 1-2 s four times: 5 to 9.5 s in all,
enough for a restarted Redis to answer again before the command gives up with
`StoreUnavailableError`."""


def socket_options() -> dict[str, float | bool]:
    """The redis-py connection options (also kombu transport option names)."""
    return {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def command_retry() -> Retry:
    """The retry of a state-store command (`COMMAND_RETRIES`), a fresh one per client."""
    return Retry(EqualJitterBackoff(cap=2.0, base=0.25), COMMAND_RETRIES)


def connect(url: str, *, cluster: bool, decode_responses: bool = True) -> RedisClient:
    """A state-store client with these options: `RedisCluster` when `cluster` (the URL
    names any node; the client learns the rest), else `Redis`."""
    if cluster:
        return RedisCluster.from_url(
            url, decode_responses=decode_responses, retry=command_retry(), **socket_options()
        )
    return redis.Redis.from_url(
        url, decode_responses=decode_responses, retry=command_retry(), **socket_options()
    )


def raw_twin(client: RedisClient) -> RedisClient:
    """A client of the same server (or cluster) whose replies are bytes, not str."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        kwargs = {**client.get_connection_kwargs(), "decode_responses": False}  # type: ignore[no-untyped-call]
        for name in ("host", "port", "db", "connection_pool", "retry"):
            kwargs.pop(name, None)
        return RedisCluster(host=node.host, port=node.port, retry=command_retry(), **kwargs)
    pool = client.connection_pool
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "decode_responses": False},
        )
    )
