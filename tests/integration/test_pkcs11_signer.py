"""The root signer in a real SoftHSM2 token: ES256 that devices verify, the private key
never readable, clear errors for every missing piece, and a forked process signs on its own."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive

from orchestrator.adapters.pkcs11_signer import (
    PinFileError,
    Pkcs11ModuleError,
    Pkcs11RootSigner,
    RootKeyExistsError,
    RootKeyMissingError,
    TokenLoginError,
    TokenNotFoundError,
    create_root_key,
    read_pin_file,
    release_tokens,
)
from orchestrator.adapters.root_signers import root_signer_from_settings
from orchestrator.protocol.cose import Sign1Message, es256_verify, key_id, sign1
from tests.softhsm import SoftHsmToken, softhsm_token

pytestmark = pytest.mark.integration


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    """An empty SoftHSM2 token of this test."""
    with softhsm_token(tmp_path / "hsm") as made:
        yield made


@pytest.fixture
def root(token: SoftHsmToken) -> SoftHsmToken:
    """The token with the root pair made in it."""
    token.create_root()
    return token


def test_signatures_verify_with_the_exported_public_key(root: SoftHsmToken) -> None:
    """A token signature is a 64-byte r||s that the public key (and so a device) verifies."""
    signer = root.signer()
    tbs = b"Signature1 over a bundle"
    signature = signer.sign(tbs)
    assert len(signature) == 64
    es256_verify(signer.public_key, tbs, signature)
    assert signer.key_id == key_id(signer.public_key)
    assert signer.signatures == 1
    assert signer.delegation_for(2**31) is None


def test_a_cose_envelope_signed_in_the_token_verifies(root: SoftHsmToken) -> None:
    """sign1 over the token signer makes an envelope the usual verification accepts."""
    signer = root.signer()
    data = sign1(b"payload", sign=signer.sign, kid=signer.key_id)
    message = Sign1Message.decode(data)
    assert message.kid == signer.key_id
    message.verify(signer.public_key)


def test_the_private_key_is_sensitive_and_not_extractable(root: SoftHsmToken) -> None:
    """The made private key cannot be read out of the token."""
    lib = pkcs11.lib(str(root.module))
    pin = read_pin_file(root.pin_file)
    root.signer().sign(b"x")  # a signer holds the process's login; a second session shares it
    with lib.get_token(token_label=root.label).open() as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=root.key_label)
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(AttributeSensitive):
            assert private[Attribute.VALUE] is None  # never reached: reading it fails
    assert pin


def test_create_refuses_to_replace_a_root_unless_forced(root: SoftHsmToken) -> None:
    """A second create-root fails; with force it makes a new, different key, and a signer
    that announced the old one refuses to sign with the new one."""
    running = root.signer()
    first = key_id(running.public_key)
    running.sign(b"before")
    with pytest.raises(RootKeyExistsError, match="--force"):
        root.create_root()
    second = root.create_root(force=True)
    assert key_id(second) != first
    assert root.signer().key_id == key_id(second)
    with pytest.raises(RootKeyMissingError, match="was replaced in the token"):
        running.sign(b"after")  # never a signature by a key other than the one it announced


def test_an_imported_known_key_signs_as_the_root(token: SoftHsmToken) -> None:
    """import_root puts a known key in; the signer's kid and signatures are that key's."""
    known = ec.generate_private_key(ec.SECP256R1())
    kid = token.import_root(known)
    signer = token.signer()
    assert signer.key_id == kid
    es256_verify(known.public_key(), b"m", signer.sign(b"m"))


def test_errors_name_what_is_missing(token: SoftHsmToken, tmp_path: Path) -> None:
    """Missing module, token, key, PIN file, open PIN file, wrong PIN: each its own error."""
    with pytest.raises(Pkcs11ModuleError, match="CERTFLEET_PKCS11_MODULE"):
        Pkcs11RootSigner(tmp_path / "nope.so", token.label, token.key_label, token.pin_file)
    not_a_module = tmp_path / "fake.so"
    not_a_module.write_bytes(b"not a library")
    with pytest.raises(Pkcs11ModuleError, match="could not be loaded"):
        assert Pkcs11RootSigner(not_a_module, token.label, token.key_label, token.pin_file).key_id
    with pytest.raises(TokenNotFoundError, match="certfleet-test"):
        assert Pkcs11RootSigner(token.module, "other", token.key_label, token.pin_file).key_id
    with pytest.raises(RootKeyMissingError, match="create-root"):
        assert Pkcs11RootSigner(token.module, token.label, "absent", token.pin_file).key_id
    with pytest.raises(PinFileError, match="no PIN file"):
        Pkcs11RootSigner(token.module, token.label, token.key_label, tmp_path / "pin")
    open_pin = tmp_path / "open.pin"
    open_pin.write_text("1234\n")
    open_pin.chmod(0o644)
    with pytest.raises(PinFileError, match="chmod 600"):
        Pkcs11RootSigner(token.module, token.label, token.key_label, open_pin)
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("000000\n")
    wrong.chmod(0o600)
    release_tokens()  # the process is logged in by now: log out, so the PIN is asked again
    with pytest.raises(TokenLoginError, match="refused the PIN") as refused:
        assert Pkcs11RootSigner(token.module, token.label, token.key_label, wrong).key_id
    assert "000000" not in str(refused.value)


def test_errors_never_carry_the_pin(token: SoftHsmToken, tmp_path: Path) -> None:
    """No message of a refused login or missing key repeats the PIN."""
    pin = read_pin_file(token.pin_file)
    messages = []
    for label in ("absent", token.key_label):
        try:
            Pkcs11RootSigner(token.module, token.label, label, token.pin_file).sign(b"x")
        except RootKeyMissingError as exc:
            messages.append(str(exc))
    assert messages
    assert all(pin not in m for m in messages)


def test_signers_of_one_token_share_the_process_login(root: SoftHsmToken) -> None:
    """Two signers in one process (PKCS#11 logs in per process) and concurrent threads sign."""
    first, second = root.signer(), root.signer()
    results: list[bytes] = []

    def sign_many(signer: Pkcs11RootSigner) -> None:
        results.extend(signer.sign(b"t") for _ in range(20))

    threads = [threading.Thread(target=sign_many, args=(s,)) for s in (first, second) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80
    for signature in results:
        es256_verify(first.public_key, b"t", signature)
    assert first.signatures + second.signatures == 80


def _sign_in_child(signer: Pkcs11RootSigner, queue: multiprocessing.Queue[object]) -> None:
    try:
        queue.put((os.getpid(), signer.sign(b"child")))
    except Exception as exc:  # reported to the parent
        queue.put(exc)


def test_a_forked_process_opens_its_own_session(root: SoftHsmToken) -> None:
    """A signer used before a fork still signs in the child (re-initialized) and the parent."""
    signer = root.signer()
    signer.sign(b"parent")
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_sign_in_child, args=(signer, queue))
    child.start()
    result = queue.get(timeout=30)
    child.join(timeout=30)
    assert isinstance(result, tuple), result
    pid, signature = result
    assert pid != os.getpid()
    es256_verify(signer.public_key, b"child", signature)
    es256_verify(signer.public_key, b"again", signer.sign(b"again"))


def test_create_root_key_logs_the_kid_only(
    token: SoftHsmToken, capsys: pytest.CaptureFixture[str]
) -> None:
    """The root_key_created event names the kid; the PIN appears nowhere."""
    public = create_root_key(token.module, token.label, token.key_label, token.pin_file)
    captured = capsys.readouterr()
    pin = read_pin_file(token.pin_file)
    assert pin not in captured.out + captured.err
    assert key_id(public).hex()


def test_settings_make_the_token_the_root_signer(root: SoftHsmToken) -> None:
    """CERTFLEET_ROOT_SIGNER=pkcs11 and the token's settings give a signer over its root pair."""
    signer = root_signer_from_settings(root.settings())
    assert isinstance(signer, Pkcs11RootSigner)
    assert signer.key_id == root.signer().key_id
    es256_verify(signer.public_key, b"s", signer.sign(b"s"))


# python-pkcs11 ends the failed object search of the dropped session in a finalizer, which
# reports SessionHandleInvalid once more: expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_the_token_dropped_is_reopened(root: SoftHsmToken) -> None:
    """After the module loses every session (a token or HSM restart), the next signature
    opens and logs in anew."""
    signer = root.signer()
    signer.sign(b"before")
    pkcs11.lib(str(root.module)).reinitialize()  # every session handle of the process is gone

    signature = signer.sign(b"after")

    es256_verify(signer.public_key, b"after", signature)
    assert signer.signatures == 2
