"""A study file (YAML) -> a validated, typed, frozen :class:`StudyConfig`.

The study file is parsed and checked once, here; everything downstream receives typed objects.
Errors name the file, every bad field by its dotted path, and the bad value::

    studies/x.yaml: 2 problems:
      search.keep.low: must be in (0, 1], got -1
      dataset.val_fractoin: unknown field

Most checks need only the file (:func:`load_study`). Layer names need the model, which is cheap
to build (:func:`resolve_layers`); :func:`validate_study` does both, so a malformed file is
rejected before any training.

A searchable setting (a *knob*) is written as a fixed value, a range ``{low, high, log, step}``
or ``{choices: [...]}``. :func:`knob_specs` lists every knob of a study under the Optuna
parameter name that :mod:`admmsearch.search_space` suggests it as: ``keep.<unit>``,
``bits.<unit>`` or ``clusters.<unit>`` per *unit* (a layer, or a group of tied layers), then the
global knobs ``rho_initial``, ``rho_multiplier``, ``rho_every``, ``admm_epochs``,
``retrain_epochs`` and ``lr``. Example::

    >>> c = StudyConfig.model_validate({"name": "x", "model": "digits-cnn", "dataset": "digits",
    ...                                 "search": {"keep": 0.5, "bits": {"choices": [4, None]}}})
    >>> sorted(n for n, s in knob_specs(c, ["fc1", "fc2"]).items() if is_searched(s))
    ['bits.fc1', 'bits.fc2']
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import torch
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .admm import RhoSchedule
from .data import DATASETS, load_dataset
from .errors import AdmmSearchError, ConfigError, LayerError
from .models import MODELS, compressible_layers, create_model
from .pipeline import AdmmSettings, PipelineSettings, QuantRetrainSettings
from .storage import INDEX_FORMATS
from .train import OPTIMIZERS, SCHEDULES, TrainSettings

__all__ = [
    "GLOBAL_KNOBS",
    "KNOB_TARGETS",
    "OBJECTIVES",
    "SAMPLERS",
    "Choices",
    "FloatRange",
    "IntRange",
    "StudyConfig",
    "UnitSpace",
    "base_pipeline",
    "check_layers",
    "contains",
    "dense_settings",
    "is_searched",
    "knob_specs",
    "load_study",
    "resolve_layers",
    "unit_spaces",
    "validate_study",
]

#: Objectives a study may optimise, with their Optuna direction.
OBJECTIVES = {
    "val_accuracy": "maximize",
    "storage_bits_with_index": "minimize",
    "compression_ratio_with_index": "maximize",
}
SAMPLERS = ("nsga2", "tpe", "gp", "random")
#: Which pipeline stages each global knob sets, and the field within the stage.
KNOB_TARGETS: dict[str, dict[str, str]] = {
    "rho_initial": {"admm_prune": "rho.initial", "admm_quantize": "rho.initial"},
    "rho_multiplier": {"admm_prune": "rho.multiplier", "admm_quantize": "rho.multiplier"},
    "rho_every": {"admm_prune": "rho.every", "admm_quantize": "rho.every"},
    "admm_epochs": {"admm_prune": "train.epochs", "admm_quantize": "train.epochs"},
    "retrain_epochs": {"retrain": "epochs"},
    "lr": {"admm_prune": "train.lr", "retrain": "lr", "admm_quantize": "train.lr"},
}
#: Knobs that act on the pipeline rather than on a layer, in suggestion order.
GLOBAL_KNOBS = tuple(KNOB_TARGETS)
#: Sample shape and class count of the built-in datasets, so layers resolve without loading them.
_BUILTIN_SHAPES = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}
_FINGERPRINT_VERSION = 1  # bump when the code that trains the dense model changes its result
_FIXED, _RANGE, _CHOICES = "~fixed", "~range", "~choices"  # union tags, dropped from error paths


# --- value types: each check says what is wrong; the error path and value are added later ---


def _bound(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> AfterValidator:
    """Check a finite number lies in [low, high]; ``open_*`` excludes that end."""
    if high is None:
        text = f"must be {'>' if open_low else '>='} {low}"
    else:
        text = f"must be in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def check(value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        above = value > low if open_low else value >= low
        below = high is None or (value < high if open_high else value <= high)
        if not (above and below):
            raise ValueError(text)
        return value

    return AfterValidator(check)


def _one_of(values: Sequence[str]) -> AfterValidator:
    """Check a string is one of ``values``."""

    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return AfterValidator(check)


def _matches(pattern: str, what: str) -> AfterValidator:
    """Check a string matches ``pattern``; the message says ``what`` it must be."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


# Strict numbers: a float field takes ints too, but neither takes bools or strings.
Fraction = Annotated[float, Strict(), _bound(0, 1, open_low=True)]
Positive = Annotated[float, Strict(), _bound(0, open_low=True)]
NonNegative = Annotated[float, Strict(), _bound(0)]
Multiplier = Annotated[float, Strict(), _bound(1)]
Count = Annotated[int, Strict(), _bound(0)]
PositiveInt = Annotated[int, Strict(), _bound(1)]
Bits = Annotated[int, Strict(), _bound(1, 16)]
Clusters = Annotated[int, Strict(), _bound(2, 65536)]
Name = Annotated[str, Strict(), _matches(r"[A-Za-z0-9_.-]+", "letters, digits, '_', '.' or '-'")]
Device = Annotated[str, Strict(), _matches(r"cpu|mps|cuda(:\d+)?", "cpu, cuda, cuda:N or mps")]
Optimizer = Annotated[str, Strict(), _one_of(OPTIMIZERS)]
Schedule = Annotated[str, Strict(), _one_of(SCHEDULES)]
IndexFormat = Annotated[str, Strict(), _one_of(INDEX_FORMATS)]
Objective = Annotated[str, Strict(), _one_of(tuple(OBJECTIVES))]
SamplerName = Annotated[str, Strict(), _one_of(SAMPLERS)]
V = TypeVar("V")


def _number_or_none(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("must be a number or null")
    return value


ParamValue = Annotated[Any, AfterValidator(_number_or_none)]  # an enqueued parameter's value


class _Model(BaseModel):
    """Frozen, no unknown fields, defaults validated like user input."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --- knobs: a fixed value, a range or choices ---


def _check_range(low: float, high: float, log: bool, stepped: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and stepped:
        raise ValueError("log and step cannot be combined")


class FloatRange(_Model, Generic[V]):
    """Searched with ``trial.suggest_float``; ``log`` samples evenly on a log scale."""

    low: V
    high: V
    log: bool = False
    step: Positive | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self


class IntRange(_Model, Generic[V]):
    """Searched with ``trial.suggest_int``."""

    low: V
    high: V
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self


class Choices(_Model, Generic[V]):
    """Searched with ``trial.suggest_categorical``; ``None`` may be a choice where allowed."""

    choices: tuple[V, ...] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(set(choices)) != len(choices):
            raise ValueError("must not repeat a choice")
        return choices


def _form(value: Any) -> str:
    """Which form of knob ``value`` is written in: choices, range or a fixed value."""
    if isinstance(value, Choices) or (isinstance(value, Mapping) and "choices" in value):
        return _CHOICES
    return _RANGE if isinstance(value, Mapping | FloatRange | IntRange) else _FIXED


def _knob(value: Any, ranges: type, fixed: Any = None) -> Any:
    """The type of a knob over ``value``; ``fixed`` widens the fixed value and the choices."""
    fixed = value if fixed is None else fixed
    forms = (
        Annotated[fixed, Tag(_FIXED)]
        | Annotated[ranges[value], Tag(_RANGE)]
        | Annotated[Choices[fixed], Tag(_CHOICES)]
    )
    return Annotated[forms, Discriminator(_form)]


KeepKnob = _knob(Fraction, FloatRange)
BitsKnob = _knob(Bits, IntRange, Bits | None)  # None: float32, no quantization
ClustersKnob = _knob(Clusters, IntRange, Clusters | None)  # None: clustering off
PositiveKnob = _knob(Positive, FloatRange)
MultiplierKnob = _knob(Multiplier, FloatRange)
CountKnob = _knob(Count, IntRange)
PositiveIntKnob = _knob(PositiveInt, IntRange)


def is_searched(spec: Any) -> bool:
    """Whether a knob is searched (a range or choices) rather than fixed."""
    return isinstance(spec, FloatRange | IntRange | Choices)


def contains(spec: Any, value: Any) -> bool:
    """Whether ``value`` is one the knob ``spec`` can take (for enqueued and replayed params)."""
    if isinstance(spec, Choices):
        return any(
            c == value and isinstance(c, bool) == isinstance(value, bool) for c in spec.choices
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(spec, IntRange) and not isinstance(value, int):
        return False
    if is_searched(spec):
        return spec.low <= value <= spec.high
    return value == spec


# --- the sections of a study file ---


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
    """Every trial's stages before the searched knobs are applied; null skips a stage."""

    admm_prune: AdmmConfig | None = {}
    retrain: TrainConfig | None = {}
    admm_quantize: AdmmConfig | None = {}
    quant_retrain: QuantRetrainConfig | None = {}
    progressive_steps: PositiveInt = 1
    index_format: IndexFormat = "gap"


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
    """A registered dataset, a ``.npz`` file or ``package.module:function``; see load_dataset."""

    name: Annotated[str, Strict()]
    val_fraction: Annotated[float, Strict(), _bound(0, 1, open_high=True)] = 0.1
    limit_train: PositiveInt | None = None
    root: str | None = None
    download: bool = True

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


class LayerOverride(_Model):
    """Settings of one layer or group; a field left out inherits the ``search`` default.

    Giving ``bits`` (or ``clusters: null``) makes the unit use bits even when clusters are
    searched study-wide; giving ``clusters`` makes it use clusters.
    """

    keep: KeepKnob | None = None
    bits: BitsKnob = None
    clusters: ClustersKnob = None
    structured: bool | None = None

    @model_validator(mode="after")
    def _one_quantizer(self) -> LayerOverride:
        if "bits" in self.model_fields_set and self.clusters is not None:
            raise ValueError("give bits or clusters, not both")
        return self

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the fields written, so that inheriting and ``bits: null`` stay distinct."""
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class SearchConfig(_Model):
    """What each trial searches; ``groups`` tie layers (exact names or globs) to one setting."""

    keep: KeepKnob = {"low": 0.02, "high": 1.0, "log": True}
    bits: BitsKnob = {"choices": [2, 3, 4, 5, 6, 8, None]}
    clusters: ClustersKnob = None
    structured: bool = False
    groups: dict[Name, Annotated[tuple[str, ...], Field(min_length=1)]] = {}
    layers: dict[str, LayerOverride] = {}
    rho_initial: PositiveKnob | None = None
    rho_multiplier: MultiplierKnob | None = None
    rho_every: PositiveIntKnob | None = None
    admm_epochs: CountKnob | None = None
    retrain_epochs: CountKnob | None = None
    lr: PositiveKnob | None = None


class ConstraintsConfig(_Model):
    """Feasibility limits; ``max_accuracy_drop`` is dense minus final val accuracy, in [0, 1]."""

    max_accuracy_drop: Annotated[float, Strict(), _bound(0, 1)] | None = None
    max_storage_bits: PositiveInt | None = None


class SamplerConfig(_Model):
    """The Optuna sampler; ``seed`` null means the study seed."""

    name: SamplerName = "nsga2"
    seed: Count | None = None
    population_size: Annotated[int, Strict(), _bound(2)] | None = None

    @model_validator(mode="after")
    def _population_for_nsga2(self) -> SamplerConfig:
        if self.population_size is not None and self.name != "nsga2":
            raise ValueError(f"population_size: only nsga2 has one, not {self.name}")
        return self


class BudgetConfig(_Model):
    """When the study stops: after ``trials`` trials or ``timeout_s`` seconds, whichever first."""

    trials: PositiveInt | None = None
    timeout_s: Positive | None = None

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.trials is None and self.timeout_s is None:
            raise ValueError("give trials, timeout_s or both")
        return self


class StudyConfig(_Model):
    """A whole study file, validated. See ``studies/*.yaml`` for commented examples."""

    name: Name
    seed: Count = 0
    model: ModelConfig
    dataset: DatasetConfig
    layers: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    device: Device = "cpu"
    dense: DenseConfig = {}
    pipeline: PipelineConfig = {}
    search: SearchConfig = {}
    objectives: Annotated[tuple[Objective, ...], Field(min_length=1)] = (
        "val_accuracy",
        "storage_bits_with_index",
    )
    constraints: ConstraintsConfig = {}
    sampler: SamplerConfig = {}
    budget: BudgetConfig = {"trials": 20}
    enqueue: tuple[dict[str, ParamValue], ...] = ()
    storage: str | None = None
    tracking_uri: str | None = None

    @field_validator("model", "dataset", mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, objectives: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(objectives)) != len(objectives):
            raise ValueError("must not repeat an objective")
        return objectives

    @model_validator(mode="after")
    def _knobs_fit_pipeline(self) -> StudyConfig:
        for knob, targets in KNOB_TARGETS.items():
            spec = getattr(self.search, knob)
            if spec is not None:
                _check_target(knob, spec, targets, self.pipeline)
        return self

    @property
    def directions(self) -> list[str]:
        """Optuna directions of ``objectives``, in order."""
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def sampler_seed(self) -> int:
        return self.seed if self.sampler.seed is None else self.sampler.seed

    def resolved_dict(self) -> dict[str, Any]:
        """The study with every default filled in, as plain data (JSON/YAML-ready)."""
        return self.model_dump(mode="json")

    def fingerprint_dense(self) -> str:
        """sha256 hex of what determines the dense model, to cache it on disk.

        Search, pipeline and bookkeeping settings do not enter it, so changing them reuses the
        cached dense model.
        """
        keep = {
            "model": True,
            "dataset": {"name", "val_fraction", "limit_train", "root"},
            "seed": True,
            "dense": True,
            "layers": True,
        }
        data = self.model_dump(mode="json", include=keep)
        text = json.dumps({"v": _FINGERPRINT_VERSION, **data}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _check_target(knob: str, spec: Any, targets: Mapping[str, str], p: PipelineConfig) -> None:
    """A set knob needs one enabled stage to act on; rho_initial must stay under rho.maximum."""
    stages = [s for s in targets if getattr(p, s) is not None]
    if not stages:
        raise ValueError(f"search.{knob}: sets {' and '.join(targets)}, but all are null")
    if knob != "rho_initial":
        return
    top = max(spec.choices) if isinstance(spec, Choices) else getattr(spec, "high", spec)
    for stage in stages:
        maximum = getattr(p, stage).rho.maximum
        if top > maximum:
            raise ValueError(
                f"search.rho_initial: goes up to {top}, above pipeline.{stage}.rho.maximum "
                f"({maximum}); raise the maximum or lower the range"
            )


# --- units: a layer, or a group of layers tied to one setting ---


@dataclass(frozen=True)
class UnitSpace:
    """The search space of one unit: a layer, or a group of layers that share a setting.

    Attributes:
        name: the layer or group name, used in parameter names.
        layers: the compressible layers the unit's setting applies to, in model order.
        keep: the keep-ratio knob (a fixed value, range or choices).
        quantizer: ``"bits"`` or ``"clusters"``: which LayerPlan field ``levels`` sets.
        levels: the bits or clusters knob; a value of None means no quantization.
        structured: prune whole filters / rows.
    """

    name: str
    layers: tuple[str, ...]
    keep: Any
    quantizer: str
    levels: Any
    structured: bool

    @property
    def keep_param(self) -> str:
        return f"keep.{self.name}"

    @property
    def levels_param(self) -> str:
        return f"{self.quantizer}.{self.name}"


def unit_spaces(config: StudyConfig, layers: Sequence[str]) -> list[UnitSpace]:
    """The units of a study over ``layers``, in model order (a group where its first layer is).

    Raises:
        ConfigError: a group names no layer, shares a layer with another or is named like one.
    """
    members = _group_members(config.search.groups, list(layers))
    owner = {layer: group for group, tied in members.items() for layer in tied}
    names = dict.fromkeys(owner.get(layer, layer) for layer in layers)
    return [_unit_space(config.search, n, members.get(n, (n,))) for n in names]


def knob_specs(config: StudyConfig, layers: Sequence[str]) -> dict[str, Any]:
    """Every knob of the study by its Optuna parameter name, fixed ones included, in order."""
    specs: dict[str, Any] = {}
    for unit in unit_spaces(config, layers):
        specs[unit.keep_param] = unit.keep
        specs[unit.levels_param] = unit.levels
    for knob in GLOBAL_KNOBS:
        if (spec := getattr(config.search, knob)) is not None:
            specs[knob] = spec
    return specs


def _group_members(groups: Mapping[str, Sequence[str]], layers: list[str]) -> dict[str, tuple]:
    """Expand each group's names and globs into layers; a layer may sit in one group only."""
    owner: dict[str, str] = {}
    members = {}
    for group, patterns in groups.items():
        where = f"search.groups.{group}"
        if group in layers:
            raise ConfigError(f"{where}: a group cannot have the name of a layer")
        found = set()
        for pattern in patterns:
            matched = {n for n in layers if fnmatch.fnmatchcase(n, pattern)}
            if not matched:
                raise ConfigError(f"{where}: {pattern!r} matches no layer; valid: {_list(layers)}")
            found |= matched
        for layer in found:
            if layer in owner:
                raise ConfigError(f"{where}: layer {layer!r} is already in group {owner[layer]!r}")
            owner[layer] = group
        members[group] = tuple(n for n in layers if n in found)
    return members


def _unit_space(search: SearchConfig, name: str, layers: tuple[str, ...]) -> UnitSpace:
    override = search.layers.get(name, LayerOverride())
    quantizer, levels = _quantization(search, override)
    return UnitSpace(
        name=name,
        layers=layers,
        keep=search.keep if override.keep is None else override.keep,
        quantizer=quantizer,
        levels=levels,
        structured=search.structured if override.structured is None else override.structured,
    )


def _quantization(search: SearchConfig, override: LayerOverride) -> tuple[str, Any]:
    """bits or clusters for a unit: its own choice if it made one, else the study's."""
    given = override.model_fields_set
    if override.clusters is not None:
        return "clusters", override.clusters
    if "clusters" in given or "bits" in given:
        return "bits", override.bits if "bits" in given else search.bits
    if search.clusters is not None:
        return "clusters", search.clusters
    return "bits", search.bits


# --- checks that need the layer names ---


def check_layers(config: StudyConfig, layers: Sequence[str]) -> None:
    """Check that groups, per-layer settings and enqueued params name real layers and knobs.

    Raises:
        ConfigError: names the field, the bad name and the valid ones.
    """
    layers = list(layers)
    units = unit_spaces(config, layers)
    owner = {layer: u.name for u in units for layer in u.layers if layer != u.name}
    valid = [u.name for u in units]
    for name in config.search.layers:
        where = f"search.layers.{name}"
        if name in owner:
            raise ConfigError(f"{where}: layer {name!r} is tied in group {owner[name]!r}")
        if name not in valid:
            raise ConfigError(f"{where}: not a compressible layer or group; valid: {_list(valid)}")
    _check_enqueue(config.enqueue, knob_specs(config, layers))


def _check_enqueue(enqueue: Sequence[Mapping[str, Any]], specs: Mapping[str, Any]) -> None:
    searched = [name for name, spec in specs.items() if is_searched(spec)]
    for i, params in enumerate(enqueue):
        for name, value in params.items():
            where = f"enqueue[{i}].{name}"
            if name not in searched:
                why = "is fixed in this study" if name in specs else "is not a parameter"
                raise ConfigError(f"{where}: {why}; searched: {_list(searched)}")
            if not contains(specs[name], value):
                raise ConfigError(f"{where}: {value!r} is outside {_describe(specs[name])}")


def _describe(spec: Any) -> str:
    if isinstance(spec, Choices):
        return f"choices {list(spec.choices)}"
    return f"range [{spec.low}, {spec.high}]" if is_searched(spec) else f"fixed value {spec!r}"


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


def resolve_layers(config: StudyConfig) -> list[str]:
    """Build the model (seeded, leaving the global RNG alone) and name its compressible layers.

    The built-in datasets' shapes are known, so only other datasets get loaded for their shape.

    Raises:
        LayerError: a ``layers`` pattern matches no compressible layer.
        ConfigError, RegistryError, DatasetError: the model or dataset cannot be built.
    """
    shape, classes = _input_spec(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_model(
            config.model.name, num_classes=classes, input_shape=shape, **config.model.kwargs
        )
    try:
        return list(compressible_layers(model, config.layers))
    except LayerError as exc:
        raise LayerError(f"layers: {exc}") from None


def _input_spec(config: StudyConfig) -> tuple[tuple[int, ...], int]:
    d = config.dataset
    if d.name in _BUILTIN_SHAPES:
        return _BUILTIN_SHAPES[d.name]
    data = load_dataset(
        d.name,
        val_fraction=d.val_fraction,
        seed=config.seed,
        root=d.root,
        download=d.download,
        limit_train=d.limit_train,
    )
    return data.input_shape, data.num_classes


# --- loading ---


class _StudyLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a number (as YAML 1.2 does) and rejects repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file.

    Raises:
        ConfigError: the file is missing, not YAML or not a mapping, or has bad fields; the
            message names the file and every bad field with its value.
    """
    path = Path(path)
    data = _read_yaml(path)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_report(path, exc)) from None


def validate_study(path: str | Path) -> tuple[StudyConfig, list[str]]:
    """Load a study file and check it against its model's layers, before any training.

    Returns:
        The config and the names of the compressible layers it compresses.
    """
    config = load_study(path)
    try:
        layers = resolve_layers(config)
        check_layers(config, layers)
    except AdmmSearchError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    return config, layers


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the study file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StudyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        kind = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of study settings, got {kind}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: what`` from PyYAML's multi-line message."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(exc)
    what = ", ".join(t for t in (getattr(exc, "context", None), exc.problem) if t)
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def _report(path: Path, exc: ValidationError) -> str:
    """One line per bad field: ``dotted.path: what is wrong, got value``."""
    lines = list(dict.fromkeys(_line(error) for error in exc.errors(include_url=False)))
    if len(lines) == 1:
        return f"{path}: {lines[0]}"
    return f"{path}: {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


_PHRASES = (
    (re.compile(r"^Input should be"), "must be"),
    (re.compile(r"a valid dictionary( or instance of \w+)?"), "a mapping"),
    (re.compile(r"a valid tuple"), "a list"),
    (re.compile(r"^(Tuple|List|Dictionary) should"), "must"),
    (re.compile(r" after validation, not \d+"), ""),
)


def _line(error: Mapping[str, Any]) -> str:
    where = ""
    for part in error["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif not part.startswith("~") and part != "[key]":
            where += f".{part}" if where else part
    if error["type"] == "extra_forbidden":
        text = "unknown field"
    elif error["type"] == "missing":
        text = "required field is missing"
    else:
        text = error["msg"].removeprefix("Value error, ")
        for pattern, new in _PHRASES:
            text = pattern.sub(new, text)
        if not isinstance(error.get("input"), Mapping):
            text += f", got {error['input']!r}"
    return f"{where}: {text}" if where else text


# --- conversions to the engine's settings ---


def dense_settings(config: StudyConfig) -> TrainSettings:
    """How to train the dense model when no checkpoint is given."""
    return config.dense.train.settings()


def base_pipeline(config: StudyConfig) -> PipelineSettings:
    """Every trial's pipeline before its knobs are applied; ``pretrain`` is None because trials
    start from the dense model (trained once with :func:`dense_settings`, or a checkpoint)."""
    p = config.pipeline
    return PipelineSettings(
        pretrain=None,
        admm_prune=None if p.admm_prune is None else p.admm_prune.settings(),
        retrain=None if p.retrain is None else p.retrain.settings(),
        admm_quantize=None if p.admm_quantize is None else p.admm_quantize.settings(),
        quant_retrain=None if p.quant_retrain is None else p.quant_retrain.settings(),
        progressive_steps=p.progressive_steps,
        seed=config.seed,
        index_format=p.index_format,
    )
