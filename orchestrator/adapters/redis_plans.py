"""Renewal plans in Redis: one JSON document per plan, indexed by creation time.

Keys (global, each command touches one of them; on a cluster they lie in any slot):

- `certfleet:plan:{id}` (string): the plan, `RenewalPlan.to_json()`;
- `certfleet:plans` (zset): plan id -> its `created_at` in epoch seconds.

A plan and its index entry are in different slots, so no transaction holds both:
`save` writes the plan, then indexes it. A crash between the two leaves a plan nobody
lists (saved again whole by the next `save` of that plan), never an index entry
without its plan.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.domain.renewal import RenewalPlan

__all__ = ["PLANS", "RedisPlans"]

PLANS = "certfleet:plans"


def _key(plan_id: str) -> str:
    """The key of one plan's document."""
    return f"certfleet:plan:{plan_id}"


class RedisPlans:
    """`PlanStore` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def save(self, plan: RenewalPlan) -> None:
        """Write the whole plan, then index it (two commands, in this order)."""
        self._redis.set(_key(plan.id), json.dumps(plan.to_json()))
        self._redis.zadd(PLANS, {plan.id: plan.created_at.timestamp()})

    @store_errors()
    def load(self, plan_id: str) -> RenewalPlan | None:
        """One plan, or None."""
        raw: str | None = self._redis.get(_key(plan_id))
        return RenewalPlan.from_json(json.loads(raw)) if raw else None

    @store_errors()
    def recent(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans, newest first, read in one pipelined round trip after the index
        (per node on a cluster)."""
        ids: list[str] = self._redis.zrevrange(PLANS, 0, limit - 1)
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for plan_id in ids:
            pipe.get(_key(plan_id))
        documents: list[str | None] = pipe.execute()
        return [RenewalPlan.from_json(json.loads(raw)) for raw in documents if raw]

    def open_plans(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans still open, newest first."""
        return [plan for plan in self.recent(limit) if plan.is_open]
