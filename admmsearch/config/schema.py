"""The whole study file (:class:`StudyConfig`) and its search, constraint, sampler and
budget sections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    field_validator,
    model_serializer,
    model_validator,
)

from ..record import Metric
from ..redact import redact_url
from ..settings import CompressionSettings, TrainingHooks
from .knobs import (
    BitsKnob,
    ClustersKnob,
    CountKnob,
    KeepKnob,
    PositiveIntKnob,
    PositiveKnob,
)
from .sections import DatasetConfig, DenseConfig, ModelConfig
from .values import (
    OBJECTIVES,
    PRIOR_FAMILIES,
    Count,
    Device,
    FrozenModel,
    Name,
    Objective,
    ParamValue,
    Positive,
    PositiveInt,
    PriorFamily,
    SamplerName,
    bound,
)

__all__ = [
    "GLOBAL_KNOBS",
    "KNOB_TARGETS",
    "LEGACY_KNOBS",
    "BudgetConfig",
    "ConstraintsConfig",
    "LayerOverride",
    "PriorsConfig",
    "SamplerConfig",
    "SearchConfig",
    "SensitivityConfig",
    "StudyConfig",
    "WorkersConfig",
]

#: Which pipeline stages each global knob sets, and the field within the stage; an empty field
#: means the pipeline's own field named by the key (``progressive_steps``).
KNOB_TARGETS: dict[str, dict[str, str]] = {
    "rho_start": {"admm_prune": "rho.start", "admm_quantize": "rho.start"},
    "rho_end": {"admm_prune": "rho.end", "admm_quantize": "rho.end"},
    "admm_updates": {"admm_prune": "rho.updates", "admm_quantize": "rho.updates"},
    "admm_epochs": {"admm_prune": "train.epochs", "admm_quantize": "train.epochs"},
    "retrain_epochs": {"retrain": "epochs"},
    "lr": {"admm_prune": "train.lr", "retrain": "lr", "admm_quantize": "train.lr"},
    "admm_prune_epochs": {"admm_prune": "train.epochs"},
    "progressive_steps": {"progressive_steps": ""},
}
#: Knobs that act on the pipeline rather than on a layer, in suggestion order.
GLOBAL_KNOBS = tuple(KNOB_TARGETS)
#: Knobs of the rho schedule before it was described over the stage, and their successors.
LEGACY_KNOBS = {
    "rho_initial": "rho_start",
    "rho_multiplier": "rho_end",
    "rho_every": "admm_updates",
}
_FINGERPRINT_VERSION = 1  # bump when the code that trains the dense model changes its result


class LayerOverride(FrozenModel):
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


class PriorsConfig(FrozenModel):
    """Zero-cost allocation priors as a new study's first trials (:mod:`admmsearch.search.priors`):
    each of ``families`` at ``targets`` storage targets log-spaced over the storage the search
    space spans. ``placement: knee`` (the default) places each when it is about to run, from
    the outcomes of those before it, to find the most compressed target that still meets the
    constraints (:mod:`admmsearch.search.priors.placement`); ``grid`` queues them all when the
    study starts (with the sensitivity seeds, at most half of the settings the budget pays
    for)."""

    families: Annotated[tuple[PriorFamily, ...], Field(min_length=1)] = PRIOR_FAMILIES
    targets: Annotated[int, Strict(), bound(1, 16)] = 8
    placement: Literal["knee", "grid"] = "knee"

    @field_validator("families")
    @classmethod
    def _distinct(cls, families: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(families)) != len(families):
            raise ValueError("must not repeat a family")
        return families


class RungsConfig(FrozenModel):
    """Successive halving (:mod:`admmsearch.search.rungs`): ``count`` rungs, each ``eta``
    times longer than the one below, the top rung being the pipeline as written; the best
    ``1/eta`` of a rung's trials, by non-dominated sorting, are continued at the next."""

    eta: Annotated[int, Strict(), bound(2, 16)] = 3
    count: Annotated[int, Strict(), bound(2, 8)] = 3


class SearchConfig(FrozenModel):
    """What each trial searches; ``groups`` tie layers (exact names or globs) to one setting.

    ``admm_prune_epochs`` sets the ADMM pruning stage alone (0: magnitude pruning, then masked
    retraining) and cannot be given with ``admm_epochs``, which sets both ADMM stages;
    ``progressive_steps`` searches one-shot (1) against progressive pruning in that many steps.
    ``priors`` (null: none) starts a new study from zero-cost allocation priors; ``rungs``
    (null: none) runs every setting short first and continues the best (successive halving).
    """

    keep: KeepKnob = {"low": 0.02, "high": 1.0, "log": True}
    bits: BitsKnob = {"choices": [2, 3, 4, 5, 6, 8, None]}
    clusters: ClustersKnob = None
    structured: bool = False
    groups: dict[Name, Annotated[tuple[str, ...], Field(min_length=1)]] = {}
    layers: dict[str, LayerOverride] = {}
    rho_start: PositiveKnob | None = None
    rho_end: PositiveKnob | None = None
    admm_updates: PositiveIntKnob | None = None
    admm_epochs: CountKnob | None = None
    retrain_epochs: CountKnob | None = None
    lr: PositiveKnob | None = None
    admm_prune_epochs: CountKnob | None = None
    progressive_steps: PositiveIntKnob | None = None
    seed_from_sensitivity: Annotated[bool, Strict()] = True
    priors: PriorsConfig | None = None
    rungs: RungsConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_legacy_knobs(cls, data: Any) -> Any:
        old = [k for k in LEGACY_KNOBS if isinstance(data, dict) and k in data]
        if old:
            new = ", ".join(f"{k} -> {LEGACY_KNOBS[k]}" for k in old)
            raise ValueError(
                f"the rho schedule is now described over the stage: replace {new} "
                "(rho goes from rho_start to rho_end over admm_updates Z/U updates)"
            )
        return data

    @model_validator(mode="after")
    def _one_admm_prune_length(self) -> SearchConfig:
        if self.admm_epochs is not None and self.admm_prune_epochs is not None:
            raise ValueError(
                "admm_prune_epochs: admm_epochs already sets the ADMM pruning stage's epochs; "
                "give one of them (admm_prune_epochs sets that stage alone)"
            )
        return self


class SensitivityConfig(FrozenModel):
    """The sensitivity pass (``admmsearch sensitivity``; a new study's first step when
    ``search.seed_from_sensitivity``) and the trials it seeds.

    ``keep_points`` keep ratios are measured per unit, spread over its keep range, on the first
    ``samples`` validation images (null: all); ``budgets`` storage budgets, log-spaced over the
    storage the search space spans, each give one seeded trial (at most half of
    ``budget.trials``). ``finetune_steps`` (default 0: none) fine-tunes each measured point for
    that many SGD steps, the unit held on its mask and levels, at the learning rate and batch
    size of ``pipeline.retrain`` (else of the dense training) before measuring it.
    """

    keep_points: Annotated[int, Strict(), bound(2, 64)] = 8
    samples: PositiveInt | None = 2000
    budgets: Count = 4
    finetune_steps: Annotated[int, Strict(), bound(0, 100_000)] = 0


class ConstraintsConfig(FrozenModel):
    """Feasibility limits; ``max_accuracy_drop`` is dense minus final val accuracy, in [0, 1]."""

    max_accuracy_drop: Annotated[float, Strict(), bound(0, 1)] | None = None
    max_storage_bits: PositiveInt | None = None


class SamplerConfig(FrozenModel):
    """The Optuna sampler; ``seed`` null means the study seed.

    The default, TPE, is the one ``benchmarks/bench_search.py`` favours: from 20 trials on it
    reaches the largest hypervolume of NSGA-II, TPE and random (README, Benchmarks).
    """

    name: SamplerName = "tpe"
    seed: Count | None = None
    population_size: Annotated[int, Strict(), bound(2)] | None = None

    @model_validator(mode="after")
    def _population_for_nsga2(self) -> SamplerConfig:
        if self.population_size is not None and self.name != "nsga2":
            raise ValueError(f"population_size: only nsga2 has one, not {self.name}")
        return self


class BudgetConfig(FrozenModel):
    """When the study stops: after ``trials`` trials, ``epochs`` training epochs (every
    trial's stages, the dense model's training not counted) or ``timeout_s`` seconds,
    whichever comes first; counted over every worker and resume."""

    trials: PositiveInt | None = None
    epochs: PositiveInt | None = None
    timeout_s: Positive | None = None

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.trials is None and self.epochs is None and self.timeout_s is None:
            raise ValueError("give trials, epochs, timeout_s or several")
        return self


class WorkersConfig(FrozenModel):
    """How the workers sharing a study watch each other, and where they share the dense cache.

    A running trial records a heartbeat every ``heartbeat_interval_s``; a trial without one for
    ``grace_period_s`` is taken as lost with its worker: it is marked failed and queued again
    with the same params, at most ``max_retry`` times. ``cache_dir`` (default: ``cache/`` in
    the work directory, or ``$ADMMSEARCH_CACHE_DIR``) holds the dense model and stage caches;
    point workers on several machines at one shared path to train the dense model once.
    ``per_device`` runs that many trials at once on each device of a ``run`` or ``worker``
    process, one worker process each (see :mod:`admmsearch.runtime._devices`).
    """

    heartbeat_interval_s: PositiveInt = 60
    grace_period_s: PositiveInt = 180
    max_retry: Count = 3
    cache_dir: str | None = None
    per_device: PositiveInt = 1

    @model_validator(mode="after")
    def _grace_after_beat(self) -> WorkersConfig:
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"grace_period_s ({self.grace_period_s}) must be longer than "
                f"heartbeat_interval_s ({self.heartbeat_interval_s}), or live trials would be "
                "taken for lost"
            )
        return self


class StudyConfig(FrozenModel):
    """A whole study file, validated. See ``studies/*.yaml`` for commented examples.

    ``pipeline`` and ``training`` are the engine's own types
    (:class:`~admmsearch.settings.CompressionSettings`,
    :class:`~admmsearch.settings.TrainingHooks`), as is ``dense.train``.
    """

    name: Name
    seed: Count = 0
    model: ModelConfig
    dataset: DatasetConfig
    layers: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    device: Device = "cpu"
    dense: DenseConfig = {}
    pipeline: CompressionSettings = {}
    training: TrainingHooks = {}
    search: SearchConfig = {}
    sensitivity: SensitivityConfig = {}
    objectives: Annotated[tuple[Objective, ...], Field(min_length=1)] = (
        Metric.VAL_ACCURACY,
        Metric.STORAGE_BITS,
    )
    constraints: ConstraintsConfig = {}
    sampler: SamplerConfig = {}
    budget: BudgetConfig = {"trials": 20}
    enqueue: tuple[dict[str, ParamValue], ...] = ()
    storage: str | None = None
    tracking_uri: str | None = None
    workers: WorkersConfig = {}

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
        """The study with every default filled in, as plain data (JSON/YAML-ready); passwords
        in ``storage`` and ``tracking_uri`` are masked, since this is what gets logged."""
        data = self.model_dump(mode="json")
        for key in ("storage", "tracking_uri"):
            if data[key] is not None:
                data[key] = redact_url(data[key])
        return data

    def fingerprint_dense(self) -> str:
        """sha256 hex of what determines the dense model, to cache it on disk.

        Search, pipeline and bookkeeping settings do not enter it, so changing them reuses the
        cached dense model; nor does ``layers``: which layers are compressed does not change how
        the dense model trains (an exported settings file lists the layers a study left null).
        The training hooks enter it by name when any is set (not the code behind the name).
        """
        keep = {
            "model": True,
            "dataset": {"name", "val_fraction", "limit_train", "root", "num_classes", "normalise"},
            "seed": True,
            "dense": True,
        }
        if self.training.named:  # left out otherwise: studies without hooks keep their cache
            keep["training"] = True
        data = self.model_dump(mode="json", include=keep)
        text = json.dumps({"v": _FINGERPRINT_VERSION, **data}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _check_target(
    knob: str, spec: Any, targets: Mapping[str, str], p: CompressionSettings
) -> None:
    """A set knob needs one enabled stage to act on (a pipeline field always is)."""
    stages = [s for s, f in targets.items() if not f or getattr(p, s) is not None]
    if not stages:
        raise ValueError(f"search.{knob}: sets {' and '.join(targets)}, but all are null")
