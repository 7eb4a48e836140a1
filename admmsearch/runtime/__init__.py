"""What lets many worker processes run one study: a storage-wide lock, heartbeats, lost trials,
the exact budget, storage calls that ride out a short outage, and devices shared between
workers. Implementation
modules are private; this module names what is public."""

from __future__ import annotations

from ._devices import share_device, worker_devices
from ._outages import Retry, transient
from ._workers import (
    COUNTED,
    WAIT,
    Claim,
    Heartbeat,
    LostTrials,
    RetryingStorage,
    StorageLock,
    budget_counts,
    carried,
    claim,
    counted_trials,
    driver_reason,
    fail_lost_trials,
    make_storage,
    storage_errors,
    trial_budget,
    worker_info,
)

__all__ = [
    "COUNTED",
    "WAIT",
    "Claim",
    "Heartbeat",
    "LostTrials",
    "Retry",
    "RetryingStorage",
    "StorageLock",
    "budget_counts",
    "carried",
    "claim",
    "counted_trials",
    "driver_reason",
    "fail_lost_trials",
    "make_storage",
    "share_device",
    "storage_errors",
    "transient",
    "trial_budget",
    "worker_devices",
    "worker_info",
]
