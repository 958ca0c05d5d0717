"""The ports services depend on; adapters implement them, fakes stand in for tests."""

from orchestrator.ports.rollouts import RolloutStore
from orchestrator.ports.stores import (
    BundlePublisher,
    BundleSigner,
    CredentialLibrary,
    ExpiryCounts,
    InventoryStore,
    Metrics,
    PlanStore,
    SequenceStore,
    SessionStore,
    TaskQueue,
    TlsProbe,
    WebhookReceiptStore,
)

__all__ = [
    "BundlePublisher",
    "BundleSigner",
    "CredentialLibrary",
    "ExpiryCounts",
    "InventoryStore",
    "Metrics",
    "PlanStore",
    "RolloutStore",
    "SequenceStore",
    "SessionStore",
    "TaskQueue",
    "TlsProbe",
    "WebhookReceiptStore",
]
