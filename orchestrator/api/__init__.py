"""HTTP face of certfleet: CA webhooks, fleet and rollout status, /metrics, /healthz."""

from orchestrator.api.app import create_app
from orchestrator.api.errors import ApiConfigError

__all__ = ["ApiConfigError", "create_app"]
