"""The CFSSL issuer: device certificates from a `cfssl serve` over its HTTP API.

    POST /api/v1/cfssl/sign    {"certificate_request": CSR PEM, "profile": ...}
    POST /api/v1/cfssl/revoke  {"serial": decimal, "authority_key_id": hex, "reason": name}
    GET  /api/v1/cfssl/crl     (CFSSL 1.3 and later; 404 in 1.2)

Every answer is CFSSL's envelope `{"success", "result", "errors": [{"code", "message"}]}`.
An unreachable server, a timeout or a 5xx is `IssuerUnavailableError` (retried); a 4xx
with an envelope is `IssuerRefusedError` carrying CFSSL's message.

CFSSL 1.2 (Debian's golang-cfssl) stores every certificate it signs with an EMPTY
authority key identifier, so a revoke naming the certificate's real AKI answers
"certificate not found". The revoke sends the real AKI first (what later versions
store) and on "not found" once more with an empty one.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import urllib.error
import urllib.request
from typing import Any, Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from orchestrator.adapters.issuer_local import crl_reason, issued_certificate
from orchestrator.domain.errors import IssuerRefusedError, IssuerUnavailableError
from orchestrator.domain.identity import IssuedCertificate

__all__ = ["CfsslIssuer"]

SIGN_PATH: Final = "/api/v1/cfssl/sign"
REVOKE_PATH: Final = "/api/v1/cfssl/revoke"
CRL_PATH: Final = "/api/v1/cfssl/crl"
NOT_FOUND_MESSAGE: Final = "certificate not found"
RESPONSE_MAX_BYTES: Final = 4 * 1024 * 1024
"""A CRL of a large fleet fits; anything larger is not an answer CFSSL gives."""
TRANSIENT_4XX: Final = frozenset({408, 425, 429})
"""4xx statuses that say "later", not "no"."""

log = structlog.get_logger(__name__)


class _NotFoundError(Exception):
    """HTTP 404 without a CFSSL envelope (an endpoint this server lacks)."""


def _cfssl_reason(reason: str) -> str:
    """CFSSL's spelling of an RFC 5280 reason: `key_compromise` -> `keycompromise`."""
    crl_reason(reason)  # refuse a name that is no RFC 5280 reason before asking the server
    return reason.replace("_", "")


def _messages(body: bytes) -> str | None:
    """The error messages of a CFSSL envelope, or None when `body` is not one."""
    try:
        envelope = json.loads(body)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or "success" not in envelope:
        return None
    errors = envelope.get("errors") or []
    texts = [
        f"{error.get('message', '?')} (code {error.get('code', '?')})"
        for error in errors
        if isinstance(error, dict)
    ]
    return "; ".join(texts) or "refused without a reason"


class CfsslIssuer:
    """`Issuer` over CFSSL's HTTP API."""

    name = "cfssl"

    def __init__(self, url: str, *, profile: str | None = None, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._profile = profile
        self._timeout = timeout

    def issue(self, csr_pem: str, *, device_id: str) -> IssuedCertificate:
        """Have CFSSL sign the CSR (with the configured profile, if any)."""
        request: dict[str, Any] = {"certificate_request": csr_pem}
        if self._profile:
            request["profile"] = self._profile
        result = self._call("POST", SIGN_PATH, request, what=f"sign the CSR of {device_id}")
        pem = result.get("certificate") if isinstance(result, dict) else None
        if not isinstance(pem, str):
            raise IssuerUnavailableError(
                f"CFSSL at {self._url} answered sign without a certificate"
            )
        try:
            issued = issued_certificate(pem)
        except ValueError:
            raise IssuerUnavailableError(
                f"CFSSL at {self._url} answered sign with a certificate that does not parse"
            ) from None
        log.info("cfssl_signed", device_id=device_id, serial=issued.serial)
        return issued

    def revoke(self, certificate_pem: str, *, reason: str) -> bool:
        """Revoke at CFSSL; False when CFSSL does not know the certificate (not signed by it)."""
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        serial = str(certificate.serial_number)
        for aki in dict.fromkeys((_authority_key_id(certificate), "")):
            request = {"serial": serial, "authority_key_id": aki, "reason": _cfssl_reason(reason)}
            try:
                self._call("POST", REVOKE_PATH, request, what=f"revoke serial {serial}")
            except IssuerRefusedError as exc:
                if NOT_FOUND_MESSAGE in str(exc):
                    continue  # CFSSL 1.2 stored it with an empty AKI: try that next
                raise
            log.info("cfssl_revoked", serial=serial, reason=reason)
            return True
        log.info("cfssl_revoke_unknown", serial=serial)
        return False

    def crl(self) -> bytes | None:
        """CFSSL's CRL as PEM (1.3 and later), None where the server has no CRL endpoint."""
        try:
            result = self._call("GET", CRL_PATH, None, what="fetch the CRL", optional=True)
        except _NotFoundError:
            return None
        try:
            der = base64.b64decode(str(result), validate=True)
            crl = x509.load_der_x509_crl(der)
        except (binascii.Error, ValueError):
            raise IssuerUnavailableError(
                f"CFSSL at {self._url} answered a CRL that does not parse"
            ) from None
        return crl.public_bytes(serialization.Encoding.PEM)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        what: str,
        optional: bool = False,
    ) -> Any:
        """CFSSL's `result` for one request, or the error that fits its failure.

        A plain 404 (no CFSSL envelope: the server lacks the endpoint) is `_NotFoundError`
        when the endpoint is `optional`, else the issuer is unusable as configured.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 -- the URL is the operator's setting
            self._url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                raw = response.read(RESPONSE_MAX_BYTES)
        except urllib.error.HTTPError as exc:
            raw = exc.read(RESPONSE_MAX_BYTES)
            error = self._http_error(exc.code, raw, what=what)
            if isinstance(error, _NotFoundError) and not optional:
                error = IssuerUnavailableError(
                    f"could not {what}: {self._url}{path} does not exist (HTTP 404); "
                    "is CERTFLEET_ISSUER_URL the base URL of a cfssl serve?"
                )
            raise error from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise IssuerUnavailableError(
                f"could not {what}: CFSSL at {self._url} is unreachable ({reason})"
            ) from None
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise IssuerUnavailableError(
                f"could not {what}: CFSSL at {self._url} answered something that is not JSON"
            ) from None
        if not isinstance(envelope, dict) or envelope.get("success") is not True:
            raise IssuerRefusedError(f"CFSSL refused to {what}: {_messages(raw)}")
        return envelope.get("result")

    def _http_error(self, status: int, raw: bytes, *, what: str) -> Exception:
        messages = _messages(raw)
        if status >= 500 or status in TRANSIENT_4XX:
            return IssuerUnavailableError(
                f"could not {what}: CFSSL at {self._url} answered HTTP {status}"
                + (f": {messages}" if messages else "")
            )
        if status == 404 and messages is None:
            return _NotFoundError(f"{self._url} has no endpoint for {what}")
        return IssuerRefusedError(
            f"CFSSL refused to {what} (HTTP {status}): {messages or 'no CFSSL error body'}"
        )

    def __repr__(self) -> str:
        return f"CfsslIssuer(url={self._url!r}, profile={self._profile!r})"


def _authority_key_id(certificate: x509.Certificate) -> str:
    """The certificate's AKI as lowercase hex (as CFSSL 1.3+ stores it), or ''."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    return aki.key_identifier.hex() if aki.key_identifier else ""
