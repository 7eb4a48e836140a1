"""The engine's settings, each defined once: how a stage trains, the rho schedule, an ADMM stage,
quantized retraining, the compression stages and the whole pipeline; and the user's training
hooks by name.

These are the types the pipeline runs on and the types a study file's ``dense.train``,
``pipeline:`` and ``training:`` sections validate into, so the two cannot drift. They are
frozen pydantic models (unknown fields refused; a bad value raises
:class:`~admmsearch.errors.ConfigError` naming the field) and import no torch.

Example:
    >>> s = CompressionSettings.model_validate({"retrain": {"epochs": 2}, "admm_quantize": None})
    >>> s.retrain.epochs, s.retrain.keep_best, s.admm_quantize
    (2, True, None)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Strict, field_validator, model_validator

from .errors import AdmmSearchWarning
from .validation import (
    Count,
    Fraction,
    FrozenModel,
    NonNegative,
    Positive,
    PositiveInt,
    StrictBool,
    matches,
    one_of,
)

__all__ = [
    "INDEX_FORMATS",
    "LEGACY_RHO",
    "OPTIMIZERS",
    "SCHEDULES",
    "AdmmSettings",
    "CompressionSettings",
    "LegacyScheduleWarning",
    "PipelineSettings",
    "QuantRetrainSettings",
    "RhoSchedule",
    "TrainSettings",
    "TrainingHooks",
    "legacy_rho",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
#: Sparse index formats of the storage accounting (see :mod:`admmsearch.packed._accounting`).
INDEX_FORMATS = ("gap", "csr")

Optimizer = Annotated[str, Strict(), one_of(OPTIMIZERS)]
Schedule = Annotated[str, Strict(), one_of(SCHEDULES)]
IndexFormat = Annotated[str, Strict(), one_of(INDEX_FORMATS)]
HookName = Annotated[
    str, Strict(), matches(r".+:[^:]+", "package.module:function or path/file.py:function")
]


class TrainSettings(FrozenModel):
    """How one stage trains: epochs, optimizer and learning-rate schedule.

    ``schedule`` multiplies ``lr`` at the start of each epoch
    (:func:`admmsearch.train.lr_factors`): ``cosine`` by ``(1 + cos(pi * e / epochs)) / 2``
    at epoch ``e`` (0-based); ``step`` by 0.1 after each third of the stage's epochs
    (``0.1 ** (e // ceil(epochs / 3))``: 9 epochs run 3 at ``lr``, 3 at ``lr / 10``, 3 at
    ``lr / 100``); ``constant`` not at all.

    ``keep_best``: end with the weights of the epoch of best validation accuracy rather than
    the last epoch's (see :func:`admmsearch.train.fit_best`). A retraining stage written as a
    mapping (in a study file, or ``{"epochs": 2}``) keeps its best unless it says otherwise.
    """

    epochs: Count = 3
    lr: Positive = 0.01
    optimizer: Optimizer = "sgd"
    momentum: NonNegative = 0.9
    weight_decay: NonNegative = 0.0
    schedule: Schedule = "cosine"
    batch_size: PositiveInt = 64
    keep_best: StrictBool = False


def _keeps_best(value: Any) -> Any:
    """A retraining stage given as a mapping keeps its best epoch unless it says otherwise."""
    return {"keep_best": True, **value} if isinstance(value, Mapping) else value


#: A retraining stage: a :class:`TrainSettings` whose ``keep_best`` defaults to true.
Retraining = Annotated[TrainSettings, BeforeValidator(_keeps_best)]


class LegacyScheduleWarning(AdmmSearchWarning):
    """A study file's ADMM stage uses the old rho keys; it is read in the new ones."""


#: Keys of the rho schedule before it was described over the stage, and what replaced them.
LEGACY_RHO = {
    "initial": "rho.start",
    "multiplier": "rho.end",
    "every": "rho.updates",
    "maximum": "rho.end",
}


class RhoSchedule(FrozenModel):
    """rho over one ADMM stage: from ``start`` to ``end`` across the stage's ``updates`` Z/U
    updates, which are spread evenly over its optimizer steps.

    The stage's S optimizer steps are cut into ``n = min(updates, S)`` intervals, update k
    (k = 1..n) coming after step ``k * S // n``, so the last one comes after the last step. rho
    is constant within an interval and grows geometrically from one to the next: interval k
    (k = 0..n-1) trains with ``start * growth ** k``, ``growth = (end / start) ** (1 / (n - 1))``,
    so the first trains with ``start`` and the last with ``end`` (with one update, rho stays
    ``start``). Whenever rho changes the scaled dual U is rescaled (see
    :class:`admmsearch.admm.AdmmState`).

    Example: RhoSchedule(1e-3, 1e-1, updates=3) over 10 steps updates Z and U after steps 3,
    6 and 10, training with rho 1e-3, 1e-2 and 1e-1 in the three intervals.

    >>> s = RhoSchedule(1e-3, 1e-1, updates=3)
    >>> s.update_steps(10), [round(s.at(k, 10), 6) for k in range(3)]
    ([3, 6, 10], [0.001, 0.01, 0.1])
    """

    start: Positive = 5e-3
    end: Positive = 1.0
    updates: PositiveInt = 20

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

    def count(self, steps: int) -> int:
        """Z/U updates in a stage of ``steps`` optimizer steps: at most one per step."""
        return min(self.updates, steps)

    def update_steps(self, steps: int) -> list[int]:
        """After which optimizer steps (1-based) the updates come, evenly spread."""
        n = self.count(steps)
        return [k * steps // n for k in range(1, n + 1)]

    def growth(self, steps: int) -> float:
        """The factor rho grows by from one update to the next."""
        n = self.count(steps)
        return 1.0 if n <= 1 else (self.end / self.start) ** (1 / (n - 1))

    def at(self, updates_done: int, steps: int) -> float:
        """rho while training after ``updates_done`` updates, in a stage of ``steps`` steps."""
        n = self.count(steps)
        if n <= 1:
            return self.start
        return self.start * self.growth(steps) ** min(updates_done, n - 1)


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


class AdmmSettings(FrozenModel):
    """An ADMM stage: its training, and rho from start to end over the stage's Z/U updates
    (which also says how many updates the stage makes).

    The old rho keys (``{initial, multiplier, every, maximum}``) are read as the new schedule
    with a :class:`LegacyScheduleWarning`; ``update_every`` is refused, naming its successor.
    """

    train: TrainSettings = TrainSettings()
    rho: RhoSchedule = RhoSchedule()

    @model_validator(mode="before")
    @classmethod
    def _read_old_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "update_every" in data:
            raise ValueError(
                "update_every: replaced by rho.updates, the number of Z/U updates over the "
                "whole stage (spread evenly over its optimizer steps)"
            )
        rho = data.get("rho") if isinstance(data, dict) else None
        if isinstance(rho, dict) and any(k in rho for k in LEGACY_RHO):
            train = data.get("train")
            train = train.model_dump() if isinstance(train, TrainSettings) else train
            default = TrainSettings.model_fields["epochs"].default
            epochs = train.get("epochs", default) if isinstance(train, dict) else default
            return {**data, "rho": legacy_rho(rho, epochs)}
        return data


class QuantRetrainSettings(FrozenModel):
    """Iterative hard quantization: each round freezes a growing share of each layer's
    survivors on their levels, then retrains the rest; the shares rise strictly to 1.0."""

    train: Retraining = {"epochs": 1}
    shares: tuple[Fraction, ...] = (0.5, 0.75, 0.9, 1.0)

    @field_validator("shares")
    @classmethod
    def _rising_to_one(cls, shares: tuple[float, ...]) -> tuple[float, ...]:
        rising = all(a < b for a, b in zip(shares, shares[1:], strict=False))
        if not shares or shares[-1] != 1.0 or not rising:
            raise ValueError("must rise strictly and end at 1.0")
        return shares


class CompressionSettings(FrozenModel):
    """The compression stages every trial runs on the dense model (a study file's
    ``pipeline:`` section); a stage set to None is skipped.

    ``progressive_steps > 1`` reaches the pruning target in steps whose keep ratios fall
    geometrically. ``index_format`` is the sparse index format of the storage accounting.
    ``fold_batchnorm`` folds each Conv -> BatchNorm pair of the dense model before
    compression, so what is compressed, accounted and packed is the deployed network.
    """

    admm_prune: AdmmSettings | None = AdmmSettings()
    retrain: Retraining | None = {}
    admm_quantize: AdmmSettings | None = AdmmSettings()
    quant_retrain: QuantRetrainSettings | None = QuantRetrainSettings()
    progressive_steps: PositiveInt = 1
    index_format: IndexFormat = "gap"
    fold_batchnorm: bool = True


class TrainingHooks(FrozenModel):
    """User code every training stage runs (a study file's ``training:`` section), each named
    ``package.module:function`` or ``path/file.py:function``; None keeps admmsearch's own.

    * ``transform(x, y, generator) -> (x, y)``: each training batch (augmentation).
    * ``loss(logits, y) -> scalar tensor``: the training loss (default: cross-entropy).
    * ``step(batch) -> scalar tensor``: one step's loss from a
      :class:`admmsearch.hooks.StepInput`; admmsearch adds the ADMM penalty, back-propagates
      and steps the optimizer.

    See :mod:`admmsearch.hooks` for what each receives and must return.
    """

    transform: HookName | None = None
    loss: HookName | None = None
    step: HookName | None = None

    @property
    def named(self) -> dict[str, str]:
        """The hooks that are set, by field."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PipelineSettings(CompressionSettings):
    """The whole pipeline: a dense training stage (``pretrain``; None when the model comes
    trained), the compression stages, the seed every stage's seed derives from, and the
    user's training hooks."""

    pretrain: TrainSettings | None = TrainSettings(epochs=5)
    seed: Count = 0
    training: TrainingHooks = TrainingHooks()
