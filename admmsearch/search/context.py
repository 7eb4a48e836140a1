"""What a study's trials share, built once per process by :func:`.study.prepare`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..config import StudyConfig
from ..data import DataSplits
from ..dense import DenseModel
from ..fold import Folding
from ..runtime import StorageLock
from ..tracking import Tracker

__all__ = ["StudyContext"]


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
    folding: Folding = Folding()  # the BatchNorms the pipeline folds (before compressing)
