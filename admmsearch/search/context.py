"""What a study's trials share, built once per process by :func:`.study.prepare`, and what a
study reports as it goes, for a person to follow it (:class:`StudyEvents`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from ..config import StudyConfig
from ..data import DataSplits
from ..dense import DenseModel, DenseProgress
from ..fold import Folding
from ..runtime import StorageLock
from ..tracking import Tracker

__all__ = ["StudyContext", "StudyEvents"]


@dataclass(frozen=True)
class StudyEvents:
    """What a study reports as it goes, each optional (the command line shows them).

    Attributes:
        dense_epoch: after each epoch of the dense training: epoch (1-based), epochs, mean
            loss, validation accuracy.
        sensitivity_unit: after each unit of the sensitivity pass: unit, units measured,
            units in all.
        trial_epoch: after each epoch inside a trial: stage, epoch (0-based), mean loss.
        trial_done: a trial finished (completed, failed or pruned), in any worker.
    """

    dense_epoch: DenseProgress | None = None
    sensitivity_unit: Callable[[str, int, int], None] | None = None
    trial_epoch: Callable[[str, int, float], None] | None = None
    trial_done: Callable[[FrozenTrial], None] | None = None


@dataclass
class StudyContext:
    """Everything a study's trials share, built once per process."""

    config: StudyConfig
    layers: list[str]
    study: optuna.Study
    storage: str  # the URL
    tracker: Tracker
    parent_run: str
    data: DataSplits
    dense: DenseModel
    workdir: Path
    cache_dir: Path
    lock: StorageLock
    rdb: optuna.storages.RDBStorage  # the storage object: heartbeats, lost trials
    uncompressed: dict[str, str] = field(default_factory=dict)  # layer -> type, stored raw
    events: StudyEvents = field(default_factory=StudyEvents)
    folding: Folding = Folding()  # the BatchNorms the pipeline folds (before compressing)
