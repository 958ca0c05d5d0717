"""The answer given to a webhook delivery, kept so a repeated delivery gets it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["WebhookAnswer"]


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """An HTTP answer to one webhook delivery: status code and JSON body."""

    status_code: int
    body: dict[str, Any]
