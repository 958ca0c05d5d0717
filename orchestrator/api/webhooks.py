"""`POST /v1/webhooks/ca`: CA events signed per Standard Webhooks, handled once per id."""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from orchestrator.api.errors import ApiConfigError
from orchestrator.api.models import WebhookAccepted, WebhookEnvelope, error_responses
from orchestrator.api.renewals import AcceptEvent, invalid_event_status
from orchestrator.clock import utcnow
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.receipts import WebhookAnswer
from orchestrator.logs import get_logger
from orchestrator.ports import WebhookReceiptStore

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container

__all__ = ["MAX_WEBHOOK_BYTES", "WebhookVerifier", "webhook_router"]

log = get_logger(__name__)

MAX_WEBHOOK_BYTES = 1 << 20
"""The largest webhook body read; a CA chain event is a few kilobytes."""

WEBHOOKS_TOTAL = "certfleet_webhooks_total"
Outcome = Literal["accepted", "duplicate", "unauthorized", "invalid"]


class WebhookVerifier:
    """Standard Webhooks signature check against every configured secret (for rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._webhooks: list[Webhook] = []
        for number, secret in enumerate(secrets, start=1):
            try:
                self._webhooks.append(Webhook(secret))
            except (EmptyWebhookSecretError, binascii.Error, ValueError, RuntimeError):
                raise ApiConfigError(
                    f"CERTFLEET_WEBHOOK_SECRETS: secret {number} is not `whsec_` followed by "
                    "base64; copy it again from the CA's webhook settings"
                ) from None

    def problem(self, body: bytes, headers: dict[str, str | None]) -> str | None:
        """None when `body` and `headers` carry a valid signature, else what was wrong.

        The library refuses a `webhook-timestamp` more than 5 minutes from now, either way.
        """
        if not self._webhooks:
            return "webhooks are not enabled: no secret is configured (CERTFLEET_WEBHOOK_SECRETS)"
        missing = [name for name, value in headers.items() if not value]
        if missing:
            return f"missing header: {', '.join(missing)}"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not UTF-8, so its signature cannot be checked"
        present = {name: value for name, value in headers.items() if value}
        problem = "no signature matches"
        for webhook in self._webhooks:
            try:
                webhook.verify(text, present, json_parse=False)
            except WebhookVerificationError as exc:
                problem = str(exc)
            except ValueError:  # an entry without "v1," or with bad base64
                return "webhook-signature is malformed: expected `v1,<base64>` entries"
            else:
                return None
        return f"webhook signature rejected: {problem}"


async def _body(request: Request) -> bytes | None:
    """The raw body, or None once it passes `MAX_WEBHOOK_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _envelope_problem(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return (
        "the body is not a Standard Webhooks envelope "
        '({"type": str, "timestamp": str, "data": object}): ' + "; ".join(parts)
    )


def webhook_router(
    container: Container, *, verifier: WebhookVerifier, accept_event: AcceptEvent
) -> APIRouter:
    """The CA webhook route, bound to the container and the event handler."""
    router = APIRouter(tags=["webhooks"])
    receipts: WebhookReceiptStore = container.receipts

    def count(outcome: Outcome) -> None:
        container.metrics.incr(WEBHOOKS_TOTAL, {"outcome": outcome})

    def handle(webhook_id: str, body: bytes) -> WebhookAnswer:
        try:
            envelope = WebhookEnvelope.model_validate_json(body)
        except ValidationError as exc:
            return WebhookAnswer(400, {"detail": _envelope_problem(exc)})
        try:
            result = accept_event(container, envelope.type, envelope.data, now=utcnow())
        except CertfleetError as exc:
            refused = invalid_event_status(exc)
            if refused is None:
                raise
            message = str(getattr(exc, "message", None) or exc)
            log.info("webhook_invalid", webhook_id=webhook_id, type=envelope.type, problem=message)
            return WebhookAnswer(refused, {"detail": message})
        accepted = WebhookAccepted.model_validate(dict(result))
        log.info(
            "webhook_accepted",
            webhook_id=webhook_id,
            type=envelope.type,
            plan_id=accepted.plan_id,
            status=accepted.status,
        )
        return WebhookAnswer(202, jsonable_encoder(accepted.model_dump(mode="json")))

    @router.post(
        "/v1/webhooks/ca",
        status_code=202,
        response_model=WebhookAccepted,
        summary="Receive a signed CA event",
        responses={
            202: {"description": "Accepted; the same answer is repeated for a repeated id"},
            **error_responses(400, 401, 409, 413, 422, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WebhookEnvelope.model_json_schema()}},
            }
        },
    )
    def receive_ca_event(
        body: Annotated[bytes | None, Depends(_body)],
        webhook_id: Annotated[str | None, Header()] = None,
        webhook_timestamp: Annotated[str | None, Header()] = None,
        webhook_signature: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Verify the Standard Webhooks signature, then act on the event once per webhook-id."""
        if body is None:
            count("invalid")
            return JSONResponse(
                {"detail": f"the body is larger than {MAX_WEBHOOK_BYTES} bytes"}, status_code=413
            )
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": webhook_timestamp,
            "webhook-signature": webhook_signature,
        }
        problem = verifier.problem(body, headers)
        if problem is not None or webhook_id is None:
            count("unauthorized")
            log.warning("webhook_unauthorized", problem=problem)
            detail = problem or "missing header: webhook-id"
            return JSONResponse({"detail": detail}, status_code=401)
        token = receipts.claim(webhook_id)
        if isinstance(token, WebhookAnswer):
            first = token
            count("duplicate")
            log.info("webhook_duplicate", webhook_id=webhook_id, status_code=first.status_code)
            return JSONResponse(first.body, status_code=first.status_code)
        try:
            answer = handle(webhook_id, body)
        except BaseException:
            receipts.release(webhook_id, token)
            raise
        receipts.record(webhook_id, answer)
        count("accepted" if answer.status_code == 202 else "invalid")
        return JSONResponse(answer.body, status_code=answer.status_code)

    return router
