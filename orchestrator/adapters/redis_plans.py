"""Renewal plans in Redis: one JSON document per plan, indexed by creation time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis

from orchestrator.adapters.redis_inventory import store_errors

__all__ = ["RedisPlans"]

PLANS = "certfleet:plans"


def _key(plan_id: str) -> str:
    return f"certfleet:plan:{plan_id}"


class RedisPlans:
    """`PlanStore`: `certfleet:plan:{id}` (JSON) and the `certfleet:plans` index."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis: Any = client

    def save(self, plan: dict[str, Any]) -> None:
        """Write the whole plan."""
        created = datetime.fromisoformat(plan["created_at"]).timestamp()
        with store_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(_key(plan["id"]), json.dumps(plan))
            pipe.zadd(PLANS, {plan["id"]: created})
            pipe.execute()

    def load(self, plan_id: str) -> dict[str, Any] | None:
        """One plan, or None."""
        with store_errors():
            raw = self._redis.get(_key(plan_id))
        plan: dict[str, Any] | None = json.loads(raw) if raw else None
        return plan

    def recent(self, limit: int = 200) -> Iterable[dict[str, Any]]:
        """The latest plans, newest first."""
        with store_errors():
            ids = self._redis.zrevrange(PLANS, 0, limit - 1)
        for plan_id in ids:
            plan = self.load(plan_id)
            if plan is not None:
                yield plan
