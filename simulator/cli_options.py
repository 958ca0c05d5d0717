"""What `certfleet simulate`'s identity and fault options turn into.

Kept apart from the command so the command stays a list of options: `--fault NAME` or
`--fault NAME@3,7` (only devices 3 and 7), `--identity-ca`/`--identity-ca-key` (each
device leaves the factory with a client certificate of that CA), and
`--attestation-keys-out` (the fleet's public attestation keys, as certfleet's
CERTFLEET_ATTESTATION_KEYS_FILE reads them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "FAULTS",
    "FaultPlan",
    "KeyEscrowFile",
    "identity_not_after",
    "load_identities",
    "parse_faults",
    "write_attestation_keys",
]

FAULTS: Final = frozenset(
    {
        "probe-refused",
        "accept-replay",
        "csr-wrong-subject",
        "csr-reused-key",
        "csr-foreign-key",
        "csr-bad-signature",
        "attestation-forged",
        "identity-refused",
    }
)
"""Fault injection the simulator knows: `probe-refused`, the devices' network refuses every
probe; `accept-replay`, a broken firmware that skips the sequence check (what `certfleet
conformance` must catch); `csr-wrong-subject`, `csr-reused-key`, `csr-bad-signature` and
`attestation-forged`, a modem whose `%KEYGEN` output certfleet must refuse (a CSR for
another name, over the key it holds already, over the factory key of the next device
(device n+1's certificate in use), with a broken self-signature, or attested by a key
that is not the modem's); `identity-refused`, a device whose new identities the
broker refuses (its identity probe fails `identity_refused`, a commit falls back)."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults for every device, and faults for some devices only (by number)."""

    everywhere: frozenset[str] = frozenset()
    by_device: dict[int, frozenset[str]] = field(default_factory=dict)


FOREIGN_KEY_FAULT: Final = "csr-foreign-key"


def parse_faults(values: Iterable[str], devices: int) -> FaultPlan:
    """`NAME` (every device) or `NAME@N,M` (devices N and M, numbered from 0).

    Raises:
        ValueError: an unknown fault, or a device number outside the fleet.
    """
    everywhere: set[str] = set()
    by_device: dict[int, set[str]] = {}
    for value in values:
        name, _, numbers = value.partition("@")
        if name not in FAULTS:
            raise ValueError(f"unknown --fault {name}; known: {', '.join(sorted(FAULTS))}")
        if not numbers and name == FOREIGN_KEY_FAULT:
            raise ValueError(f"--fault {name} names devices (@N): device N+1's key is used")
        if not numbers:
            everywhere.add(name)
            continue
        last = devices - 2 if name == FOREIGN_KEY_FAULT else devices - 1  # N+1 must exist
        for text in numbers.split(","):
            if not text.strip().isdigit() or not 0 <= int(text) <= last:
                raise ValueError(f"--fault {value}: {text!r} is not a device number 0..{last}")
            by_device.setdefault(int(text), set()).add(name)
    return FaultPlan(
        everywhere=frozenset(everywhere),
        by_device={n: frozenset(names) for n, names in by_device.items()},
    )


def identity_not_after(days: float, *, now: datetime | None = None) -> datetime:
    """When the factory identities expire: `days` from now."""
    return (now or datetime.now(UTC)) + timedelta(days=days)


def load_identities(path: Path) -> dict[str, tuple[bytes, bytes]]:
    """`{device id: {"cert": PEM, "key": PEM}}` from a JSON file: factory identities made
    elsewhere (say, certificates a CFSSL signed).

    Raises:
        ValueError: not that shape.
    """
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold a JSON object of device id -> {{cert, key}}")
    identities: dict[str, tuple[bytes, bytes]] = {}
    for device, item in document.items():
        if not isinstance(item, dict) or not all(
            isinstance(item.get(name), str) for name in ("cert", "key")
        ):
            raise ValueError(f"{path}: {device!r} needs text cert and key PEMs")
        identities[device] = (item["cert"].encode(), item["key"].encode())
    return identities


def write_attestation_keys(path: Path, device_ids: Sequence[str], fleet_seed: str) -> None:
    """{device id: PEM public attestation key}, as JSON, written whole (temp file + rename)."""
    from simulator.attestation import attestation_keys_json  # noqa: PLC0415 -- loads only when used

    document = json.dumps(attestation_keys_json(device_ids, fleet_seed), indent=1, sort_keys=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(document + "\n")
    temporary.replace(path)


class KeyEscrowFile:
    """Appends every private key the modems store to a file, one JSON line each (tests only).

    A test that searches everything a run recorded for a device's private key needs the
    keys; a real modem gives none. Lines: `{"device", "tag", "pem"}` (PKCS#8 PEM).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        path.touch(mode=0o600)

    def __call__(self, device: str, tag: int, key: ec.EllipticCurvePrivateKey) -> None:
        """Record one key."""
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 -- loads only when used

        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        with self._path.open("a") as escrow:
            escrow.write(json.dumps({"device": device, "tag": tag, "pem": pem}) + "\n")
