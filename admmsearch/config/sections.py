"""The sections of a study file that say what is trained: model, dataset and dense model.

The pipeline's stages and the training hooks are the engine's own types
(:mod:`admmsearch.settings`), used by :class:`~admmsearch.config.schema.StudyConfig` directly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Strict, StringConstraints, field_validator

from ..names import known_datasets
from ..settings import TrainSettings
from ..validation import FrozenModel, PositiveInt, bound

__all__ = ["DatasetConfig", "DenseConfig", "ModelConfig"]


class ModelConfig(FrozenModel):
    """A registered model name, ``torchvision:<name>`` or ``package.module:function``; the
    name is checked against the registry when the model is built
    (:func:`admmsearch.config.resolve_layers`), where the networks register themselves."""

    name: Annotated[str, Strict(), StringConstraints(min_length=1)]
    kwargs: dict[str, Any] = {}


class DatasetConfig(FrozenModel):
    """A registered dataset, a ``.npz`` file or ``package.module:function``; see load_dataset.

    ``normalise`` (default true) standardises the arrays with the training split's per-channel
    mean and std, which travel with every result; false takes them as given.
    """

    name: Annotated[str, Strict()]
    val_fraction: Annotated[float, Strict(), bound(0, 1, open_high=True)] = 0.1
    limit_train: PositiveInt | None = None
    root: str | None = None
    download: bool = True
    num_classes: PositiveInt | None = None  # None: the largest label + 1
    normalise: bool = True

    def load_options(self) -> dict[str, Any]:
        """Every keyword argument of :func:`admmsearch.data.load_dataset` but ``name`` and
        ``seed``, as this section sets it."""
        return self.model_dump(exclude={"name"})

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        known = known_datasets()
        if ":" not in name and not name.endswith(".npz") and name not in known:
            raise ValueError(
                f"unknown dataset; known: {', '.join(known)}, "
                "a .npz file or package.module:function"
            )
        return name


class DenseConfig(FrozenModel):
    """The dense model every trial starts from: a checkpoint, else trained once and cached."""

    checkpoint: str | None = None
    train: TrainSettings = TrainSettings()
