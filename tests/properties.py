"""How property tests run: the same examples in `make test`, random and many in `make fuzz`.

`make test` loads the `ci` profile: derandomized (the examples follow from each test's
code, so a run is repeatable and a red build is not luck) and without the example
database. `make fuzz` sets `HYPOTHESIS_PROFILE=fuzz`: random examples, saved failures
replayed from `.hypothesis/`, no deadline, and every test's example count multiplied by
`FUZZ_FACTOR` through `examples()`. A failure found there becomes an explicit
`@example` (or a named regression test) next to the property it broke.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ_FACTOR", "PROFILE", "examples", "load_profile"]

FUZZ_FACTOR: Final = int(os.environ.get("CERTFLEET_FUZZ_FACTOR", "50"))
"""How many times more examples each property gets under the fuzz profile."""

PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "ci")
"""The profile this run uses (`ci` unless `make fuzz` says otherwise)."""


def examples(n: int) -> int:
    """`n` examples in `make test`, `n * FUZZ_FACTOR` in `make fuzz`."""
    return n * FUZZ_FACTOR if PROFILE == "fuzz" else n


def load_profile() -> None:
    """Register both profiles and load the one this run asks for."""
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.register_profile(
        "fuzz",
        derandomize=False,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(PROFILE)
