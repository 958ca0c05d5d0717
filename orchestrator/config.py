"""Settings from the environment (`CERTFLEET_*`), read once per process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiToken", "Role", "Settings", "parse_api_tokens"]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class ApiToken(NamedTuple):
    """One entry of `CERTFLEET_API_TOKENS`: who it is, the secret, what it may do."""

    name: str
    token: str
    role: Role


def parse_api_tokens(text: str) -> list[ApiToken]:
    """`name:token:role,...`; a bare `token` (the older form) is an operator named
    `token-<n>` by its position. Raises ValueError naming the bad entry (never the token)."""
    tokens: list[ApiToken] = []
    for position, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) == 1:
            name, token, role = f"token-{position}", parts[0], "operator"
        elif len(parts) == 3:
            name, token, role = parts
        else:
            raise ValueError(
                f"CERTFLEET_API_TOKENS entry {position} is not `name:token:role` nor a bare token"
            )
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"CERTFLEET_API_TOKENS entry {position}: the name must be 1-64 letters, digits "
                "or ._@- (starting with a letter or digit)"
            )
        if not _TOKEN68.fullmatch(token):
            raise ValueError(
                f"CERTFLEET_API_TOKENS entry {position} ({name}): the token must be token68 "
                "characters (letters, digits, -._~+/ and trailing =)"
            )
        if role not in ROLES:
            raise ValueError(
                f"CERTFLEET_API_TOKENS entry {position} ({name}): role {role!r} is neither "
                "viewer nor operator"
            )
        if any(t.name == name for t in tokens):
            raise ValueError(f"CERTFLEET_API_TOKENS names {name!r} twice")
        tokens.append(ApiToken(name, token, role))
    return tokens


class Settings(BaseSettings):
    """Every setting certfleet reads; the README documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="CERTFLEET_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    """The state store is a Redis Cluster (`redis_url` names any node): docs/operations.md,
    "Redis Cluster and RabbitMQ"."""
    broker_url: str | None = None
    result_backend: str | None = None

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_max_inflight: int = Field(default=20, ge=1, le=65535)
    topic_prefix: str = "certfleet"
    listener_client_id: str | None = None
    listener_batch_size: int = Field(default=500, ge=1)
    clock_skew_seconds: float = Field(default=300, ge=0)
    """How far ahead of the listener's clock a device state's `time` may lie; a later
    one is refused (`clock_skew`), since kept it would make every true state stale."""

    expiry_warning_days: int = Field(default=30, ge=0)
    scan_interval_seconds: float = Field(default=3600.0, gt=0)
    status_list_limit: int = Field(default=10_000, ge=0)
    tick_interval_seconds: float = Field(default=5.0, gt=0)
    evaluate_debounce_seconds: float = Field(default=0.5, ge=0)

    root_signer: Literal["dev-file", "pkcs11"] = "dev-file"
    """Where the root signing key lives: `pkcs11` (a token: HSM, cloud KMS, SoftHSM2),
    or `dev-file` (CERTFLEET_SIGNING_KEY_FILE, for development only)."""
    signing_key_file: Path = Path.home() / ".config" / "certfleet" / "signing-key.pem"
    """The development root key (CERTFLEET_ROOT_SIGNER=dev-file)."""
    pkcs11_module: Path | None = None
    """The token's PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)."""
    pkcs11_token: str | None = None
    """The token's label."""
    pkcs11_key_label: str = "certfleet-root"
    """The label of the root key pair in the token."""
    pkcs11_pin_file: Path | None = None
    """A file holding the token's user PIN (mode 0600; never the key)."""
    delegation_hours: float = Field(default=48, ge=0)
    """Lifetime of a worker's delegation; 0 signs bundles with the root key itself
    (development only). Must exceed CERTFLEET_BUNDLE_TTL_SECONDS by an hour."""
    delegation_ops: str = "stage,commit,rollback,retire,keygen"
    """The ops a worker's delegated key may sign (never trust-signer or revoke)."""
    delegation_kinds: str = "0,1"
    """The credential types (protocol §3) a delegated stage may carry."""
    delegation_rollouts: str = ""
    """Rollout ids a delegation is limited to; empty: any."""
    bundle_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    commit_timeout_seconds: int = Field(default=900, ge=10)
    undo_window_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    """How long a v2 device keeps the undo record of a commit (`undo_by` = commit time +
    this): a rollback within it undoes the commit, after it the commit is permanent."""

    auto_rollout: bool = False
    ca_tags: str = "42,43"
    rollout_waves: str = "1%,10%,50%,100%"
    rollout_bake_seconds: float = Field(default=300, ge=0)
    rollout_max_failure: str = "10%"
    rollout_min_sample: int = Field(default=10, ge=1)
    rollout_device_timeout_seconds: float = Field(default=900, gt=0)
    retire_soak_seconds: float = Field(default=86400, ge=0)
    endpoint_check_seconds: float = Field(default=60, gt=0)

    # -- identity rotation (docs/operations.md, "Rotating device identities") --

    identity_tags: str = "44,45"
    identity_renew_days: int = Field(default=30, ge=0)
    """Beat plans an identity rotation for devices whose client certificate expires
    within this many days."""
    identity_probe: str | None = None
    """host:port of the broker's mutual-TLS device listener, the probe of the identity
    rotations beat plans (unset: beat plans none)."""
    issuer: str = "local"
    """Who signs device certificates: `local` (a CA key file) or `cfssl` (CFSSL's API)."""
    issuer_ca_cert_file: Path | None = None
    issuer_ca_key_file: Path | None = None
    issuer_cert_days: int = Field(default=365, ge=1)
    issuer_url: str | None = None
    issuer_profile: str | None = None
    issuer_timeout_seconds: float = Field(default=10.0, gt=0)
    crl_file: Path | None = None
    """Where certfleet writes the CRL of revoked device certificates (the broker's `crlfile`)."""
    crl_ca_cert_file: Path | None = None
    crl_ca_key_file: Path | None = None
    """The CRL signer, when the issuer cannot make CRLs itself (default: the local issuer's CA)."""
    crl_next_update_seconds: int = Field(default=86400, ge=60)
    crl_reload_pid_file: Path | None = None
    """After writing the CRL, send SIGHUP to the process whose pid this file holds (the broker)."""
    attestation_keys_file: Path | None = None
    """JSON object: device id -> PEM public key of its modem's attestation key."""

    log_level: str = "INFO"
    log_format: str = "auto"

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_one_level(cls, value: str) -> str:
        if not value or any(c in value for c in "/+#$"):
            raise ValueError("topic_prefix must be one non-empty topic level without / + # $")
        return value

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("auto", "json", "console"):
            raise ValueError("log_format must be auto, json or console")
        return value

    @property
    def ca_tag_pair(self) -> tuple[int, int]:
        """The two sec_tags a yearly CA rotation alternates between."""
        tags = [int(t) for t in self.ca_tags.split(",") if t.strip()]
        if len(tags) != 2 or tags[0] == tags[1]:
            raise ValueError("CERTFLEET_CA_TAGS must name two different sec_tags, e.g. 42,43")
        return tags[0], tags[1]

    @field_validator("issuer")
    @classmethod
    def _known_issuer(cls, value: str) -> str:
        if value not in ("local", "cfssl"):
            raise ValueError("issuer must be local or cfssl")
        return value

    @property
    def identity_tag_pair(self) -> tuple[int, int]:
        """The two sec_tags a device's client identity alternates between."""
        tags = [int(t) for t in self.identity_tags.split(",") if t.strip()]
        if len(tags) != 2 or tags[0] == tags[1]:
            raise ValueError("CERTFLEET_IDENTITY_TAGS must name two different sec_tags, e.g. 44,45")
        return tags[0], tags[1]

    @property
    def celery_broker_url(self) -> str:
        """Celery's broker: `CERTFLEET_BROKER_URL`, else the Redis URL."""
        return self.broker_url or self.redis_url

    @property
    def celery_result_backend(self) -> str:
        """Celery's result backend with a Redis broker: `CERTFLEET_RESULT_BACKEND`, else the Redis
        URL (with a RabbitMQ broker `celery_queue.result_backend_url` defaults to `rpc://`)."""
        return self.result_backend or self.redis_url

    @model_validator(mode="after")
    def _delegation_outlives_bundles(self) -> Settings:
        if self.delegation_hours and self.delegation_hours * 3600 < self.bundle_ttl_seconds + 3600:
            raise ValueError(
                "CERTFLEET_DELEGATION_HOURS must exceed CERTFLEET_BUNDLE_TTL_SECONDS by an hour "
                "at least: a bundle never outlives the delegation it is signed under"
            )
        return self

    # -- HTTP API (orchestrator.api) --

    webhook_secrets: str = Field(default="", repr=False)
    api_tokens: str = Field(default="", repr=False)

    @property
    def webhook_secret_list(self) -> list[str]:
        """`CERTFLEET_WEBHOOK_SECRETS`: the `whsec_...` secrets a CA webhook may be signed with."""
        return [s.strip() for s in self.webhook_secrets.split(",") if s.strip()]

    console_session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    """How long a console sign-in lasts (the session cookie's and the session's expiry)."""

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens_parse(cls, value: str) -> str:
        parse_api_tokens(value)
        return value

    @property
    def api_token_list(self) -> list[ApiToken]:
        """`CERTFLEET_API_TOKENS`: the tokens the API and the console accept, with their
        names and roles (`name:token:role,...`; a bare token is an operator)."""
        return parse_api_tokens(self.api_tokens)
