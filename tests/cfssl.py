"""A real `cfssl serve` (CFSSL's HTTP API) on a free loopback port, for the CFSSL issuer's tests.

    server = start_cfssl(tmp_path / "cfssl", device_ca)   # an IssuedCA from simulator.pki
                                                          # profiles={"factory": {...}} adds some
    server.settings_env()    # CERTFLEET_ISSUER=cfssl, _ISSUER_URL, and CFSSL's CA as
                             # CERTFLEET_CRL_CA_CERT_FILE/_KEY_FILE (1.2 makes no CRL)
    ...
    server.stop()            # the issuer is down (connection refused)
    server.start()           # and back, with the same CA and database
    server.revocations()     # {serial: reason code} as CFSSL's database holds them

CFSSL 1.2 (Debian's golang-cfssl) keeps what it signs and revokes in a sqlite database
whose tables must exist beforehand (DDL below, from CFSSL's certdb migrations); it has
no CRL endpoint (1.3 adds one), so certfleet signs the CRL with the same CA itself.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from simulator.pki import IssuedCA
from simulator.services import free_port, wait_for_port
from tests.procs import Proc, start

__all__ = ["CFSSL_DDL", "CfsslServer", "cfssl_installed", "start_cfssl"]

CFSSL_DDL: Final = """
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
"""

SIGNING_CONFIG: Final[dict[str, Any]] = {
    "signing": {
        "default": {
            "expiry": "720h",
            "usages": ["digital signature", "key agreement", "client auth"],
        },
        "profiles": {
            "device": {
                "expiry": "8760h",
                "usages": ["digital signature", "key agreement", "client auth"],
            }
        },
    }
}
"""The default profile (30 days) and a `device` profile (a year), both client auth only."""


def cfssl_binary() -> str | None:
    """The `cfssl` command, if installed."""
    return shutil.which("cfssl") or next(
        (p for p in ("/usr/bin/cfssl", "/usr/local/bin/cfssl") if os.access(p, os.X_OK)), None
    )


def cfssl_installed() -> bool:
    """Whether `cfssl serve` can run here (Debian: apt-get install golang-cfssl)."""
    return cfssl_binary() is not None


@dataclass
class CfsslServer:
    """A `cfssl serve` with its CA, signing config and sqlite database in `workdir`."""

    workdir: Path
    port: int
    ca_cert_file: Path
    ca_key_file: Path
    db_file: Path
    proc: Proc | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The base URL (CERTFLEET_ISSUER_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def settings_env(self) -> dict[str, str]:
        """certfleet's settings for this server: the issuer, and its CA as the CRL signer."""
        return {
            "CERTFLEET_ISSUER": "cfssl",
            "CERTFLEET_ISSUER_URL": self.url,
            "CERTFLEET_ISSUER_TIMEOUT_SECONDS": "5",
            "CERTFLEET_CRL_CA_CERT_FILE": str(self.ca_cert_file),
            "CERTFLEET_CRL_CA_KEY_FILE": str(self.ca_key_file),
        }

    def start(self) -> CfsslServer:
        """Start (or start again) on the same port, CA and database."""
        binary = cfssl_binary()
        assert binary, "cfssl is not installed (apt-get install golang-cfssl)"
        # cfssl logs every request at level 1; it prints nothing of the CA key.
        self.proc = start(
            "cfssl",
            [
                binary,
                "serve",
                "-address",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-ca",
                str(self.ca_cert_file),
                "-ca-key",
                str(self.ca_key_file),
                "-config",
                str(self.workdir / "config.json"),
                "-db-config",
                str(self.workdir / "db.json"),
            ],
            env={},
            log_dir=self.workdir,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=20, process=self.proc.process)
        except Exception:
            self.stop()
            raise AssertionError(f"cfssl serve did not start:\n{self.log()}") from None
        return self

    def stop(self) -> None:
        """Stop the server (the issuer is down: connections are refused)."""
        if self.proc is not None:
            self.proc.stop(timeout=10)
            self.proc = None

    def log(self) -> str:
        """What cfssl printed."""
        log_file = self.workdir / "cfssl.log"
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    def revocations(self) -> dict[int, int]:
        """{serial: reason code} of the certificates CFSSL's database holds as revoked."""
        with sqlite3.connect(self.db_file) as db:
            rows = db.execute(
                "SELECT serial_number, reason FROM certificates WHERE status = 'revoked'"
            ).fetchall()
        return {
            int(bytes(serial).decode() if isinstance(serial, bytes) else serial): int(reason)
            for serial, reason in rows
        }

    def issued(self) -> set[int]:
        """The serials of every certificate CFSSL signed (and stored)."""
        with sqlite3.connect(self.db_file) as db:
            rows = db.execute("SELECT serial_number FROM certificates").fetchall()
        return {int(bytes(s).decode() if isinstance(s, bytes) else s) for (s,) in rows}


def start_cfssl(
    workdir: Path,
    ca: IssuedCA,
    *,
    port: int | None = None,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
) -> CfsslServer:
    """Write `ca`, the signing config and a fresh database into `workdir`; start serving.

    `profiles` adds signing profiles, e.g. `{"factory": {"expiry": "240h", "usages":
    [...]}}` for certificates that expire in 10 days.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    ca_cert_file, ca_key_file = workdir / "ca.pem", workdir / "ca-key.pem"
    ca_cert_file.write_bytes(ca.pem)
    ca_key_file.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    ca_key_file.chmod(0o600)
    db_file = workdir / "certs.db"
    with sqlite3.connect(db_file) as db:
        db.executescript(CFSSL_DDL)
    config = copy.deepcopy(SIGNING_CONFIG)
    config["signing"]["profiles"].update(
        {name: dict(profile) for name, profile in (profiles or {}).items()}
    )
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "db.json").write_text(json.dumps({"driver": "sqlite3", "data_source": str(db_file)}))
    server = CfsslServer(workdir, port or free_port(), ca_cert_file, ca_key_file, db_file)
    return server.start()
