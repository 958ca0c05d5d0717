"""Signed bundles as the suite needs them: valid ones, and every way of spoiling one.

The product's own `Bundle` refuses to build most of what the suite must send (an
unknown op, a 65-byte rid, a payload over its limit), so the suite writes the payload
map itself, in the deterministic CBOR of docs/protocol.md §3, and signs it with the
COSE_Sign1 of `orchestrator.protocol.cose`. A delegated bundle's delegation is written
the same way (its payload map, signed by a root key), so that the suite can also send
the delegations certfleet never signs: expired, out of their rules, by an unknown root.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import cbor2

from orchestrator.conformance.material import KeyHolder, public_point
from orchestrator.conformance.model import Delegate, In, Send
from orchestrator.protocol.cose import ALG_ES256, HEADER_ALG, HEADER_KID, sign1
from orchestrator.protocol.delegation import DELEGATION_LABEL, DELEGATION_VERSION

__all__ = ["ALG_ES384", "Forge"]

ALG_ES384: Final = -35
"""A COSE algorithm a device must refuse (`unsupported_algorithm`)."""


def _dumps(item: object) -> bytes:
    return cbor2.dumps(item, canonical=True)


class Forge:
    """Builds the bytes of a `Send` for one device, signed by the suite's keys by name."""

    def __init__(self, device_id: str, keys: Mapping[str, KeyHolder]) -> None:
        self.device_id = device_id
        self.keys = dict(keys)

    def payload(self, send: Send, *, seq: int, now: datetime) -> dict[str, Any]:
        """The payload map: the defaults of every bundle, then the step's fields."""
        issued_at = int(now.timestamp()) + send.iat_offset
        document: dict[str, Any] = {
            "v": 2,
            "dev": self.device_id,
            "rid": send.rid,
            "seq": seq,
            "op": send.op,
            "iat": issued_at,
            "exp": issued_at + send.ttl,
        }
        for key, value in send.fields.items():
            if value is None:
                document.pop(key, None)
            elif isinstance(value, In):
                document[key] = int(now.timestamp() + value.seconds)
            else:
                document[key] = value
        return document

    def build(self, send: Send, *, seq: int, now: datetime) -> bytes:
        """The bundle as the device receives it."""
        document = self.payload(send, seq=seq, now=now)
        if send.tamper == "pad":
            return self._padded(send, document)
        payload = _dumps(list(document.items()) if send.tamper == "list" else document)
        key = self.keys[send.signer]
        if send.tamper in ("algorithm", "no-kid"):
            header: dict[int, int | bytes] = {
                HEADER_ALG: ALG_ES384 if send.tamper == "algorithm" else ALG_ES256
            }
            if send.tamper == "algorithm":
                header[HEADER_KID] = key.key_id
            return self._envelope(_dumps(header), payload, key)
        if send.delegation is not None:
            header = {
                HEADER_ALG: ALG_ES256,
                HEADER_KID: key.key_id,
                DELEGATION_LABEL: self.delegation(send.delegation, now=now),
            }
            data = self._envelope(_dumps(header), payload, key)
        else:
            data = sign1(payload, sign=key.sign, kid=key.key_id)
        if send.tamper == "signature":
            return data[:-1] + bytes([data[-1] ^ 0x01])
        if send.tamper == "payload":  # one byte of the seq, inside the signed payload
            at = data.index(payload) + payload.index(b"cseq") + 4
            return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
        if send.tamper == "trailing":
            return data + b"\x00"
        return data

    def delegation(self, delegate: Delegate, *, now: datetime) -> bytes:
        """The delegation's COSE_Sign1 bytes (tagged 18), signed by `delegate.root`."""
        if delegate.raw is not None:
            return delegate.raw
        key, root = self.keys[delegate.key], self.keys[delegate.root]
        moment = int(now.timestamp())
        document: dict[str, Any] = {
            "v": DELEGATION_VERSION,
            "exp": moment + delegate.exp,
            "iat": moment if delegate.iat is None else delegate.iat,
            "kid": key.key_id,
            "nbf": moment + delegate.nbf,
            "ops": list(delegate.ops),
            "pub": public_point(key),
            "kinds": list(delegate.kinds),
        }
        if delegate.rids is not None:
            document["rids"] = list(delegate.rids)
        for name, value in delegate.fields.items():
            if value is None:
                document.pop(name, None)
            else:
                document[name] = value
        alg = ALG_ES384 if delegate.tamper == "algorithm" else ALG_ES256
        protected = _dumps({HEADER_ALG: alg, HEADER_KID: root.key_id})
        data = self._envelope(protected, _dumps(document), root)
        if delegate.tamper == "signature":
            return data[:-1] + bytes([data[-1] ^ 0x01])
        if delegate.tamper == "untagged":
            return _dumps(cbor2.loads(data).value)
        return data

    def _envelope(self, protected: bytes, payload: bytes, key: KeyHolder) -> bytes:
        signature = key.sign(_dumps(["Signature1", protected, b"", payload]))
        return _dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))

    def _padded(self, send: Send, document: dict[str, Any]) -> bytes:
        """A validly signed bundle of exactly `send.size` bytes, grown by an unknown key."""
        if send.size is None:
            raise ValueError("a padded bundle needs its size")
        key = self.keys[send.signer]

        def signed(pad: int) -> bytes:
            payload = _dumps({**document, "pad": b"\x00" * pad})
            return sign1(payload, sign=key.sign, kid=key.key_id)

        base = 300  # past the CBOR length boundaries at 24 and 256 bytes
        pad = base + send.size - len(signed(base))
        data = signed(pad)
        if len(data) != send.size:
            raise ValueError(f"cannot pad a bundle to {send.size} bytes (got {len(data)})")
        return data
