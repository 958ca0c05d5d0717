"""The device health probe: a TLS 1.2 handshake as the nRF9160 modem makes it.

The modem trusts only the CA chains under the sec_tags a socket is given and refuses
a server certificate chain over 4 KB. The handshake runs over memory BIOs so the
server's records can be read as they pass: in TLS 1.2 its Certificate message is
plaintext, which lets the probe size the chain before OpenSSL verifies it.

An identity probe also presents a client certificate and key (a staged identity).
A server that refuses them answers the client's certificate flight with a TLS alert
(bad_certificate, unsupported_certificate, certificate_revoked, certificate_expired,
unknown_ca, access_denied), or resets or closes the connection right after it (OpenSSL
may close before the client's Finished is read): `identity_refused`, which is not the
local verification failure of the server's chain (`unknown_ca`). A reset before the
client sent its certificate stays `handshake_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from simulator.tls_identity import ClientIdentity, present

__all__ = [
    "CLIENT_CERTIFICATE_REFUSALS",
    "MAX_SERVER_CHAIN_BYTES",
    "IdentityProber",
    "ProbeCache",
    "ProbeReason",
    "ProbeResult",
    "Prober",
    "tls_probe",
    "uncached_identity_probe",
    "uncached_probe",
]

ProbeReason = Literal[
    "unknown_ca", "expired", "chain_too_large", "timeout", "handshake_error", "identity_refused"
]

MAX_SERVER_CHAIN_BYTES: Final = 4096
"""Largest server certificate chain (Certificate message body) the modem accepts."""

CLIENT_CERTIFICATE_REFUSALS: Final[dict[int, str]] = {
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    48: "unknown_ca",
    49: "access_denied",
}
"""TLS alerts by which a server refuses the client certificate it was just sent."""
_ALERT_REASONS: Final = re.compile(r"ALERT_([A-Z_]+)")

_CHANGE_CIPHER_SPEC: Final = 20
_ALERT: Final = 21
_HANDSHAKE: Final = 22
_CERTIFICATE: Final = 11
_CERTIFICATE_REQUEST: Final = 13
_EXPIRED: Final = frozenset({9, 10})  # not yet valid, has expired: leaf or trust anchor
_UNKNOWN_CA: Final = frozenset({2, 18, 19, 20, 21})
_MISMATCH: Final = {62: "host name", 63: "email address", 64: "IP address"}
_READ_SIZE: Final = 65536
_CLOSE_GRACE_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a health probe found: ok, or the reason it failed."""

    ok: bool
    reason: ProbeReason | None
    detail: str
    chain_bytes: int | None

    def __post_init__(self) -> None:
        if self.ok != (self.reason is None):
            raise ValueError("a probe result has a reason exactly when it is not ok")


def _failed(reason: ProbeReason, detail: str, chain_bytes: int | None) -> ProbeResult:
    return ProbeResult(ok=False, reason=reason, detail=detail, chain_bytes=chain_bytes)


class _Handshake:
    """One client handshake over memory BIOs, reading the server's records as they pass."""

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str,
        max_chain_bytes: int,
        *,
        presents: bool = False,
    ) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._max_chain_bytes = max_chain_bytes
        self._records = bytearray()
        self._messages = bytearray()
        self._encrypted = False
        self.chain_bytes: int | None = None
        """Body size of the server's Certificate message, once it is whole."""
        self.certificate_requested = False
        """The server asked for a client certificate (its CertificateRequest passed)."""
        self.alert: int | None = None
        """The description of a plaintext alert the server sent, if one passed."""
        self._presents = presents
        self.certificate_sent = False
        """The client's certificate flight went out (the server's chain had verified)."""

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ProbeResult:
        """Handshake; raises what OpenSSL raises, returns early on a chain too large."""
        while True:
            try:
                self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError:
                writer.write(self._outgoing.read())  # our alert
                raise
            flight = self._outgoing.read()  # ClientHello, or the flight up to Finished
            writer.write(flight)
            if flight and self.certificate_requested and self._presents:
                self.certificate_sent = True
            if done:
                break
            await writer.drain()
            data = await reader.read(_READ_SIZE)
            if not data and self.certificate_sent:
                return _closed_after_certificate("closed the connection", self.chain_bytes)
            if not data:
                detail = "the server closed the connection during the handshake"
                return _failed("handshake_error", detail, self.chain_bytes)
            self._scan(data)
            if self.chain_bytes is not None and self.chain_bytes > self._max_chain_bytes:
                detail = f"server certificate chain is {self.chain_bytes} bytes; the modem"
                detail += f" accepts at most {self._max_chain_bytes}"
                return _failed("chain_too_large", detail, self.chain_bytes)
            self._incoming.write(data)  # only now may OpenSSL see (and verify) the chain
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()  # queues our close_notify; the server's is not awaited
        writer.write(self._outgoing.read())
        await writer.drain()
        detail = f"{self._tls.version()} handshake, {(self._tls.cipher() or ('?',))[0]}"
        return ProbeResult(ok=True, reason=None, detail=detail, chain_bytes=self.chain_bytes)

    def _scan(self, data: bytes) -> None:
        """Reassemble plaintext handshake messages from records; note Certificate's size."""
        if self._encrypted:
            return
        self._records += data
        while len(self._records) >= 5 and not self._encrypted:
            end = 5 + int.from_bytes(self._records[3:5])
            if len(self._records) < end:
                break  # the rest comes in a later read; parse what is whole now
            content_type, fragment = self._records[0], self._records[5:end]
            del self._records[:end]
            if content_type == _HANDSHAKE:
                self._messages += fragment
            elif content_type == _ALERT and len(fragment) >= 2 and self.alert is None:
                self.alert = fragment[1]
            self._encrypted = content_type == _CHANGE_CIPHER_SPEC  # what follows is encrypted
        while len(self._messages) >= 4:
            end = 4 + int.from_bytes(self._messages[1:4])
            if len(self._messages) < end:
                return
            if self._messages[0] == _CERTIFICATE and self.chain_bytes is None:
                self.chain_bytes = end - 4
            if self._messages[0] == _CERTIFICATE_REQUEST:
                self.certificate_requested = True
            del self._messages[:end]


def _client_context(ca_chains: Sequence[bytes]) -> ssl.SSLContext:
    """TLS 1.2 only, verification and hostname check on, trusting only `ca_chains`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    # cadata as str is PEM (bytes would be read as DER); no system store is loaded.
    context.load_verify_locations(cadata="\n".join(c.decode("ascii") for c in ca_chains))
    return context


def _prepare(
    ca_chains: Sequence[bytes],
    server_hostname: str,
    max_chain_bytes: int,
    identity: ClientIdentity | None = None,
) -> _Handshake | ProbeResult:
    """The handshake to run, or why there can be none."""
    if not ca_chains:
        return _failed("unknown_ca", "no CA chain to trust: no sec_tag holds one", None)
    try:
        context = _client_context(ca_chains)
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        return _failed("unknown_ca", f"no usable CA certificate in the given chains: {exc}", None)
    if identity is not None:
        try:
            present(context, identity)
        except (ssl.SSLError, OSError) as exc:
            return _failed("handshake_error", f"the client certificate is not usable: {exc}", None)
    try:
        return _Handshake(context, server_hostname, max_chain_bytes, presents=identity is not None)
    except ValueError as exc:
        detail = f"not a usable server name {server_hostname!r}: {exc}"
        return _failed("handshake_error", detail, None)


def _verify_failed(
    exc: ssl.SSLCertVerificationError, expected: str, chain_bytes: int | None
) -> ProbeResult:
    code, message = exc.verify_code, exc.verify_message
    if code in _EXPIRED:
        return _failed("expired", f"{message} (OpenSSL verify code {code})", chain_bytes)
    if code in _UNKNOWN_CA:
        return _failed("unknown_ca", f"{message} (OpenSSL verify code {code})", chain_bytes)
    if code in _MISMATCH:
        detail = f"server certificate does not match {_MISMATCH[code]} {expected!r}: {message}"
        return _failed("handshake_error", detail, chain_bytes)
    return _failed("handshake_error", f"certificate verify failed: {message} ({code})", chain_bytes)


def _alert_of(exc: ssl.SSLError) -> int | None:
    """The TLS alert OpenSSL names in `exc` (`SSLV3_ALERT_BAD_CERTIFICATE`), if one of ours."""
    match = _ALERT_REASONS.search(str(exc.reason or ""))
    if match is None:
        return None
    name = match.group(1).lower()
    return next(
        (code for code, known in CLIENT_CERTIFICATE_REFUSALS.items() if known == name), None
    )


def _closed_after_certificate(what: str, chain_bytes: int | None) -> ProbeResult:
    detail = f"the server {what} right after the client's certificate: it refused it"
    return _failed("identity_refused", detail, chain_bytes)


def _refused_identity(
    exc: ssl.SSLError, handshake: _Handshake, presented: bool
) -> ProbeResult | None:
    """`identity_refused` when the server alerted after the client sent its certificate."""
    if not presented or not handshake.certificate_requested:
        return None
    alert = handshake.alert if handshake.alert is not None else _alert_of(exc)
    if alert not in CLIENT_CERTIFICATE_REFUSALS:
        if alert is None and handshake.certificate_sent:  # an EOF OpenSSL names, no alert
            return _closed_after_certificate(f"ended the stream ({exc})", handshake.chain_bytes)
        return None
    detail = f"the server refused the client certificate: TLS alert {alert}"
    detail += f" ({CLIENT_CERTIFICATE_REFUSALS[alert]})"
    return _failed("identity_refused", detail, handshake.chain_bytes)


def _classified(
    exc: OSError | ValueError, handshake: _Handshake, expected: str, *, presented: bool
) -> ProbeResult:
    """The reason a handshake that raised `exc` failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _verify_failed(exc, expected, handshake.chain_bytes)
    refused = None
    if isinstance(exc, ssl.SSLError):
        refused = _refused_identity(exc, handshake, presented)
    elif isinstance(exc, ConnectionError) and handshake.certificate_sent:
        refused = _closed_after_certificate(f"reset the connection ({exc})", handshake.chain_bytes)
    detail = f"{type(exc).__name__}: {exc}"
    return refused or _failed("handshake_error", detail, handshake.chain_bytes)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE_S):
            await writer.wait_closed()
    except OSError:  # reset by the server, or TimeoutError: the peer will not take our bytes
        writer.transport.abort()


async def tls_probe(
    host: str,
    port: int,
    *,
    ca_chains: Sequence[bytes],
    timeout: float = 10.0,
    server_hostname: str | None = None,
    max_chain_bytes: int = MAX_SERVER_CHAIN_BYTES,
    identity: ClientIdentity | None = None,
) -> ProbeResult:
    """Handshake with `host:port` as the modem would, trusting only `ca_chains`; never raises.

    Args:
        ca_chains: PEM CA chains, one per sec_tag given to the socket; any may validate.
        timeout: seconds for connect and handshake together.
        server_hostname: the name (or IP) the certificate must carry; `host` by default.
        max_chain_bytes: largest server Certificate message body accepted.
        identity: the client certificate and key to present when the server asks.
    """
    expected = server_hostname or host
    handshake = _prepare(ca_chains, expected, max_chain_bytes, identity)
    if isinstance(handshake, ProbeResult):
        return handshake
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            return await handshake.run(reader, writer)
    except TimeoutError:
        detail = f"no TLS handshake with {host}:{port} within {timeout:g} s"
        return _failed("timeout", detail, handshake.chain_bytes)
    except (OSError, ValueError) as exc:  # TLS errors, refused, reset, DNS
        return _classified(exc, handshake, expected, presented=identity is not None)
    finally:
        if writer is not None:
            await _close(writer)


Prober = Callable[[str, int, Sequence[bytes], float], Awaitable[ProbeResult]]
"""How a device runs its health probe: (host, port, CA chains, timeout) -> result."""


async def uncached_probe(
    host: str, port: int, ca_chains: Sequence[bytes], timeout: float
) -> ProbeResult:
    """A handshake of its own for every probe, as each real device makes."""
    return await tls_probe(host, port, ca_chains=ca_chains, timeout=timeout)


IdentityProber = Callable[
    [str, int, Sequence[bytes], ClientIdentity, float], Awaitable[ProbeResult]
]
"""How a device probes a staged identity: (host, port, CA chains, identity, timeout) -> result."""


async def uncached_identity_probe(
    host: str, port: int, ca_chains: Sequence[bytes], identity: ClientIdentity, timeout: float
) -> ProbeResult:
    """A handshake presenting `identity`; never shared (each device's identity is its own)."""
    return await tls_probe(host, port, ca_chains=ca_chains, timeout=timeout, identity=identity)


_ProbeKey = tuple[tuple[bytes, ...], str, int, float]


class ProbeCache:
    """Probes shared by devices that would make the very same handshake.

    The key is the exact CA chains the probe trusts, the endpoint and the timeout: the
    first probe of a key makes a real `tls_probe` handshake, probes of that key while
    it runs await the same handshake, and later ones reuse its result for `ttl`
    seconds (so a server that changes its chain is seen again).
    """

    def __init__(
        self,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        probe: Prober = uncached_probe,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._probe = probe
        self._results: dict[_ProbeKey, tuple[float, ProbeResult]] = {}
        self._running: dict[_ProbeKey, asyncio.Future[ProbeResult]] = {}
        self.handshakes = 0
        """Real handshakes made."""
        self.hits = 0
        """Probes answered by a handshake made for another device."""

    async def __call__(
        self, host: str, port: int, ca_chains: Sequence[bytes], timeout: float
    ) -> ProbeResult:
        """The result of a probe of `host:port` trusting exactly `ca_chains`."""
        key: _ProbeKey = (tuple(ca_chains), host, port, timeout)
        cached = self._results.get(key)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            self.hits += 1
            return cached[1]
        running = self._running.get(key)
        if running is not None:
            self.hits += 1
            return await asyncio.shield(running)
        future: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        self.handshakes += 1
        try:
            result = await self._probe(host, port, ca_chains, timeout)
        except asyncio.CancelledError:
            future.cancel()  # the waiters make no handshake of their own: they end too
            raise
        except Exception as exc:  # tls_probe never raises; another prober might
            future.set_exception(exc)
            future.exception()  # marked retrieved: the waiters get it, no one else must
            raise
        finally:
            del self._running[key]
        self._results[key] = (self._clock(), result)
        future.set_result(result)
        return result
