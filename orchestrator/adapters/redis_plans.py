"""Renewal plans in Redis: one JSON document per plan, indexed by creation time.

Keys:

- `certfleet:plan:{id}` (string): the plan, `RenewalPlan.to_json()`;
- `certfleet:plans` (zset): plan id -> its `created_at` in epoch seconds.
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
    return f"certfleet:plan:{plan_id}"


class RedisPlans:
    """`PlanStore` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def save(self, plan: RenewalPlan) -> None:
        """Write the whole plan and index it, in one transaction."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(_key(plan.id), json.dumps(plan.to_json()))
        pipe.zadd(PLANS, {plan.id: plan.created_at.timestamp()})
        pipe.execute()

    @store_errors()
    def load(self, plan_id: str) -> RenewalPlan | None:
        """One plan, or None."""
        raw: str | None = self._redis.get(_key(plan_id))
        return RenewalPlan.from_json(json.loads(raw)) if raw else None

    @store_errors()
    def recent(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans, newest first, read in one round trip after the index."""
        ids: list[str] = self._redis.zrevrange(PLANS, 0, limit - 1)
        if not ids:
            return []
        documents: list[str | None] = self._redis.mget([_key(plan_id) for plan_id in ids])
        return [RenewalPlan.from_json(json.loads(raw)) for raw in documents if raw]

    def open_plans(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans still open, newest first."""
        return [plan for plan in self.recent(limit) if plan.is_open]
