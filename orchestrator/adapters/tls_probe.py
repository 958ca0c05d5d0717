"""The orchestrator's own TLS checks: does an endpoint's chain validate with given CAs,
and which leaf certificate does it serve now."""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ProbeOutcome", "SocketTlsProbe"]


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """The result of one handshake."""

    ok: bool
    detail: str
    leaf_sha256: str | None = None


class SocketTlsProbe:
    """`TlsProbe` over blocking sockets (the checks are rare and short)."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._timeout = timeout

    def check(self, host: str, port: int, *, ca_pems: Sequence[str]) -> ProbeOutcome:
        """A TLS 1.2 handshake that trusts only `ca_pems` and checks the host name."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cadata="".join(ca_pems))
        except ssl.SSLError as exc:
            return ProbeOutcome(False, f"the CA certificates do not load: {exc}")
        try:
            with (
                socket.create_connection((host, port), timeout=self._timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                leaf = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            return ProbeOutcome(
                False, f"{host}:{port} chain does not validate: {exc.verify_message}"
            )
        except (OSError, ssl.SSLError) as exc:
            return ProbeOutcome(False, f"{host}:{port} handshake failed: {exc}")
        return ProbeOutcome(True, "validated", hashlib.sha256(leaf).hexdigest() if leaf else None)

    def leaf_sha256(self, host: str, port: int) -> str | None:
        """SHA-256 of the DER leaf the endpoint serves now (no validation), or None."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection((host, port), timeout=self._timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                leaf = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return None
        return hashlib.sha256(leaf).hexdigest() if leaf else None
