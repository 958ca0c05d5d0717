"""The health probe against real TLS servers: each failure gets its own reason."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest
from cryptography.hazmat.primitives import serialization

from simulator.pki import IssuedCA, IssuedCert, issue_intermediate, issue_server_cert, make_ca
from simulator.probe import MAX_SERVER_CHAIN_BYTES, ProbeResult, tls_probe
from tests.tlsserver import silent_server, tls_server

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


class _Validity(TypedDict):
    not_before: datetime
    not_after: datetime


VALID = _Validity(not_before=NOW - DAY, not_after=NOW + 90 * DAY)


def _probe(
    host: str,
    port: int,
    ca_chains: Sequence[bytes],
    *,
    timeout: float = 10.0,
    max_chain_bytes: int = MAX_SERVER_CHAIN_BYTES,
) -> ProbeResult:
    probe = tls_probe(
        host, port, ca_chains=ca_chains, timeout=timeout, max_chain_bytes=max_chain_bytes
    )
    return asyncio.run(probe)


def _chain_bytes(*certs: IssuedCert | IssuedCA) -> int:
    """Body size of a TLS 1.2 Certificate message carrying `certs`."""
    ders = [c.certificate.public_bytes(serialization.Encoding.DER) for c in certs]
    return 3 + sum(3 + len(der) for der in ders)


@pytest.fixture(scope="module")
def ca1() -> IssuedCA:
    """The CA the servers are issued under."""
    return make_ca("Probe CA1", **VALID)


@pytest.fixture(scope="module")
def ca2() -> IssuedCA:
    """A second, unrelated CA."""
    return make_ca("Probe CA2", **VALID)


@pytest.fixture(scope="module")
def leaf1(ca1: IssuedCA) -> IssuedCert:
    """A valid server certificate for 127.0.0.1 under CA1."""
    return issue_server_cert(ca1, **VALID)


def test_server_under_the_trusted_ca_is_healthy(ca1: IssuedCA, leaf1: IssuedCert) -> None:
    """A chain that CA1 validates gives ok and the size of the chain seen."""
    # given a server under CA1
    with tls_server(leaf1.pem, leaf1.key_pem) as (host, port):
        # when a device trusting CA1 probes it
        result = _probe(host, port, [ca1.pem])
    # then it is healthy, and the chain was measured
    assert result.ok, result.detail
    assert result.reason is None
    assert result.chain_bytes == _chain_bytes(leaf1)
    assert "TLSv1.2" in result.detail


def test_server_under_another_ca_is_unknown_ca(ca2: IssuedCA, leaf1: IssuedCert) -> None:
    """Trusting only CA2 against a server under CA1 fails as unknown_ca."""
    # given a server under CA1
    with tls_server(leaf1.pem, leaf1.key_pem) as (host, port):
        # when a device trusting only CA2 probes it
        result = _probe(host, port, [ca2.pem])
    # then the issuer is unknown
    assert not result.ok
    assert result.reason == "unknown_ca", result.detail


def test_any_of_the_sec_tags_may_validate(ca1: IssuedCA, ca2: IssuedCA, leaf1: IssuedCert) -> None:
    """With CA2 and CA1 under two sec_tags, CA1 validates and the probe is ok."""
    # given a server under CA1
    with tls_server(leaf1.pem, leaf1.key_pem) as (host, port):
        # when a device holding CA2 and CA1 probes it
        result = _probe(host, port, [ca2.pem, ca1.pem])
    # then one of them suffices
    assert result.ok, result.detail


def test_no_ca_chain_is_unknown_ca_without_connecting() -> None:
    """With no CA chain at all the probe fails as unknown_ca and does not connect."""
    # given no server at all (port 1 would refuse)
    # when a device with no CA chain probes
    result = _probe("127.0.0.1", 1, [])
    # then it is unknown_ca, not a connection failure
    assert result.reason == "unknown_ca"
    assert result.chain_bytes is None


def test_expired_trust_anchor_is_expired() -> None:
    """A leaf signed by the device's CA after that CA expired fails as expired."""
    # given a CA that expired a month ago, and a valid leaf it signed
    old_ca = make_ca("Probe expired CA", not_before=NOW - 400 * DAY, not_after=NOW - 30 * DAY)
    leaf = issue_server_cert(old_ca, **VALID)
    with tls_server(leaf.pem, leaf.key_pem) as (host, port):
        # when a device trusting that CA probes
        result = _probe(host, port, [old_ca.pem])
    # then OpenSSL reports the anchor as expired (code 10 at depth 1)
    assert result.reason == "expired", result.detail
    assert "code 10" in result.detail


def test_expired_server_leaf_is_expired(ca1: IssuedCA) -> None:
    """A server leaf past its notAfter under a valid CA fails as expired."""
    # given a server whose certificate expired yesterday
    leaf = issue_server_cert(ca1, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    with tls_server(leaf.pem, leaf.key_pem) as (host, port):
        # when a device trusting its CA probes
        result = _probe(host, port, [ca1.pem])
    # then it is expired
    assert result.reason == "expired", result.detail


@pytest.fixture(scope="module")
def long_chain(ca1: IssuedCA) -> tuple[IssuedCert, list[IssuedCA]]:
    """A valid leaf under ten intermediates below CA1: a chain of about 5 KB."""
    intermediates = [issue_intermediate(ca1, "Probe intermediate 0", **VALID)]
    for n in range(1, 10):
        intermediates.append(
            issue_intermediate(intermediates[-1], f"Probe intermediate {n}", **VALID)
        )
    return issue_server_cert(intermediates[-1], **VALID), intermediates


def test_chain_over_4kb_is_refused_before_verification(
    ca1: IssuedCA, ca2: IssuedCA, long_chain: tuple[IssuedCert, list[IssuedCA]]
) -> None:
    """A valid chain over 4096 bytes fails as chain_too_large; raising the limit makes it ok."""
    # given a server sending a valid leaf and ten intermediates, over 4 KB in all
    leaf, intermediates = long_chain
    expected = _chain_bytes(leaf, *reversed(intermediates))
    assert expected > MAX_SERVER_CHAIN_BYTES
    chain_pem = leaf.pem + b"".join(ca.pem for ca in reversed(intermediates))
    with tls_server(chain_pem, leaf.key_pem) as (host, port):
        # when devices trusting CA1, and CA2, probe with the modem's limit, then with a larger one
        refused = _probe(host, port, [ca1.pem])
        refused_untrusted = _probe(host, port, [ca2.pem])
        allowed = _probe(host, port, [ca1.pem], max_chain_bytes=expected)
    # then the size alone decided, before any verification: the same chain verifies
    # once the limit allows it
    assert refused.reason == "chain_too_large", refused.detail
    assert refused.chain_bytes == expected
    assert refused_untrusted.reason == "chain_too_large", refused_untrusted.detail
    assert allowed.ok, allowed.detail
    assert allowed.chain_bytes == expected


@pytest.mark.parametrize("read_size", [1, 7, 100, 1000])
def test_chain_size_is_found_however_the_server_bytes_are_split(
    ca2: IssuedCA,
    long_chain: tuple[IssuedCert, list[IssuedCA]],
    read_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records and messages split across reads still size the chain before verification."""
    # given the over-4 KB chain, and a probe reading the server a few bytes at a time
    leaf, intermediates = long_chain
    chain_pem = leaf.pem + b"".join(ca.pem for ca in reversed(intermediates))
    monkeypatch.setattr("simulator.probe._READ_SIZE", read_size)
    with tls_server(chain_pem, leaf.key_pem) as (host, port):
        # when a device that would not verify it anyway (CA2) probes
        result = _probe(host, port, [ca2.pem])
    # then the size check still decides, ahead of the unknown issuer
    assert result.reason == "chain_too_large", result.detail
    assert result.chain_bytes == _chain_bytes(leaf, *reversed(intermediates))


def test_server_that_never_answers_times_out(ca1: IssuedCA) -> None:
    """A server that accepts and stays silent fails as timeout within the given timeout."""
    # given a TCP server that never answers
    with silent_server() as (host, port):
        # when a device probes with a 0.5 s timeout
        started = time.monotonic()
        result = _probe(host, port, [ca1.pem], timeout=0.5)
        elapsed = time.monotonic() - started
    # then it times out, close to on time
    assert result.reason == "timeout", result.detail
    assert 0.5 <= elapsed < 2.5


def test_nothing_listening_is_a_handshake_error(ca1: IssuedCA) -> None:
    """A refused connection fails as handshake_error."""
    # given a loopback port with nothing listening
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    # when a device probes it
    result = _probe("127.0.0.1", port, [ca1.pem], timeout=5)
    # then the handshake never happened
    assert result.reason == "handshake_error"
    assert "refused" in result.detail.lower()


def test_certificate_for_another_address_is_a_handshake_error(ca1: IssuedCA) -> None:
    """A valid certificate for 10.9.9.9 only, served on 127.0.0.1, fails as handshake_error."""
    # given a server under CA1 whose certificate names only 10.9.9.9
    leaf = issue_server_cert(ca1, hosts=("10.9.9.9",), **VALID)
    with tls_server(leaf.pem, leaf.key_pem) as (host, port):
        # when a device trusting CA1 probes it at 127.0.0.1
        result = _probe(host, port, [ca1.pem])
    # then the mismatch is named
    assert result.reason == "handshake_error"
    assert "does not match IP address '127.0.0.1'" in result.detail


def test_tls13_only_server_is_a_handshake_error(ca1: IssuedCA, leaf1: IssuedCert) -> None:
    """The probe speaks TLS 1.2 only, as the modem does: a TLS 1.3-only server fails."""
    # given a server that accepts only TLS 1.3
    tls13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
    with tls_server(leaf1.pem, leaf1.key_pem, tls_versions=tls13) as (host, port):
        # when a device probes it
        result = _probe(host, port, [ca1.pem])
    # then no handshake is possible
    assert result.reason == "handshake_error", result.detail
    assert result.chain_bytes is None
