"""The sections of a study file that say what is trained and how: model, dataset, dense
model and the pipeline's stages, each convertible to the engine's settings."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

from pydantic import Strict, field_validator, model_validator

from ..admm import RhoSchedule
from ..errors import AdmmSearchWarning
from ..names import known_datasets, known_models
from ..pipeline import AdmmSettings, QuantRetrainSettings
from ..train import TrainSettings
from .values import (
    Count,
    Fraction,
    FrozenModel,
    IndexFormat,
    NonNegative,
    Optimizer,
    Positive,
    PositiveInt,
    Schedule,
    bound,
)

__all__ = [
    "LEGACY_RHO",
    "AdmmConfig",
    "DatasetConfig",
    "DenseConfig",
    "LegacyScheduleWarning",
    "ModelConfig",
    "PipelineConfig",
    "QuantRetrainConfig",
    "RetrainConfig",
    "RhoConfig",
    "TrainConfig",
    "legacy_rho",
]


class TrainConfig(FrozenModel):
    """One training stage; the fields and defaults of :class:`~admmsearch.train.TrainSettings`."""

    epochs: Count = TrainSettings.epochs
    lr: Positive = TrainSettings.lr
    optimizer: Optimizer = TrainSettings.optimizer
    momentum: NonNegative = TrainSettings.momentum
    weight_decay: NonNegative = TrainSettings.weight_decay
    schedule: Schedule = TrainSettings.schedule
    batch_size: PositiveInt = TrainSettings.batch_size
    keep_best: Annotated[bool, Strict()] = TrainSettings.keep_best

    def settings(self) -> TrainSettings:
        return TrainSettings(**self.model_dump())


class RetrainConfig(TrainConfig):
    """A retraining stage: as :class:`TrainConfig`, but by default it ends with the weights of
    its epoch of best validation accuracy (``keep_best: true``), so retraining does no harm."""

    keep_best: Annotated[bool, Strict()] = True


class LegacyScheduleWarning(AdmmSearchWarning):
    """A study file's ADMM stage uses the old rho keys; it is read in the new ones."""


#: Keys of the rho schedule before it was described over the stage, and what replaced them.
LEGACY_RHO = {
    "initial": "rho.start",
    "multiplier": "rho.end",
    "every": "rho.updates",
    "maximum": "rho.end",
}


def legacy_rho(rho: dict[str, Any], epochs: Any) -> dict[str, Any]:
    """A schedule written with the old keys (``rho = min(maximum, initial * multiplier **
    (updates // every))``, one Z/U update at the end of each epoch), as the new keys, with a
    :class:`LegacyScheduleWarning` saying so: ``start = initial``, ``updates = epochs`` (one
    update per epoch, as before) and ``end`` the rho of the last epoch. With ``every: 1`` and
    ``maximum`` not reached the two schedules are the same.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     legacy_rho({"initial": 0.01, "multiplier": 2.0, "every": 1, "maximum": 1.0}, 4)
    {'start': 0.01, 'end': 0.08, 'updates': 4}

    Raises:
        ValueError: old and new keys are mixed, or a value is not a number.
    """
    mixed = [k for k in rho if k not in LEGACY_RHO]
    values = {"initial": 1e-3, "multiplier": 1.5, "every": 1, "maximum": 1.0, **rho}
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values())
    if mixed or not numbers or not isinstance(epochs, int) or isinstance(epochs, bool):
        raise ValueError(
            "rho: initial, multiplier, every and maximum (the old schedule) cannot be mixed "
            "with start, end and updates; write {start, end, updates}"
        )
    updates = max(1, epochs)
    steps = (updates - 1) // max(1, int(values["every"]))
    end = min(values["maximum"], values["initial"] * values["multiplier"] ** steps)
    new = {"start": values["initial"], "end": end, "updates": updates}
    warnings.warn(
        f"rho: {dict(rho)} uses the old schedule keys; read as {new} (one Z/U update per "
        "epoch, as before); write start, end and updates instead",
        LegacyScheduleWarning,
        stacklevel=2,
    )
    return new


class RhoConfig(FrozenModel):
    """rho over an ADMM stage: ``start`` to ``end`` (geometric) across ``updates`` Z/U updates
    spread evenly over the stage's optimizer steps; see :class:`~admmsearch.admm.RhoSchedule`."""

    start: Positive = RhoSchedule.start
    end: Positive = RhoSchedule.end
    updates: PositiveInt = RhoSchedule.updates

    @model_validator(mode="before")
    @classmethod
    def _no_legacy_keys(cls, data: Any) -> Any:
        old = [k for k in LEGACY_RHO if isinstance(data, dict) and k in data]
        if old:
            raise ValueError(
                f"{', '.join(old)}: replaced by start, end and updates (rho goes from start to "
                "end over the stage's updates, spread evenly over its steps); e.g. "
                "{start: 5.0e-3, end: 1.0, updates: 20}"
            )
        return data

    def settings(self) -> RhoSchedule:
        return RhoSchedule(**self.model_dump())


class AdmmConfig(FrozenModel):
    """An ADMM stage: its training and its rho schedule (which also says how many Z/U
    updates the stage makes)."""

    train: TrainConfig = {}
    rho: RhoConfig = {}

    @model_validator(mode="before")
    @classmethod
    def _no_update_every(cls, data: Any) -> Any:
        if isinstance(data, dict) and "update_every" in data:
            raise ValueError(
                "update_every: replaced by rho.updates, the number of Z/U updates over the "
                "whole stage (spread evenly over its optimizer steps)"
            )
        rho = data.get("rho") if isinstance(data, dict) else None
        if isinstance(rho, dict) and any(k in rho for k in LEGACY_RHO):
            train = data.get("train") if isinstance(data.get("train"), dict) else {}
            return {**data, "rho": legacy_rho(rho, train.get("epochs", TrainSettings.epochs))}
        return data

    def settings(self) -> AdmmSettings:
        return AdmmSettings(self.train.settings(), self.rho.settings())


class QuantRetrainConfig(FrozenModel):
    """Iterative hard quantization: each round freezes a growing share, then retrains the rest."""

    train: RetrainConfig = {"epochs": 1}
    shares: tuple[Fraction, ...] = (0.5, 0.75, 0.9, 1.0)

    @field_validator("shares")
    @classmethod
    def _rising_to_one(cls, shares: tuple[float, ...]) -> tuple[float, ...]:
        rising = all(a < b for a, b in zip(shares, shares[1:], strict=False))
        if not shares or shares[-1] != 1.0 or not rising:
            raise ValueError("must rise strictly and end at 1.0")
        return shares

    def settings(self) -> QuantRetrainSettings:
        return QuantRetrainSettings(self.train.settings(), self.shares)


class PipelineConfig(FrozenModel):
    """Every trial's stages before the searched knobs are applied; null skips a stage.

    ``fold_batchnorm`` folds each Conv -> BatchNorm pair of the dense model before compression,
    so what is compressed, accounted and packed is the deployed network.
    """

    admm_prune: AdmmConfig | None = {}
    retrain: RetrainConfig | None = {}
    admm_quantize: AdmmConfig | None = {}
    quant_retrain: QuantRetrainConfig | None = {}
    progressive_steps: PositiveInt = 1
    index_format: IndexFormat = "gap"
    fold_batchnorm: bool = True


class ModelConfig(FrozenModel):
    """A registered model name, ``torchvision:<name>`` or ``package.module:function``."""

    name: Annotated[str, Strict()]
    kwargs: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if ":" not in name and name not in (known := known_models()):
            raise ValueError(
                f"unknown model; known: {', '.join(known)}, "
                "torchvision:<name> or package.module:function"
            )
        return name


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
    train: TrainConfig = {}
