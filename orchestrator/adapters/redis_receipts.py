"""Webhook ids seen in the last day, each with the first answer given to it.

A sender retries a delivery until it gets a 2xx, so one event may arrive several
times, even twice at once. The first delivery claims its `webhook-id` (SET NX with a
short expiry), runs the handler and stores its answer over the claim for a day; a
repeated id gets that answer back and never runs the handler again; a repeat while
the first is still running gets a 409 and is retried by the sender.

Keys: `certfleet:webhook:{webhook-id}` (string) holds `claim:{token}` while the first
delivery is handled, then the JSON `{"status_code", "body"}` of its answer. Each command
and the release script touch that one key (on a cluster, in whatever slot its name has).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from orchestrator.adapters.redis_connection import RedisClient
from orchestrator.adapters.redis_errors import load_script, store_errors
from orchestrator.domain.receipts import WebhookAnswer

__all__ = ["RECEIPT_PREFIX", "RedisWebhookReceipts"]

RECEIPT_PREFIX = "certfleet:webhook:"
_CLAIM = "claim:"


class RedisWebhookReceipts:
    """`WebhookReceiptStore` on Redis keys `certfleet:webhook:{webhook-id}`."""

    def __init__(
        self, client: RedisClient, *, keep_seconds: int = 24 * 3600, claim_seconds: int = 60
    ) -> None:
        self._redis: Any = client
        self._keep = keep_seconds
        self._claim_ttl = claim_seconds
        self._release = load_script(client, "orchestrator.adapters", "release_webhook_claim")

    @store_errors()
    def claim(self, webhook_id: str) -> str | WebhookAnswer:
        """Claim the id: a claim token when this delivery is the first, else the answer to give.

        The answer is the stored first answer, or a 409 while the first delivery is
        still being handled.
        """
        key = RECEIPT_PREFIX + webhook_id
        token = _CLAIM + secrets.token_hex(8)
        for _ in range(3):
            if self._redis.set(key, token, nx=True, ex=self._claim_ttl):
                return token
            stored: str | None = self._redis.get(key)
            if stored is None:
                continue  # the claim or receipt expired between SET and GET
            if stored.startswith(_CLAIM):
                break
            answer = json.loads(stored)
            return WebhookAnswer(status_code=int(answer["status_code"]), body=answer["body"])
        return WebhookAnswer(
            status_code=409,
            body={"detail": f"webhook {webhook_id} is being handled; retry later"},
        )

    @store_errors()
    def record(self, webhook_id: str, answer: WebhookAnswer) -> None:
        """Keep the first answer to `webhook_id` for `keep_seconds`."""
        value = json.dumps({"status_code": answer.status_code, "body": answer.body})
        self._redis.set(RECEIPT_PREFIX + webhook_id, value, ex=self._keep)

    @store_errors()
    def release(self, webhook_id: str, token: str) -> None:
        """Drop this delivery's claim (the handler failed), so a retry runs it again."""
        self._release(keys=[RECEIPT_PREFIX + webhook_id], args=[token])
