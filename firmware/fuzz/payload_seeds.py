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
SEQUENCES = {
    "seq-identity-commit": ("i-keygen", "i-stage", "i-commit"),
    "seq-identity-rollback": ("i-keygen", "i-stage", "i-commit", "i-rollback"),
    "seq-identity-mismatch": ("i-keygen", "i-stage-foreign-key", "i-stage"),
}


def payload(path: Path) -> bytes | None:
    try:
        item = cbor2.loads(path.read_bytes())
    except (cbor2.CBORDecodeError, ValueError, EOFError):
        return None
    body = item.value if isinstance(item, cbor2.CBORTag) else item
    if isinstance(body, list) and len(body) == 4 and isinstance(body[2], bytes):
        return body[2]
    return None


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
