"""A `csr` field outside the contract's form and limits is refused, and so is every edit
of an honest one."""

from __future__ import annotations

import base64
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from orchestrator.domain.identity import CsrRefusal
from orchestrator.protocol.limits import CSR_DER_MAX_BYTES, CSR_FIELD_MAX_BYTES
from orchestrator.services.identity import RefusedCsr
from tests.csr_fields import b64url, common_name, csr_der, keygen_field
from tests.fakes import FakeIdentityStore
from tests.properties import examples
from tests.unit.csr_checking import DEVICE, SEQ, TAG, check, refusal, with_der

pytestmark = pytest.mark.unit

P256 = ec.generate_private_key(ec.SECP256R1())


# -- the field's form and limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda f: f.replace(".", ""), id="no-dot"),
        pytest.param(lambda f: f + ".AAAA", id="three-parts"),
        pytest.param(lambda f: f.split(".")[0] + "==." + f.split(".")[1], id="padding"),
        pytest.param(lambda f: "+" + f, id="base64-not-url"),
        pytest.param(lambda f: " " + f, id="whitespace"),
        pytest.param(lambda f: "." + f.split(".")[1], id="empty-csr"),
        pytest.param(lambda f: f.split(".")[0] + ".", id="empty-attestation"),
        pytest.param(lambda f: "A" + f, id="length-1-mod-4-or-not-der"),
        pytest.param(lambda f: "", id="empty"),
        pytest.param(lambda f: f"{b64url(b'not a csr')}.{f.split('.')[1]}", id="not-der"),
        pytest.param(lambda f: f"{b64url(b'')}.{f.split('.')[1]}", id="no-bytes"),
    ],
)
def test_a_field_not_in_the_contract_form_is_malformed(mangle: object) -> None:
    """Anything but `base64url(CSR DER).base64url(COSE_Sign1)` is csr_malformed."""
    field = mangle(keygen_field(DEVICE, seq=SEQ, tag=TAG).field)  # type: ignore[operator]
    assert refusal(field) is CsrRefusal.MALFORMED


def test_a_non_canonical_base64url_is_malformed() -> None:
    """Spare bits set in the last character make another text of the same bytes: refused."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    fields = (keygen_field(DEVICE, seq=SEQ, tag=TAG).field for _ in range(30))
    field = next(f for f in fields if len(f.split(".")[0]) % 4 in (2, 3))
    csr_part, attestation_part = field.split(".")
    last = alphabet[alphabet.index(csr_part[-1]) ^ 1]  # the lowest bit is a spare one
    other = csr_part[:-1] + last
    padding = "=" * (-len(csr_part) % 4)
    assert base64.urlsafe_b64decode(other + padding) == base64.urlsafe_b64decode(csr_part + padding)
    assert refusal(f"{other}.{attestation_part}") is CsrRefusal.MALFORMED


def test_a_field_over_its_limit_is_malformed() -> None:
    """A field over CSR_FIELD_MAX_BYTES is refused before it is decoded."""
    made = keygen_field(DEVICE, seq=SEQ, tag=TAG).field
    csr_part, attestation_part = made.split(".")
    padded = csr_part + "A" * (CSR_FIELD_MAX_BYTES - len(made) + 1 + 3)
    assert len(f"{padded}.{attestation_part}") > CSR_FIELD_MAX_BYTES
    assert refusal(f"{padded}.{attestation_part}") is CsrRefusal.MALFORMED


def test_a_csr_over_its_der_limit_is_malformed() -> None:
    """A CSR DER over CSR_DER_MAX_BYTES is refused even inside the field's limit."""
    big_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 60) for _ in range(16)]
    )
    der = csr_der(P256, big_name)
    assert len(der) > CSR_DER_MAX_BYTES
    field = with_der(der)
    assert len(field) <= CSR_FIELD_MAX_BYTES
    assert refusal(field) is CsrRefusal.MALFORMED


# -- every mutation of an honest field is refused ----------------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "


@functools.cache
def honest_field() -> str:
    return keygen_field(DEVICE, seq=SEQ, tag=TAG, key=P256).field


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """An honest field with one character changed, added or removed, or cut short."""
    field = honest_field()
    at = draw(st.integers(min_value=0, max_value=len(field) - 1))
    char = draw(st.sampled_from(ALPHABET))
    kind = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
    if kind == "replace":
        return field[:at] + char + field[at + 1 :]
    if kind == "insert":
        return field[:at] + char + field[at:]
    if kind == "delete":
        return field[:at] + field[at + 1 :]
    return field[:at]


@settings(max_examples=examples(300))
@given(field=mutated())
def test_no_mutated_field_passes(field: str) -> None:
    """Whatever one edit does to an honest attested field, certfleet refuses it."""
    assume(field != honest_field())
    store = FakeIdentityStore()
    result = check(field, store=store)
    assert isinstance(result, RefusedCsr), f"a mutated field passed: {field!r}"
    assert store.keys == {}


def test_a_csr_with_trailing_bytes_is_malformed() -> None:
    """Bytes after the CSR's DER are not a PKCS#10 CSR (one encoding, nothing smuggled)."""
    der = csr_der(P256, common_name(DEVICE))
    assert refusal(with_der(der + b"\x00")) is CsrRefusal.MALFORMED
