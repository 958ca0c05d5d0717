"""The CRL the local CA signs lists exactly the revocations it was given.

Whatever the serials (any size a CA may use), reasons and dates, the CRL parses, its
signature verifies with the CA's key, and it names every serial once with its reason
(none for `unspecified`, as RFC 5280 asks) and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapters.issuer_local import REASONS, LocalCaIssuer
from orchestrator.domain.identity import RevokedCertificate
from simulator.pki import IssuedCA, make_ca
from tests.properties import examples

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CA = make_ca("property CA", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=900))


def _issuer(directory: Path, ca: IssuedCA) -> LocalCaIssuer:
    cert_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
    cert_file.write_bytes(ca.pem)
    key_file.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return LocalCaIssuer(cert_file, key_file)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalCaIssuer:
    return _issuer(tmp_path_factory.mktemp("ca"), CA)


revocations = st.dictionaries(
    keys=st.integers(min_value=1, max_value=2**159 - 1),
    values=st.tuples(
        st.sampled_from(sorted(REASONS)), st.integers(min_value=0, max_value=400 * 86400)
    ),
    max_size=20,
)


@settings(max_examples=examples(40))
@given(revoked=revocations)
def test_the_crl_lists_every_revocation_once_with_its_reason(
    issuer: LocalCaIssuer, revoked: dict[int, tuple[str, int]]
) -> None:
    """Serials, reasons and dates in, the same out, signed by the CA."""
    entries = [
        RevokedCertificate(
            serial=serial,
            revoked_at=NOW - timedelta(seconds=age),
            not_after=NOW + timedelta(days=30),
            device_id=f"dev-{serial % 1000}",
            reason=reason,
        )
        for serial, (reason, age) in revoked.items()
    ]
    pem = issuer.sign_crl(entries, now=NOW, next_update=NOW + timedelta(days=1))
    crl = x509.load_pem_x509_crl(pem)
    assert crl.is_signature_valid(CA.key.public_key())
    assert crl.last_update_utc == NOW
    listed = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = None
        listed[entry.serial_number] = (reason, entry.revocation_date_utc)
    assert listed == {
        serial: (REASONS[reason], NOW - timedelta(seconds=age))
        for serial, (reason, age) in revoked.items()
    }
