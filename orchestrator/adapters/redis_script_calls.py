"""Run a batch of Lua script calls in as few round trips as the deployment allows.

On one Redis the calls go in one non-transactional pipeline (redis-py's pipeline loads
a script the server lacks). redis-py's cluster pipeline refuses EVALSHA, so on a Redis
Cluster (the one place this adapter tells the two apart) the calls are grouped by the
master holding their first key and sent as one pipeline per master, on that master's
own connection: a round trip per master, not per call. A call a master refuses because
its slot moved (a failover, a resharding) or is unavailable for a moment is sent again
alone through the cluster client, which follows the redirection: every script run this
way must be safe to run twice (each of the inventory's applies nothing a second time).
As in a pipeline, every call runs before the first error is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError, ClusterDownError, ConnectionError, TryAgainError

from orchestrator.adapters.redis_connection import RedisClient

__all__ = ["ScriptCall", "run_script_calls"]

_REDIRECTED = (AskError, TryAgainError, ClusterDownError, ConnectionError)
"""What a master answers for a slot it no longer serves (MOVED is an AskError), or
while the cluster fails over."""


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script: its keys (all of one hash slot) and arguments."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


def run_script_calls(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each call's reply, in order; the first error raised once every call has run."""
    if not calls:
        return []
    if not isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for call in calls:
            call.script(keys=list(call.keys), args=list(call.args), client=pipe)
        return list(pipe.execute())
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, call in enumerate(calls):
        node = client.get_node_from_key(call.keys[0])  # type: ignore[no-untyped-call]
        by_node.setdefault(node.name, (node, []))[1].append(i)
    replies: list[Any] = [None] * len(calls)
    for node, indexes in by_node.values():
        try:
            pipe = client.get_redis_connection(node).pipeline(transaction=False)
            for i in indexes:
                calls[i].script(keys=list(calls[i].keys), args=list(calls[i].args), client=pipe)
            answers = pipe.execute(raise_on_error=False)
        except _REDIRECTED as error:
            answers = [error] * len(indexes)
        for i, answer in zip(indexes, answers, strict=True):
            again = isinstance(answer, _REDIRECTED)
            call = calls[i]
            replies[i] = (
                call.script(keys=list(call.keys), args=list(call.args)) if again else answer
            )
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
