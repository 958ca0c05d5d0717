"""Bundles a device must refuse, and every limit of the contract at its boundary.

Each refusal must leave the device as it was: no item, no active tag, and no
sequence number consumed. A limit is shown twice: at the limit the bundle passes the
payload checks (the device answers a later check, or acts on it), one past it the
device refuses it with the limit's reason.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.conformance.material import chain_of_size
from orchestrator.conformance.model import Send, Tamper, rejected
from orchestrator.conformance.plan import ROLLED_BACK, STAGED, Script, sha256_text
from orchestrator.protocol.limits import (
    CA_CHAIN_MAX_BYTES,
    CREDS_MAX,
    DEVICE_ID_MAX_CHARS,
    MAX_BUNDLE_BYTES,
    PROBE_HOST_MAX_BYTES,
    QUEUED_BUNDLES_MAX,
    RID_MAX_BYTES,
    TAG_LIST_MAX,
)

__all__ = ["limits", "refusals"]

AT_OPERATION = ("tag_in_use", "unsafe_active", "invalid_operation")
"""Reasons of the operation checks (§4, check 13): the payload checks before them passed."""


def refusals(s: Script) -> None:
    """Replayed, tampered, foreign, expired, misaddressed, malformed, unknown bundles."""
    s1 = s.inputs.spare[0]
    s.add(
        "replay (same seq)",
        "the last accepted bundle sent again is refused: replay",
        Send(op="retire", resend="retire"),
        rejected("replay"),
    )
    s.add(
        "replay (older seq)",
        "an older accepted bundle sent again is refused: replay",
        Send(op="rollback", resend="rollback of a commit"),
        rejected("replay"),
    )
    unnamed: list[tuple[str, Tamper, str, str]] = [
        ("tampered signature", "signature", "bad_signature", "a flipped signature bit"),
        ("tampered payload", "payload", "bad_signature", "a flipped bit in the signed payload"),
        ("unsupported algorithm", "algorithm", "unsupported_algorithm", "alg ES384, not ES256"),
        ("no key id", "no-kid", "unknown_key", "a protected header without kid"),
        ("trailing bytes", "trailing", "bad_envelope", "a byte after the COSE_Sign1"),
    ]
    for name, tamper, reason, what in unnamed:
        s.add(
            name,
            f"{what}: refused as {reason}, the report names no bundle",
            Send(op="rollback", tamper=tamper),
            rejected(reason, named=False),
        )
    s.add(
        "foreign key",
        "a bundle signed by a key the device never trusted: unknown_key",
        Send(op="rollback", signer="foreign"),
        rejected("unknown_key", named=False),
    )
    s.add(
        "not CBOR",
        "bytes that are no COSE_Sign1: bad_envelope",
        Send(op="rollback", raw=b"\x00certfleet conformance: not a bundle"),
        rejected("bad_envelope", named=False),
    )
    s.add(
        "payload not a map",
        "a signed payload that is no map: bad_payload, naming no bundle",
        Send(op="rollback", tamper="list"),
        rejected("bad_payload", named=False),
    )
    s.add(
        "expired",
        "a bundle past its exp: bundle_expired",
        Send(op="rollback", iat_offset=-7200, ttl=3600),
        rejected("bundle_expired"),
    )
    s.add(
        "not yet valid",
        "a bundle issued more than 300 s ahead: not_yet_valid",
        Send(op="rollback", iat_offset=3600),
        rejected("not_yet_valid"),
    )
    s.add(
        "wrong device",
        "a bundle for another device: wrong_device",
        Send(op="rollback", fields={"dev": _other_device(s.inputs.device_id)}),
        rejected("wrong_device"),
    )
    s.add(
        "unknown op",
        "an op the contract does not name: bad_payload",
        Send(op="format"),
        rejected("bad_payload"),
    )
    s.add(
        "unknown payload key",
        "a payload key the contract does not name: bad_payload",
        Send(op="rollback", fields={"colour": "blue"}),
        rejected("bad_payload"),
    )
    s.add(
        "missing required key",
        "a stage without its probe: bad_payload",
        _without(s.stage(s.rid(), s1), "probe"),
        rejected("bad_payload"),
    )
    s.add(
        "unsupported version",
        "a bundle of version 3: unsupported_version",
        Send(op="rollback", fields={"v": 3}),
        rejected("unsupported_version"),
    )
    s.add(
        "version 1 accepted",
        "a v1 bundle (no v2 key) is read (answered at the operation check)",
        Send(op="rollback", fields={"v": 1}),
        rejected("nothing_to_undo"),
    )
    s.add(
        "undo_by in a v1 bundle",
        "a v2-only key in a v1 bundle: bad_payload",
        s.commit(s.rid(), s1, v=1),
        rejected("bad_payload"),
    )
    s.add(
        "stage into an active tag",
        "a stage never overwrites live trust: tag_in_use",
        s.stage(s.rid(), s.anchor),
        rejected("tag_in_use"),
    )
    s.add(
        "commit with nothing staged",
        "a commit without a healthy stage: nothing_staged",
        s.commit(s.rid(), s1),
        rejected("nothing_staged"),
    )


def _other_device(device_id: str, length: int | None = None) -> str:
    """Another valid device id, `length` characters long if given."""
    other = ("x" + device_id)[:DEVICE_ID_MAX_CHARS]
    if other == device_id:
        other = "y" + device_id[1:]
    if length is None:
        return other
    return (other + "0" * length)[:length]


def _filler_tags(s: Script, count: int) -> list[int]:
    """`count` distinct tags the device holds nothing in, beyond the spare tags."""
    used = {tag for tag, _ in s.trust.items} | set(s.trust.active) | set(s.inputs.spare)
    tags: list[int] = []
    candidate = max(used) + 1
    while len(tags) < count:
        if candidate not in used:
            tags.append(candidate)
        candidate += 1
    return tags


def limits(s: Script) -> None:
    """Every limit: at the limit accepted (or answered past the payload checks), +1 refused."""
    s1, anchor = s.inputs.spare[0], s.anchor
    s.add(
        f"bundle of {MAX_BUNDLE_BYTES} bytes",
        "a bundle at the size limit is read whole and verified (then refused for its extra key)",
        Send(op="rollback", tamper="pad", size=MAX_BUNDLE_BYTES),
        rejected("bad_payload"),
    )
    s.add(
        f"bundle of {MAX_BUNDLE_BYTES + 1} bytes",
        "one byte over: too_large before anything is decoded, naming no bundle",
        Send(op="rollback", tamper="pad", size=MAX_BUNDLE_BYTES + 1),
        rejected("too_large", named=False),
    )
    at_limit = chain_of_size(s.inputs.ca_good, CA_CHAIN_MAX_BYTES)
    rid = s.rid()
    s.add(
        f"CA item of {CA_CHAIN_MAX_BYTES} bytes",
        "a CA chain item at the modem's limit is written whole and probed",
        s.stage(rid, s1, at_limit),
        STAGED,
        trust=s.trust.with_ca(s1, sha256_text(at_limit)),
    )
    s.add(
        f"rollback of the {CA_CHAIN_MAX_BYTES}-byte stage",
        "the staged item is deleted",
        s.rollback(rid),
        ROLLED_BACK,
        trust=s.inputs.initial,
    )
    s.add(
        f"CA item of {CA_CHAIN_MAX_BYTES + 1} bytes",
        "one byte over the modem's limit: too_large, nothing written",
        s.stage(s.rid(), s1, chain_of_size(s.inputs.ca_good, CA_CHAIN_MAX_BYTES + 1)),
        rejected("too_large"),
    )
    at = ", at the limit, passes the payload checks"
    over = ", one over the limit: bad_payload"
    host, port = s.inputs.probe_good
    cases: list[tuple[str, Send, Send, tuple[str, ...]]] = [
        (
            f"dev of {DEVICE_ID_MAX_CHARS} chars",
            Send(
                op="rollback",
                fields={"dev": _other_device(s.inputs.device_id, DEVICE_ID_MAX_CHARS)},
            ),
            Send(
                op="rollback",
                fields={"dev": _other_device(s.inputs.device_id, DEVICE_ID_MAX_CHARS + 1)},
            ),
            ("wrong_device",),
        ),
        (
            f"rid of {RID_MAX_BYTES} bytes",
            s.rollback("r" * RID_MAX_BYTES),
            s.rollback("r" * (RID_MAX_BYTES + 1)),
            ("nothing_to_undo",),
        ),
        (
            f"creds of {CREDS_MAX} entries",
            s.stage(s.rid(), anchor, creds=_creds(s, CREDS_MAX)),
            s.stage(s.rid(), anchor, creds=_creds(s, CREDS_MAX + 1)),
            AT_OPERATION,
        ),
        (
            f"probe.host of {PROBE_HOST_MAX_BYTES} bytes",
            s.stage(s.rid(), anchor, probe=(_host(PROBE_HOST_MAX_BYTES), port)),
            s.stage(s.rid(), anchor, probe=(_host(PROBE_HOST_MAX_BYTES + 1), port)),
            AT_OPERATION,
        ),
    ]
    fillers = _filler_tags(s, TAG_LIST_MAX + 1)
    tags7 = [anchor, *fillers[: TAG_LIST_MAX - 1]]
    tags8 = [anchor, *fillers[:TAG_LIST_MAX]]
    cases.append(
        (
            f"probe.tags of {TAG_LIST_MAX} tags",
            _with(s.stage(s.rid(), anchor), probe={"host": host, "port": port, "tags": tags7}),
            _with(s.stage(s.rid(), anchor), probe={"host": host, "port": port, "tags": tags8}),
            AT_OPERATION,
        )
    )
    cases.append(
        (
            f"active of {TAG_LIST_MAX} tags",
            s.stage(s.rid(), anchor, active=tuple(tags7)),
            s.stage(s.rid(), anchor, active=tuple(tags8)),
            AT_OPERATION,
        )
    )
    cases.append(
        (
            f"tags of {TAG_LIST_MAX} tags",
            s.retire(s.rid(), tuple(tags7), s.trust.active),
            s.retire(s.rid(), tuple(tags8), s.trust.active),
            AT_OPERATION,
        )
    )
    for name, passes, refused, reasons in cases:
        s.add(name, name + at, passes, rejected(*reasons))
        s.add(name.replace(" of ", " one over ", 1), name + over, refused, rejected("bad_payload"))
    s.add(
        f"{QUEUED_BUNDLES_MAX} bundles queued",
        f"{QUEUED_BUNDLES_MAX} bundles published at once are all handled, in order",
        tuple(s.rollback("") for _ in range(QUEUED_BUNDLES_MAX)),
        tuple(rejected("nothing_to_undo") for _ in range(QUEUED_BUNDLES_MAX)),
        burst=True,
    )


def _without(send: Send, key: str) -> Send:
    """`send` with payload key `key` left out."""
    return replace(send, fields={**send.fields, key: None})


def _with(send: Send, **fields: object) -> Send:
    """`send` with these payload keys set."""
    return replace(send, fields={**send.fields, **fields})


def _host(length: int) -> str:
    """A DNS name of exactly `length` bytes (labels of at most 63)."""
    labels: list[str] = []
    while sum(len(label) + 1 for label in labels) < length:
        labels.append("a" * 62)
    name = ".".join(labels)
    return name[:length].rstrip(".").ljust(length, "b")


def _creds(s: Script, count: int) -> list[dict[str, object]]:
    """`count` credentials of distinct types: the good CA, then the other item kinds.

    No client certificate (type 1): it travels alone, in an identity stage, so next to
    another item it is `bad_payload` whatever the count.
    """
    contents = {
        0: s.inputs.ca_good,
        2: "-----BEGIN PRIVATE KEY-----\nconformance\n-----END PRIVATE KEY-----\n",
        3: "00112233445566778899aabbccddeeff",
        4: "conformance",
        5: "-----BEGIN PUBLIC KEY-----\nconformance\n-----END PUBLIC KEY-----\n",
    }
    return [{"type": t, "pem": pem} for t, pem in list(contents.items())[:count]]
