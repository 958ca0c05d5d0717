"""The root signer: a P-256 key pair made in a PKCS#11 token, whose private half never leaves it.

The token is reached through its PKCS#11 module (an HSM's client library, a cloud KMS's
PKCS#11 library, p11-kit's remote client, or SoftHSM2 in labs and tests) with python-pkcs11.
The pair is found by its label (CKA_LABEL, `CERTFLEET_PKCS11_KEY_LABEL`); the user PIN is read
from a file of mode 0600 and never logged.

PKCS#11 logs in per process, not per session, and is not fork-safe. So each process keeps one
logged-in session per (module, token), shared by every signer of that token and guarded by a
lock, opened on first use; a process that finds itself forked (another pid) initializes the
module anew and opens its own session. A session the token dropped (restart, network HSM
reconnect) is reopened once per operation. The private key object found by a session's first
signature is kept for the next ones, once that signature verified with the public key.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    DeviceRemoved,
    KeyHandleInvalid,
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    ObjectHandleInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    TokenWriteProtected,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.types import SignMixin
from pkcs11.util.ec import encode_named_curve_parameters

from orchestrator.domain.errors import SigningKeyError
from orchestrator.logs import get_logger
from orchestrator.protocol.cose import CoseError, es256_verify, key_id

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Library  # the loaded module's type (its stub)

__all__ = [
    "P256_EC_PARAMS",
    "PinFileError",
    "Pkcs11ModuleError",
    "Pkcs11RootSigner",
    "RootKeyExistsError",
    "RootKeyMissingError",
    "TokenError",
    "TokenLoginError",
    "TokenNotFoundError",
    "create_root_key",
    "read_pin_file",
    "release_tokens",
]

log = get_logger(__name__)

P256_EC_PARAMS: Final = encode_named_curve_parameters("secp256r1")
"""DER of the named curve P-256 (CKA_EC_PARAMS)."""

_T = TypeVar("_T")


class Pkcs11ModuleError(SigningKeyError):
    """The PKCS#11 module is not set, missing, or not a PKCS#11 library."""


class TokenNotFoundError(SigningKeyError):
    """No token with the configured label is present in the module's slots."""


class TokenLoginError(SigningKeyError):
    """The token refused the PIN (wrong, locked, expired or never set)."""


class PinFileError(SigningKeyError):
    """The PIN file is missing, empty, or readable by others."""


class RootKeyMissingError(SigningKeyError):
    """The token holds no P-256 key pair with the configured label."""


class RootKeyExistsError(SigningKeyError):
    """`create_root_key` found a key pair with that label already, and was not forced."""


class TokenError(SigningKeyError):
    """The token failed an operation (the PKCS#11 error is named, never a key or the PIN)."""


def read_pin_file(path: Path) -> str:
    """The user PIN from `path` (its first line), which must be of mode 0600 or stricter."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PinFileError(
            f"no PIN file at {path}; write the token's user PIN into it (mode 0600) "
            "or point CERTFLEET_PKCS11_PIN_FILE at yours"
        ) from None
    if not stat.S_ISREG(mode):
        raise PinFileError(f"{path} is not a file; CERTFLEET_PKCS11_PIN_FILE names the PIN file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PinFileError(
            f"{path} is open to others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PinFileError(f"cannot read the PIN file {path}: {type(exc).__name__}") from None
    lines = text.splitlines()
    pin = lines[0].strip() if lines else ""
    if not pin:
        raise PinFileError(f"the PIN file {path} is empty; write the token's user PIN into it")
    return pin


def _check_module(module: Path) -> None:
    if not module.is_file():
        raise Pkcs11ModuleError(
            f"no PKCS#11 module at {module}; install the token's library (SoftHSM2: "
            "/usr/lib/softhsm/libsofthsm2.so) or point CERTFLEET_PKCS11_MODULE at it"
        )


# -- one logged-in session per (module, token) per process --------------------------------

_STALE: Final = (
    SessionHandleInvalid,
    SessionClosed,
    DeviceRemoved,
    TokenNotPresent,
    UserNotLoggedIn,
)
"""Errors after which the session is gone but the token may be back: reopen and retry once."""


@dataclass
class _TokenSession:
    session: pkcs11.Session
    lock: threading.RLock = field(default_factory=threading.RLock)
    private_keys: dict[str, SignMixin] = field(default_factory=dict)
    """Private key objects found in this session, by label (a search costs more than a
    signature); each proved to match its public key by its first signature."""


_registry_lock = threading.Lock()
_sessions: dict[tuple[str, str], _TokenSession] = {}
_sessions_pid = os.getpid()
_initialized_in: dict[str, int] = {}
"""Module path -> the pid that initialized it (C_Initialize) last."""


def _forget_parent_sessions() -> None:
    """In a forked child: the parent's sessions are not ours, nor is a lock it may hold."""
    global _registry_lock, _sessions_pid  # noqa: PLW0603 -- process-wide state, per process
    _registry_lock = threading.Lock()
    _sessions.clear()
    _sessions_pid = os.getpid()


os.register_at_fork(after_in_child=_forget_parent_sessions)


def _library(module: Path) -> Pkcs11Library:
    _check_module(module)
    so = str(module)
    try:
        lib = pkcs11.lib(so)
    except PKCS11Error as exc:
        raise Pkcs11ModuleError(
            f"{module} could not be loaded as a PKCS#11 module ({type(exc).__name__}); "
            "check CERTFLEET_PKCS11_MODULE"
        ) from None
    pid = os.getpid()
    if _initialized_in.setdefault(so, pid) != pid:
        # A forked child: the parent's C_Initialize state is not ours (PKCS#11 §5.1.5).
        with suppress(PKCS11Error):
            lib.finalize()
        lib.initialize()
        _initialized_in[so] = pid
    return lib


def _open_session(module: Path, token_label: str, pin_file: Path) -> pkcs11.Session:
    try:
        return _open_logged_in(module, token_label, pin_file)
    except PKCS11Error as exc:  # anything the module raised beyond what is named below
        raise TokenError(
            f"token {token_label!r} could not be opened ({type(exc).__name__}); is the "
            "token (or the HSM it is on) reachable?"
        ) from None


def _open_logged_in(module: Path, token_label: str, pin_file: Path) -> pkcs11.Session:
    lib = _library(module)
    try:
        token = lib.get_token(token_label=token_label)
    except NoSuchToken:
        labels = sorted(t.label for t in lib.get_tokens())
        raise TokenNotFoundError(
            f"no token labelled {token_label!r} in {module} (tokens there: "
            f"{', '.join(map(repr, labels)) or 'none'}); initialize one or set "
            "CERTFLEET_PKCS11_TOKEN"
        ) from None
    except MultipleTokensReturned:
        raise TokenNotFoundError(
            f"more than one token is labelled {token_label!r} in {module}; give each its own label"
        ) from None
    pin = read_pin_file(pin_file)
    try:
        return _login(token, pin)
    except (PinIncorrect, PinInvalid, PinLenRange):
        raise TokenLoginError(
            f"token {token_label!r} refused the PIN in {pin_file}; put the user PIN there"
        ) from None
    except (PinLocked, PinExpired, UserPinNotInitialized) as exc:
        raise TokenLoginError(
            f"token {token_label!r} cannot log in ({type(exc).__name__}): its user PIN is locked, "
            "expired or not set; its security officer must reset it"
        ) from None
    except PKCS11Error as exc:
        raise TokenError(
            f"token {token_label!r} refused a session ({type(exc).__name__})"
        ) from None


def _login(token: pkcs11.Token, pin: str) -> pkcs11.Session:
    try:
        return token.open(user_pin=pin, rw=True)
    except UserAlreadyLoggedIn:
        # Logged in already by this process (another user of the module): sessions share it.
        return token.open(rw=True)
    except TokenWriteProtected:
        try:
            return token.open(user_pin=pin)
        except UserAlreadyLoggedIn:
            return token.open()


def _token_session(module: Path, token_label: str, pin_file: Path) -> _TokenSession:
    global _sessions_pid  # noqa: PLW0603 -- the process-wide session table follows the pid
    key = (str(module), token_label)
    with _registry_lock:
        if _sessions_pid != os.getpid():
            _sessions.clear()  # the parent's sessions: not ours to use or close
            _sessions_pid = os.getpid()
        existing = _sessions.get(key)
        if existing is None:
            existing = _sessions[key] = _TokenSession(_open_session(module, token_label, pin_file))
        return existing


def _drop_session(module: Path, token_label: str, stale: _TokenSession) -> None:
    with _registry_lock:
        if _sessions.get((str(module), token_label)) is stale:
            del _sessions[(str(module), token_label)]


def release_tokens() -> None:
    """Log out of and close this process's token sessions and finalize the modules it loaded,
    so the next use opens everything afresh (and SoftHSM2 re-reads SOFTHSM2_CONF)."""
    global _sessions_pid  # noqa: PLW0603 -- see _token_session
    with _registry_lock:
        if _sessions_pid == os.getpid():
            for held in _sessions.values():
                with held.lock, suppress(PKCS11Error):
                    held.session.close()
        _sessions.clear()
        _sessions_pid = os.getpid()
        for so in list(_initialized_in):
            with suppress(PKCS11Error):
                pkcs11.lib(so).finalize()
            del _initialized_in[so]


class _Token:
    """The (module, token, PIN file) triple and its process-wide session."""

    def __init__(self, module: Path, token_label: str, pin_file: Path) -> None:
        self.module = module
        self.label = token_label
        self.pin_file = pin_file

    def run(self, what: str, operation: Callable[[_TokenSession], _T]) -> _T:
        """`operation(held session)` under the session's lock; reopened and retried once if the
        token dropped the session. PKCS#11 failures become TokenError naming `what`."""
        for attempt in (1, 2):
            held = _token_session(self.module, self.label, self.pin_file)
            with held.lock:
                try:
                    return operation(held)
                except _STALE as exc:
                    _drop_session(self.module, self.label, held)
                    if attempt == 2:
                        raise TokenError(
                            f"token {self.label!r} dropped the session during {what} "
                            f"({type(exc).__name__}); is the token still there?"
                        ) from None
                except PKCS11Error as exc:
                    raise TokenError(
                        f"token {self.label!r} failed {what} ({type(exc).__name__})"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _find_pair(
    session: pkcs11.Session, key_label: str
) -> tuple[pkcs11.PublicKey | None, pkcs11.PrivateKey | None]:
    found: list[pkcs11.Key | None] = []
    for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
        try:
            found.append(session.get_key(object_class=object_class, label=key_label))
        except NoSuchKey:
            found.append(None)
        except MultipleObjectsReturned:
            raise RootKeyMissingError(
                f"the token holds more than one {object_class.name.lower()} labelled "
                f"{key_label!r}; certfleet needs exactly one pair under CERTFLEET_PKCS11_KEY_LABEL"
            ) from None
    return found[0], found[1]  # type: ignore[return-value]  # classes follow the queries


def _public_key_of(key: pkcs11.PublicKey, key_label: str) -> ec.EllipticCurvePublicKey:
    if key.key_type != KeyType.EC or key[Attribute.EC_PARAMS] != P256_EC_PARAMS:
        raise RootKeyMissingError(f"the key labelled {key_label!r} is not a P-256 (ES256) key")
    point_der: bytes = key[Attribute.EC_POINT]
    # CKA_EC_POINT is the DER OCTET STRING of the uncompressed point (04 41 04 x y).
    point = point_der[2:] if point_der[:2] == b"\x04\x41" else point_der
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise RootKeyMissingError(
            f"the public key labelled {key_label!r} holds no valid P-256 point"
        ) from None


class Pkcs11RootSigner:
    """The root key in a PKCS#11 token: ES256 signatures (SHA-256, then CKM_ECDSA in the
    token); the private half is never read, and nothing is touched before the first use."""

    def __init__(self, module: Path, token_label: str, key_label: str, pin_file: Path) -> None:
        _check_module(module)
        read_pin_file(pin_file)  # refuse a missing or open PIN file at once
        self._token = _Token(module, token_label, pin_file)
        self._key_label = key_label
        self._public: ec.EllipticCurvePublicKey | None = None
        self._kid: bytes | None = None
        self._count_lock = threading.Lock()
        self._signatures = 0

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, read from the token's public key object on first use."""
        if self._public is None:
            self._public = self._token.run("reading the root public key", self._read_public)
            self._kid = key_id(self._public)
        return self._public

    @property
    def key_id(self) -> bytes:
        """Key id of the public half (the COSE kid devices trust)."""
        if self._kid is None:
            self._kid = key_id(self.public_key)
        return self._kid

    @property
    def signatures(self) -> int:
        """How many signatures this signer has made in this process."""
        return self._signatures

    def delegation_for(self, expires_at: int) -> bytes | None:
        """None: the root signs directly, under no delegation."""
        return None

    def sign(self, to_be_signed: bytes) -> bytes:
        """ES256 over `to_be_signed`: the raw 64-byte r||s, made by the token."""
        public = self.public_key
        signature = self._token.run(
            "signing", lambda held: self._sign_in(held, to_be_signed, public)
        )
        with self._count_lock:
            self._signatures += 1
        return signature

    def _read_public(self, held: _TokenSession) -> ec.EllipticCurvePublicKey:
        public, private = _find_pair(held.session, self._key_label)
        if public is None or private is None:
            raise RootKeyMissingError(
                f"token {self._token.label!r} holds no key pair labelled {self._key_label!r}; "
                "create it with `certfleet keys create-root` or set CERTFLEET_PKCS11_KEY_LABEL"
            )
        return _public_key_of(public, self._key_label)

    def _private_key(self, session: pkcs11.Session) -> SignMixin:
        try:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self._key_label)
        except NoSuchKey:
            raise RootKeyMissingError(
                f"token {self._token.label!r} holds no private key labelled {self._key_label!r}"
            ) from None
        if not isinstance(private, SignMixin):
            raise RootKeyMissingError(
                f"the private key labelled {self._key_label!r} may not sign (CKA_SIGN false)"
            )
        return private

    def _sign_in(
        self, held: _TokenSession, to_be_signed: bytes, public: ec.EllipticCurvePublicKey
    ) -> bytes:
        digest = hashlib.sha256(to_be_signed).digest()
        private = held.private_keys.get(self._key_label)
        if private is not None:
            try:
                return self._checked(private.sign(digest, mechanism=Mechanism.ECDSA))
            except (KeyHandleInvalid, ObjectHandleInvalid):
                del held.private_keys[self._key_label]  # destroyed since: look it up again
        private = self._private_key(held.session)
        signature = self._checked(private.sign(digest, mechanism=Mechanism.ECDSA))
        try:
            es256_verify(public, to_be_signed, signature)
        except CoseError:
            now_public = key_id(self._read_public(held))
            if now_public != key_id(public):
                raise RootKeyMissingError(
                    f"the root key labelled {self._key_label!r} was replaced in the token "
                    f"(key id {key_id(public).hex()} is now {now_public.hex()}); restart the "
                    "processes that sign with it"
                ) from None
            raise RootKeyMissingError(
                f"the private key labelled {self._key_label!r} does not match its public key; "
                "the token holds a broken pair under that label"
            ) from None
        held.private_keys[self._key_label] = private
        return signature

    def _checked(self, signature: bytes) -> bytes:
        if len(signature) != 64:
            raise TokenError(f"token {self._token.label!r} made a {len(signature)}-byte signature")
        return bytes(signature)

    def __repr__(self) -> str:
        kid = self._kid.hex() if self._kid else "not read yet"
        return f"Pkcs11RootSigner(token={self._token.label!r}, key={self._key_label!r}, kid={kid})"


def create_root_key(
    module: Path, token_label: str, key_label: str, pin_file: Path, *, force: bool = False
) -> ec.EllipticCurvePublicKey:
    """Make a P-256 pair in the token: private half sensitive, never extractable, for signing
    only; both halves labelled `key_label`, CKA_ID = the key id. An existing pair under that
    label is refused unless `force` (then destroyed first)."""
    token = _Token(module, token_label, pin_file)

    def make(held: _TokenSession) -> ec.EllipticCurvePublicKey:
        session = held.session
        public, private = _find_pair(session, key_label)
        if (public is not None or private is not None) and not force:
            raise RootKeyExistsError(
                f"token {token_label!r} already holds a key labelled {key_label!r}; pass --force "
                "to destroy it and make a new one (devices trusting it must get trust-signer first)"
            )
        held.private_keys.pop(key_label, None)
        for old in (public, private):
            if old is not None:
                old.destroy()
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: P256_EC_PARAMS}, local=True
        )
        new_public, new_private = params.generate_keypair(
            store=True,
            label=key_label,
            public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
            private_template={
                Attribute.SIGN: True,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DECRYPT: False,
                Attribute.DERIVE: False,
                Attribute.UNWRAP: False,
            },
        )
        public_key = _public_key_of(new_public, key_label)
        kid = key_id(public_key)
        with suppress(PKCS11Error):  # CKA_ID helps other tools find the pair; not essential
            new_public[Attribute.ID] = kid
            new_private[Attribute.ID] = kid
        return public_key

    public_key = token.run("making the root key", make)
    log.info(
        "root_key_created",
        kid=key_id(public_key).hex(),
        token=token_label,
        key_label=key_label,
        replaced=force,
    )
    return public_key
