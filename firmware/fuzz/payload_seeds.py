"""Write the payload of each bundle in a folder as a fuzz seed for the payload target.

Usage: payload_seeds.py BUNDLE_FOLDER OUT_FOLDER. Envelopes that do not decode as a
COSE_Sign1 (the malformed cases) are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cbor2


def main(bundles: Path, out: Path) -> None:
    written = 0
    for path in sorted(bundles.glob("*.cbor")):
        try:
            item = cbor2.loads(path.read_bytes())
        except (cbor2.CBORDecodeError, ValueError, EOFError):
            continue
        body = item.value if isinstance(item, cbor2.CBORTag) else item
        if isinstance(body, list) and len(body) == 4 and isinstance(body[2], bytes):
            (out / path.name).write_bytes(body[2])
            written += 1
    print(f"{written} payload seeds")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
