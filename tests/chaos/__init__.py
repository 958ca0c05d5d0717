"""The chaos suite of issue 11: faults injected mid-wave on a real stack, and hostile input.

`python -m tests.chaos.run` (`make chaos`) runs it at full size and prints one row per
fault; `tests/e2e/test_chaos_subset.py` runs a small part of it in `make test`.

- `bundles`: mutated bundles at a device's firmware, each refused for its reason;
- `messages`: malformed, oversized, forged and replayed device messages at a real
  listener and Redis, each refused or ignored and counted, nothing changed;
- `stack`, `devices`, `witness`: a stack whose broker and Redis persist, a fleet whose
  modems can be read back, and a subscriber that sees every report the devices publish;
- `faults`: one fault injected in the middle of the 50 % wave, and what it left behind.
"""
