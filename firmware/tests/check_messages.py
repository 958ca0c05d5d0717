"""Parse the JSON messages the C tests wrote with the orchestrator's own models.

`make -C firmware test` runs it after `test_message`, which writes a device's reports
and a state message into a folder: each report must parse as `ReportMessage` and the
state as `StateMessage`, for the device id the bundles were addressed to, so what the C
library publishes is what the listener accepts. The `csr` report's %KEYGEN answer (the
host port's) must parse with certfleet's reader, its CSR must be a P-256 CSR of subject
exactly CN=<device id> with a valid self-signature, and its attestation must verify with
the attestation key derived as issue 14 decides (fleet seed "certfleet").
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.protocol.keygen import parse_keygen_output, verify_attestation
from orchestrator.protocol.report import ReportMessage, parse_report
from orchestrator.protocol.state import parse_state

CONTEXT = Path(__file__).resolve().parent / "vectors" / "bundles" / "CONTEXT"


IDENTITY_TAG = 44
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def check_csr(report: ReportMessage, device: str) -> None:
    """The keygen's answer: a CSR of CN=<device> and the modem's attestation of it."""
    output = parse_keygen_output(report.csr or "")
    csr = x509.load_der_x509_csr(output.csr_der)
    key = csr.public_key()
    if not csr.is_signature_valid or not isinstance(key, ec.EllipticCurvePublicKey):
        raise SystemExit("the CSR's self-signature does not verify or its key is not EC")
    if key.curve.name != "secp256r1" or csr.subject != x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, device)]
    ):
        raise SystemExit(f"the CSR is not P-256 with subject CN={device}: {csr.subject}")
    digest = hashlib.sha256(f"certfleet-attestation:certfleet:{device}".encode()).digest()
    attestation_key = ec.derive_private_key(int.from_bytes(digest) % P256_ORDER, ec.SECP256R1())
    claims = verify_attestation(output.attestation, attestation_key.public_key())
    claims.check(device_id=device, seq=report.seq, tag=IDENTITY_TAG, csr_der=output.csr_der)


def main(folder: Path) -> None:
    device = CONTEXT.read_text().split("\n")[0].split()[1]
    reports = sorted(folder.glob("report-*.json"))
    if len(reports) < 10:
        raise SystemExit(f"{folder} holds {len(reports)} reports, expected at least 10")
    parsed = [parse_report(path.read_bytes(), topic_device_id=device) for path in reports]
    phases = [report.phase for report in parsed]
    csr_reports = [report for report in parsed if report.csr is not None]
    if not csr_reports:
        raise SystemExit("no report carries a `csr` field (the keygen's)")
    for report in csr_reports:
        check_csr(report, device)
    state = parse_state((folder / "state.json").read_bytes(), topic_device_id=device)
    identity_certs = [
        c for c in state.credentials if c.sec_tag == state.identity_tag and c.type == 1 and c.pem
    ]
    if state.v != 2 or not state.active_tags or not identity_certs:
        raise SystemExit(
            f"state message {state!r} is not a v2 state with an active list and identity"
        )
    print(f"{len(reports)} reports ({', '.join(phases)}) and 1 state parse as the listener's")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
