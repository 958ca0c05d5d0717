"""Webhook ids seen in the last day, each with the first answer given to it.

A sender retries a delivery until it gets a 2xx, so one event may arrive several
times, even twice at once. The first delivery claims its `webhook-id` (SET NX with a
short expiry), runs the handler and stores its answer over the claim for a day; a
repeated id gets that answer back and never runs the handler again; a repeat while
the first is still running gets a 409 and is retried by the sender.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.adapters.redis_inventory import store_errors

__all__ = ["RECEIPT_PREFIX", "Answer", "WebhookReceipts"]

RECEIPT_PREFIX = "certfleet:webhook:"
_CLAIM = "claim:"

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status code and JSON body."""

    status_code: int
    body: dict[str, Any]


class WebhookReceipts:
    """Idempotent webhook delivery on Redis keys `certfleet:webhook:{webhook-id}`."""

    def __init__(
        self, client: redis.Redis, *, keep_seconds: int = 24 * 3600, claim_seconds: int = 60
    ) -> None:
        self._redis: Any = client
        self._keep = keep_seconds
        self._claim_ttl = claim_seconds
        self._release = self._redis.register_script(_RELEASE)

    def claim(self, webhook_id: str) -> str | Answer:
        """Claim the id: a claim token when this delivery is the first, else the answer to give.

        The answer is the stored first answer, or a 409 while the first delivery is
        still being handled.
        """
        key = RECEIPT_PREFIX + webhook_id
        token = _CLAIM + secrets.token_hex(8)
        with store_errors():
            for _ in range(3):
                if self._redis.set(key, token, nx=True, ex=self._claim_ttl):
                    return token
                stored: str | None = self._redis.get(key)
                if stored is None:
                    continue  # the claim or receipt expired between SET and GET
                if stored.startswith(_CLAIM):
                    break
                answer = json.loads(stored)
                return Answer(status_code=int(answer["status_code"]), body=answer["body"])
        return Answer(
            status_code=409,
            body={"detail": f"webhook {webhook_id} is being handled; retry later"},
        )

    def record(self, webhook_id: str, answer: Answer) -> None:
        """Keep the first answer to `webhook_id` for `keep_seconds`."""
        value = json.dumps({"status_code": answer.status_code, "body": answer.body})
        with store_errors():
            self._redis.set(RECEIPT_PREFIX + webhook_id, value, ex=self._keep)

    def release(self, webhook_id: str, token: str) -> None:
        """Drop this delivery's claim (the handler failed), so a retry runs it again."""
        with store_errors():
            self._release(keys=[RECEIPT_PREFIX + webhook_id], args=[token])
