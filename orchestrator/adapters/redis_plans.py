"""Renewal plans in Redis: one JSON document per plan, its summary, an index by creation time.

Keys (global, each command touches one of them; on a cluster they lie in any slot):

- `certfleet:plan:{id}` (string): the plan, `RenewalPlan.to_json()`;
- `certfleet:plan-summary:{id}` (string): the plan without its device lists,
  `PlanSummary.to_json()` (a few hundred bytes, however many devices the plan lists);
- `certfleet:plans` (zset): plan id -> its `created_at` in epoch seconds.

The three are in different slots, so no transaction holds them: `save` writes the plan,
then its summary, then indexes it. A crash in between leaves a plan nobody lists, or
listed with its previous summary, until the next `save` of that plan writes all three
again; never an index entry without its plan. A plan saved before summaries existed
is summarised from its document when it is listed.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import store_errors
from orchestrator.domain.renewal import PlanSummary, RenewalPlan

__all__ = ["PLANS", "RedisPlans"]

PLANS = "certfleet:plans"


def _key(plan_id: str) -> str:
    """The key of one plan's document."""
    return f"certfleet:plan:{plan_id}"


def _summary_key(plan_id: str) -> str:
    """The key of one plan's summary."""
    return f"certfleet:plan-summary:{plan_id}"


class RedisPlans:
    """`PlanStore` on Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._redis: Any = client

    @store_errors()
    def save(self, plan: RenewalPlan) -> None:
        """Write the whole plan, then its summary, then index it (three commands, in this
        order)."""
        self._redis.set(_key(plan.id), json.dumps(plan.to_json()))
        self._redis.set(_summary_key(plan.id), json.dumps(plan.summary().to_json()))
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

    @store_errors()
    def summaries(self, limit: int = 200) -> list[PlanSummary]:
        """The latest plans without their device lists, newest first: one pipelined round
        trip after the index, and one more for plans saved before summaries existed."""
        ids: list[str] = self._redis.zrevrange(PLANS, 0, limit - 1)
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for plan_id in ids:
            pipe.get(_summary_key(plan_id))
        summaries: list[str | None] = pipe.execute()
        older = [plan_id for plan_id, raw in zip(ids, summaries, strict=True) if raw is None]
        documents: dict[str, str | None] = {}
        if older:
            pipe = self._redis.pipeline(transaction=False)
            for plan_id in older:
                pipe.get(_key(plan_id))
            documents = dict(zip(older, pipe.execute(), strict=True))
        found: list[PlanSummary] = []
        for plan_id, raw in zip(ids, summaries, strict=True):
            if raw is not None:
                found.append(PlanSummary.from_json(json.loads(raw)))
            elif document := documents.get(plan_id):
                found.append(RenewalPlan.from_json(json.loads(document)).summary())
        return found

    def open_plans(self, limit: int = 200) -> list[RenewalPlan]:
        """The latest plans still open, newest first."""
        return [plan for plan in self.recent(limit) if plan.is_open]
