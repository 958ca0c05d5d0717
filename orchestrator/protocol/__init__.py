"""The wire contract between certfleet and devices (what a firmware implements)."""

from orchestrator.domain.credentials import (
    CA_CHAIN_MAX_BYTES,
    SEC_TAG_MAX,
    SEC_TAG_MIN,
    CredentialType,
    sha256_hex,
)
from orchestrator.protocol.limits import (
    CREDS_MAX,
    DETAIL_MAX_BYTES,
    DEVICE_ID_MAX_CHARS,
    MAX_BUNDLE_BYTES,
    PROBE_HOST_MAX_BYTES,
    PROTOCOL_VERSION,
    QUEUED_BUNDLES_MAX,
    RID_MAX_BYTES,
    SIGNERS_MAX,
    STATE_CREDENTIALS_MAX,
    SUPPORTED_VERSIONS,
    TAG_LIST_MAX,
)
from orchestrator.protocol.state import (
    MAX_MESSAGE_BYTES,
    CredentialEntry,
    RejectedMessageError,
    RejectReason,
    StateMessage,
    parse_state,
)
from orchestrator.protocol.topics import SHARE_GROUP, Topics, is_valid_device_id

__all__ = [
    "CA_CHAIN_MAX_BYTES",
    "CREDS_MAX",
    "DETAIL_MAX_BYTES",
    "DEVICE_ID_MAX_CHARS",
    "MAX_BUNDLE_BYTES",
    "MAX_MESSAGE_BYTES",
    "PROBE_HOST_MAX_BYTES",
    "PROTOCOL_VERSION",
    "QUEUED_BUNDLES_MAX",
    "RID_MAX_BYTES",
    "SEC_TAG_MAX",
    "SEC_TAG_MIN",
    "SHARE_GROUP",
    "SIGNERS_MAX",
    "STATE_CREDENTIALS_MAX",
    "SUPPORTED_VERSIONS",
    "TAG_LIST_MAX",
    "CredentialEntry",
    "CredentialType",
    "RejectReason",
    "RejectedMessageError",
    "StateMessage",
    "Topics",
    "is_valid_device_id",
    "parse_state",
    "sha256_hex",
]
