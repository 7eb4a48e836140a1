"""The names a study file may use for built-in datasets and settings, without importing torch.

Reading and checking a study file needs these names but none of the code behind them: the
datasets they name are built by :mod:`admmsearch.data` (which imports torch), which registers
exactly the names listed here (a test checks it). Models are registered next to each network
(:data:`admmsearch.models.MODELS`) and checked when the study's model is built.

>>> DATASET_SHAPES["digits"]
((1, 8, 8), 10)
"""

from __future__ import annotations

import sys

from .settings import INDEX_FORMATS, OPTIMIZERS, SCHEDULES  # defined with the settings

__all__ = [
    "DATASET_NAMES",
    "DATASET_SHAPES",
    "INDEX_FORMATS",
    "OPTIMIZERS",
    "POLICIES",
    "SCHEDULES",
    "known_datasets",
]

#: Sample shape (channels, height, width) and class count of each registered dataset.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}
#: Registered dataset names (see :data:`admmsearch.data.DATASETS`).
DATASET_NAMES = tuple(sorted(DATASET_SHAPES))
#: How ``admmsearch export --policy`` chooses a trial from the front.
POLICIES = ("max-compression", "max-accuracy")


def known_datasets() -> list[str]:
    """The dataset names a study may give: the built-in ones, and any a program registered
    since (registering one imports :mod:`admmsearch.data`; this never does)."""
    return _registered("admmsearch.data", "DATASETS", DATASET_NAMES)


def _registered(module: str, registry: str, builtin: tuple[str, ...]) -> list[str]:
    loaded = sys.modules.get(module)
    if loaded is None or not hasattr(loaded, registry):
        return sorted(builtin)
    return getattr(loaded, registry).names()
