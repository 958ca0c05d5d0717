"""Write the payload of each bundle in a folder as a fuzz seed for the payload target.

Usage: payload_seeds.py BUNDLE_FOLDER OUT_FOLDER. Envelopes that do not decode as a
COSE_Sign1 (the malformed cases) are skipped. Sequences of payloads (one input holds up
to four, split by the harness's marker) reach what a single bundle cannot: an identity
rotation's stage and commit after its keygen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cbor2

SPLIT = bytes([0xFF, 0x00, 0xFF, 0x00])
"""fuzz/fuzz_device.c's marker between the payloads of one input."""
DELEGATED = bytes([0xFF, 0x01, 0xFF, 0x01])
"""A payload starting with it is signed under the harness's delegation."""
DELEGATION_LABEL = -65537
SEQUENCES = {
    "seq-identity-commit": ("i-keygen", "i-stage", "i-commit"),
    "seq-identity-rollback": ("i-keygen", "i-stage", "i-commit", "i-rollback"),
    "seq-identity-mismatch": ("i-keygen", "i-stage-foreign-key", "i-stage"),
    "seq-delegated-commit": ("s-dlg-stage", "s-dlg-commit", "s-dlg-rollback"),
    "seq-revoked": ("s-revoke-online", "s-dlg-stage-12", "s-revoke-clear", "s-dlg-stage-13"),
}


def payload(path: Path) -> bytes | None:
    """The bundle's payload; with DELEGATED before it when a delegation signed it."""
    try:
        item = cbor2.loads(path.read_bytes())
    except (cbor2.CBORDecodeError, ValueError, EOFError):
        return None
    body = item.value if isinstance(item, cbor2.CBORTag) else item
    if not (isinstance(body, list) and len(body) == 4 and isinstance(body[2], bytes)):
        return None
    try:
        protected = cbor2.loads(body[0]) if isinstance(body[0], bytes) and body[0] else {}
    except (cbor2.CBORDecodeError, ValueError, EOFError):
        protected = {}
    delegated = isinstance(protected, dict) and DELEGATION_LABEL in protected
    return DELEGATED + body[2] if delegated else body[2]


def main(bundles: Path, out: Path) -> None:
    written = 0
    for path in sorted(bundles.glob("*.cbor")):
        if (data := payload(path)) is not None:
            (out / path.name).write_bytes(data)
            written += 1
    for name, steps in SEQUENCES.items():
        parts = [payload(bundles / f"{step}.cbor") for step in steps]
        (out / name).write_bytes(SPLIT.join(part for part in parts if part is not None))
        written += 1
    print(f"{written} payload seeds")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
