"""Server endpoints as `HOST:PORT` text (IPv6 hosts in brackets)."""

from __future__ import annotations

from orchestrator.domain.errors import CertfleetError

__all__ = ["InvalidEndpointError", "parse_endpoint"]


class InvalidEndpointError(CertfleetError, ValueError):
    """Text that is not `HOST:PORT` with a port in 1..65535."""


def parse_endpoint(text: object, *, what: str = "endpoint") -> tuple[str, int]:
    """(host, port) of `HOST:PORT`, or `InvalidEndpointError` naming `what` was wrong."""
    if not isinstance(text, str):
        raise InvalidEndpointError(f"{what} must be a string HOST:PORT, got {text!r}")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidEndpointError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)
