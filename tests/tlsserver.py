"""Real servers on loopback for probe tests: a TLS server, and one that never answers."""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["silent_server", "tls_server"]

HOST = "127.0.0.1"
_POLL_S = 0.05
_HANDSHAKE_TIMEOUT_S = 5.0


def _listen() -> socket.socket:
    listener = socket.create_server((HOST, 0))
    listener.settimeout(_POLL_S)
    return listener


def _serve(listener: socket.socket, context: ssl.SSLContext, stop: threading.Event) -> None:
    """Accept, complete the handshake (or let it fail), close; until `stop` is set."""
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(_HANDSHAKE_TIMEOUT_S)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:  # the client refused our chain, or went away: expected in tests
                pass


@contextlib.contextmanager
def tls_server(
    chain_pem: bytes,
    key_pem: bytes,
    *,
    tls_versions: tuple[ssl.TLSVersion, ssl.TLSVersion] = (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    ),
    client_ca: bytes | None = None,
) -> Iterator[tuple[str, int]]:
    """A TLS server presenting `chain_pem` (leaf first) on a free loopback port.

    Args:
        tls_versions: the (minimum, maximum) protocol versions it accepts.
        client_ca: require a client certificate issued by this CA (PEM): mutual TLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = tls_versions
    with tempfile.TemporaryDirectory() as tmp:
        chain_file, key_file = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        chain_file.write_bytes(chain_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(chain_file, key_file)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode("ascii"))
    stop = threading.Event()
    with _listen() as listener:
        thread = threading.Thread(
            target=_serve, args=(listener, context, stop), name="tls-server", daemon=True
        )
        thread.start()
        try:
            yield listener.getsockname()[:2]
        finally:
            stop.set()
            thread.join(timeout=_HANDSHAKE_TIMEOUT_S + 1)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP port that takes connections and never says a word.

    The kernel completes the TCP handshake into the listen backlog; nothing ever
    accepts, reads or writes, so a TLS client waits for a ServerHello that never comes.
    """
    with socket.create_server((HOST, 0), backlog=8) as listener:
        yield listener.getsockname()[:2]
