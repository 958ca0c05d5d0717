"""Errors of the HTTP API's setup."""

from __future__ import annotations

from orchestrator.domain.errors import CertfleetError

__all__ = ["ApiConfigError"]


class ApiConfigError(CertfleetError, ValueError):
    """A setting the API cannot start with (a malformed webhook secret, a broker URL)."""
