"""What lets many worker processes run one study: where its stores are, a storage-wide lock,
heartbeats, lost trials, the exact budget, and devices shared between workers. Implementation
modules are private; this module names what is public."""

from __future__ import annotations

from ._devices import share_device, worker_devices
from ._locations import (
    DEFAULT_STORAGE_FILE,
    resolve_cache_dir,
    resolve_storage,
    resolve_tracking,
)
from ._workers import (
    COUNTED,
    Claim,
    Heartbeat,
    LostTrials,
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
    "DEFAULT_STORAGE_FILE",
    "Claim",
    "Heartbeat",
    "LostTrials",
    "StorageLock",
    "budget_counts",
    "claim",
    "driver_reason",
    "fail_lost_trials",
    "make_storage",
    "resolve_cache_dir",
    "resolve_storage",
    "resolve_tracking",
    "share_device",
    "storage_errors",
    "worker_devices",
    "worker_info",
]
