"""What lets many worker processes run one study: a storage-wide lock, heartbeats, lost trials,
the exact budget, storage calls that ride out a short outage, and devices shared between
workers. Implementation
modules are private; this module names what is public."""

from __future__ import annotations

from ._devices import share_device, worker_devices
from ._outages import Retry, transient
from ._workers import (
    COUNTED,
    Claim,
    Heartbeat,
    LostTrials,
    RetryingStorage,
    StorageLock,
    budget_counts,
    claim,
    driver_reason,
    fail_lost_trials,
    make_storage,
    storage_errors,
    worker_info,
)

__all__ = [
    "COUNTED",
    "Claim",
    "Heartbeat",
    "LostTrials",
    "Retry",
    "RetryingStorage",
    "StorageLock",
    "budget_counts",
    "claim",
    "driver_reason",
    "fail_lost_trials",
    "make_storage",
    "share_device",
    "storage_errors",
    "transient",
    "worker_devices",
    "worker_info",
]
