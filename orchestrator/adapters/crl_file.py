"""The CRL file the broker reads (Mosquitto's `crlfile`), and telling the broker to reload it.

The file is replaced atomically: the new CRL goes into a temporary file in the same
directory, is flushed to disk and renamed over the old one, so the broker never reads
half a CRL (and a reader that opened the old file keeps reading the old one whole).

Mosquitto 2.0 reads `crlfile` when it builds a listener's TLS context: at start and
on SIGHUP, never on its own. With `CERTFLEET_CRL_RELOAD_PID_FILE` (e.g. mosquitto's
`pid_file`) the broker is sent SIGHUP after each write; without it the new CRL counts
from the broker's next restart, which the shipped deployment does when the file
changes, because Mosquitto 2.0.11 mishandles the offline sessions of sleeping devices
on SIGHUP and can crash soon after (docs/operations.md, "Rotating device identities").
A broken `crlfile` on SIGHUP makes Mosquitto 2.0 drop CRL checking until the next good
one, so only a parsable CRL is ever written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Final

import structlog
from cryptography import x509

from orchestrator.domain.errors import CertfleetError

__all__ = ["CrlFilePublisher", "CrlPublishError", "CrlReloadError", "write_atomically"]

CRL_MODE: Final = 0o644
"""A CRL is public; the broker (another user) must be able to read it."""

log = structlog.get_logger(__name__)


class CrlPublishError(CertfleetError):
    """The CRL could not be published (nothing was written, or the broker was not told)."""


class CrlReloadError(CrlPublishError):
    """The CRL was written but the broker could not be told to reload it."""


def write_atomically(path: Path, data: bytes, *, mode: int = CRL_MODE) -> None:
    """Replace `path` with `data` in one step (temp file, fsync, rename, fsync of the dir)."""
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    # The rename itself survives a power cut once the directory is synced; some network
    # filesystems (a shared volume) refuse fsync on a directory, and the new CRL is in
    # place either way.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_pid(pid_file: Path) -> int:
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise CrlReloadError(f"cannot read the broker's pid file {pid_file}: {exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise CrlReloadError(f"{pid_file} does not hold a process id: {text[:32]!r}")
    return int(text)


def _check_crl(crl_pem: bytes) -> None:
    """Refuse to write anything but a PEM CRL: Mosquitto 2.0 that cannot load `crlfile` on
    SIGHUP logs an error and goes on WITHOUT a CRL, accepting revoked certificates again."""
    try:
        x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        raise CrlPublishError("refusing to write a CRL file that is not a PEM CRL") from None


class CrlFilePublisher:
    """Writes the CRL to `path` and sends SIGHUP to the pid in `reload_pid_file`, if any."""

    def __init__(self, path: Path, *, reload_pid_file: Path | None = None) -> None:
        self._path = path
        self._reload_pid_file = reload_pid_file

    @property
    def path(self) -> Path:
        """Where the CRL goes (the broker's `crlfile`)."""
        return self._path

    def publish(self, crl_pem: bytes) -> None:
        """Replace the CRL file, then have the broker reload it.

        Raises:
            CrlPublishError: `crl_pem` is not a PEM CRL; nothing was written.
            CrlReloadError: the file was written, but the broker could not be signalled
                (it reads the new CRL at its next reload or restart).
        """
        _check_crl(crl_pem)
        write_atomically(self._path, crl_pem)
        log.info("crl_written", path=str(self._path), size=len(crl_pem))
        if self._reload_pid_file is not None:
            self.reload()

    def reload(self) -> int:
        """Send SIGHUP to the broker; its pid."""
        if self._reload_pid_file is None:
            raise CrlReloadError("no broker pid file is set (CERTFLEET_CRL_RELOAD_PID_FILE)")
        pid = _read_pid(self._reload_pid_file)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise CrlReloadError(
                f"no process {pid} (from {self._reload_pid_file}); is the broker running?"
            ) from None
        except PermissionError:
            raise CrlReloadError(
                f"not allowed to signal process {pid} (from {self._reload_pid_file}); run "
                "certfleet as the broker's user or reload the broker another way"
            ) from None
        log.info("crl_reload_signalled", pid=pid)
        return pid

    def __repr__(self) -> str:
        return f"CrlFilePublisher(path={str(self._path)!r})"
