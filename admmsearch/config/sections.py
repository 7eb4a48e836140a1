"""The sections of a study file that say what is trained and how: model, dataset, dense
model and the pipeline's stages, each convertible to the engine's settings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Strict, field_validator, model_validator

from ..admm import RhoSchedule
from ..data import DATASETS
from ..models import MODELS
from ..pipeline import AdmmSettings, QuantRetrainSettings
from ..train import TrainSettings
from .values import (
    Count,
    Fraction,
    IndexFormat,
    Multiplier,
    NonNegative,
    Optimizer,
    Positive,
    PositiveInt,
    Schedule,
    _bound,
    _Model,
)


class TrainConfig(_Model):
    """One training stage; the fields and defaults of :class:`~admmsearch.train.TrainSettings`."""

    epochs: Count = TrainSettings.epochs
    lr: Positive = TrainSettings.lr
    optimizer: Optimizer = TrainSettings.optimizer
    momentum: NonNegative = TrainSettings.momentum
    weight_decay: NonNegative = TrainSettings.weight_decay
    schedule: Schedule = TrainSettings.schedule
    batch_size: PositiveInt = TrainSettings.batch_size

    def settings(self) -> TrainSettings:
        return TrainSettings(**self.model_dump())


class RhoConfig(_Model):
    """ADMM penalty: rho = min(maximum, initial * multiplier ** (updates // every))."""

    initial: Positive = RhoSchedule.initial
    multiplier: Multiplier = RhoSchedule.multiplier
    every: PositiveInt = RhoSchedule.every
    maximum: Positive = RhoSchedule.maximum

    @model_validator(mode="after")
    def _capped_above_start(self) -> RhoConfig:
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum}) must be >= initial ({self.initial})")
        return self

    def settings(self) -> RhoSchedule:
        return RhoSchedule(**self.model_dump())


class AdmmConfig(_Model):
    """An ADMM stage; ``update_every``: optimizer steps between Z/U updates (None: each epoch)."""

    train: TrainConfig = {}
    rho: RhoConfig = {}
    update_every: PositiveInt | None = None

    def settings(self) -> AdmmSettings:
        return AdmmSettings(self.train.settings(), self.rho.settings(), self.update_every)


class QuantRetrainConfig(_Model):
    """Iterative hard quantization: each round freezes a growing share, then retrains the rest."""

    train: TrainConfig = {"epochs": 1}
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


class PipelineConfig(_Model):
    """Every trial's stages before the searched knobs are applied; null skips a stage.

    ``fold_batchnorm`` folds each Conv -> BatchNorm pair of the dense model before compression,
    so what is compressed, accounted and packed is the deployed network.
    """

    admm_prune: AdmmConfig | None = {}
    retrain: TrainConfig | None = {}
    admm_quantize: AdmmConfig | None = {}
    quant_retrain: QuantRetrainConfig | None = {}
    progressive_steps: PositiveInt = 1
    index_format: IndexFormat = "gap"
    fold_batchnorm: bool = True


class ModelConfig(_Model):
    """A registered model name, ``torchvision:<name>`` or ``package.module:function``."""

    name: Annotated[str, Strict()]
    kwargs: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if ":" not in name and name not in MODELS:
            raise ValueError(
                f"unknown model; known: {', '.join(MODELS.names())}, "
                "torchvision:<name> or package.module:function"
            )
        return name


class DatasetConfig(_Model):
    """A registered dataset, a ``.npz`` file or ``package.module:function``; see load_dataset.

    ``normalise`` (default true) standardises the arrays with the training split's per-channel
    mean and std, which travel with every result; false takes them as given.
    """

    name: Annotated[str, Strict()]
    val_fraction: Annotated[float, Strict(), _bound(0, 1, open_high=True)] = 0.1
    limit_train: PositiveInt | None = None
    root: str | None = None
    download: bool = True
    num_classes: PositiveInt | None = None  # None: the largest label + 1
    normalise: bool = True

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if ":" not in name and not name.endswith(".npz") and name not in DATASETS:
            raise ValueError(
                f"unknown dataset; known: {', '.join(DATASETS.names())}, "
                "a .npz file or package.module:function"
            )
        return name


class DenseConfig(_Model):
    """The dense model every trial starts from: a checkpoint, else trained once and cached."""

    checkpoint: str | None = None
    train: TrainConfig = {}
