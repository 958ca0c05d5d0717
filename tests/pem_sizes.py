"""PEM files of an exact size, to test the 4096-byte CA chain item limit at its boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.pki import make_ca
from tests.unit.builders import NOW

__all__ = ["ca_cert_pem_of_size", "ca_pems_of_total"]


def ca_pems_of_total(total: int, *, files: int = 2) -> list[str]:
    """`files` CA PEMs whose concatenation (one CA chain item) is exactly `total` bytes.

    The first file opens with comment lines (text before `-----BEGIN` is allowed by
    RFC 7468 and kept byte for byte) that make up the size.
    """
    pems = [
        make_ca(
            f"Boundary CA {n}",
            not_before=NOW - timedelta(days=1),
            not_after=NOW + timedelta(days=400),
        ).pem.decode()
        for n in range(files)
    ]
    missing = total - sum(len(p) for p in pems)
    if missing < 2:
        raise ValueError(f"{files} CAs already take {total - missing} bytes; ask for more")
    lines, rest = divmod(missing, 64)
    padding = "#" * 63 + "\n"
    pems[0] = padding * lines + ("#" * (rest - 1) + "\n" if rest else "") + pems[0]
    assert len("".join(pems)) == total
    return pems


def ca_cert_pem_of_size(size: int, *, now: datetime | None = None) -> str:
    """One self-signed CA certificate, valid around `now` (default: the clock's), whose PEM
    is exactly `size` bytes.

    A private extension of filler bytes sets the size; base64 moves a PEM in steps of
    four characters (and a newline every 64), so not every size exists: ValueError.
    """
    at = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Sized CA {size}")])
    base = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(at - timedelta(days=1))
        .not_valid_after(at + timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    low, high = 0, size
    while low <= high:  # PEM size grows with the filler: bisect, then look around
        filler = (low + high) // 2
        pem = _with_filler(base, key, filler)
        if len(pem) < size:
            low = filler + 1
        else:
            high = filler - 1
    for filler in range(max(0, low - 8), low + 8):
        pem = _with_filler(base, key, filler)
        if len(pem) == size:
            return pem
    raise ValueError(f"no certificate PEM is exactly {size} bytes")


def _with_filler(
    base: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey, filler: int
) -> str:
    extension = x509.UnrecognizedExtension(_FILLER_OID, b"\x04" * filler)
    cert = base.add_extension(extension, critical=False).sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


_FILLER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
