"""Compression from the dense model, written once: a study's trial, the reproduction of an
exported settings file and a one-shot ``compress`` all call :func:`compress_dense`.

:func:`compress_dense` takes a :class:`Job` (the network with its dense weights, the data, the
plan, the pipeline settings and how the packed file rebuilds the network) and returns a
:class:`Compressed`: every stage's figures, the metrics a trial records, the packed file and the
pruned state it passed through. A caller that keeps pruned states (a study's stage cache, the
rungs of successive halving) hands one in to skip the prune phase.

The one-shot verb :func:`compress` says what to compress in one of two ways:

* :class:`FromSettings`: an exported settings file (``admmsearch export``): the trial's study,
  pipeline and plan, run once from the study's (cached) dense model, like a trial.
* :class:`FromModel`: a model and dataset by name, trained here with settings that suit the
  small reference models, compressed to a plan (a plan file, or one keep ratio and bit width
  for every layer).

Example::

    done = compress(FromModel(plan=read_plan("plan.yaml")), Path("model.admm"))
    print(done.metrics[Metric.STORAGE_BITS], done.info.file_bytes)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import StudyConfig, study_data
from .config.loading import read_yaml
from .data import DataSplits, load_dataset
from .dense import build_model, dense_model, packed_meta
from .errors import ConstraintError, LayerError, PackError
from .locations import resolve_cache_dir
from .metrics import Reference, trial_metrics
from .models import compressible_layers, create_model
from .packed import ModelMeta, PackInfo, encode_model
from .pipeline import (
    PipelineHooks,
    PipelineResult,
    PrunedState,
    check_plan,
    dense_stage,
    extend_retraining,
    fold_stage,
    network,
    prune_phase,
    quantize_phase,
    timed,
)
from .plan import LayerPlan, Plan
from .preflight import check_checkpoint, check_device
from .settings import (
    AdmmSettings,
    PipelineSettings,
    QuantRetrainSettings,
    RhoSchedule,
    TrainSettings,
)
from .settings_file import read_settings
from .timing import part

__all__ = [
    "Compressed",
    "FromModel",
    "FromSettings",
    "Job",
    "compress",
    "compress_dense",
    "read_plan",
    "reference_settings",
    "reproduce",
]

OnEpoch = Callable[[str, int, float], None]


@dataclass(frozen=True)
class Job:
    """One compression from the dense model, as plain objects (checked already).

    Attributes:
        model: the network, its dense weights loaded (trained by ``settings.pretrain`` first
            when that is set); compressed in place.
        data: train / validation / test splits.
        plan: per-layer settings.
        settings: the pipeline's stages.
        meta: how the packed file rebuilds the network (``folded`` is set from the run).
        layers: layer patterns (None: every convolution and linear layer).
        device: where to train.
        dense: the dense model's accuracy that drops are measured from; None: the dense
            stage's own.
    """

    model: nn.Module
    data: DataSplits
    plan: Plan
    settings: PipelineSettings
    meta: ModelMeta
    layers: list[str] | None = None
    device: str = "cpu"
    dense: Reference | None = None


@dataclass(frozen=True)
class Compressed:
    """What one compression did.

    Attributes:
        result: every stage's figures, the storage accounting and the plan.
        metrics: the figures a trial records (:class:`~admmsearch.record.Metric`), finite ones.
        model: the compressed network, on the CPU.
        packed: the packed file's bytes (the model rebuilds from them alone).
        info: the packed file's size and its split into header and payload; ``info.path`` is
            where it was written (None before it is).
        pruned: the state after the prune phase (given, or made by this run).
        document: with a settings file, its content (study, trial and the exported metrics
            the reproduction can be held against); else None.
    """

    result: PipelineResult
    metrics: dict[str, float]
    model: nn.Module
    packed: bytes
    info: PackInfo
    pruned: PrunedState | None = None
    document: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: stages, storage, metrics and the packed file's size."""
        stages = [
            {
                "stage": s.name,
                "val_accuracy": s.val_accuracy,
                "test_accuracy": s.test_accuracy,
                "seconds": s.seconds,
            }
            for s in self.result.stages
        ]
        return {
            "stages": stages,
            "storage": self.result.storage.summary(),
            "metrics": self.metrics,
            "uncompressed_layers": dict(self.result.uncompressed),
            "folded_batchnorm": [list(p) for p in self.result.folding.pairs],
            "file": None if self.info.path is None else str(self.info.path),
            "file_bytes": self.info.file_bytes,
            "header_bytes": self.info.header_bytes,
        }


def compress_dense(
    job: Job,
    *,
    hooks: PipelineHooks | None = None,
    pruned: PrunedState | None = None,
    more_retraining: Sequence[tuple[str, TrainSettings]] = (),
) -> Compressed:
    """Compress ``job.model`` to ``job.plan`` and pack it: the dense stage, BatchNorm folding,
    the prune phase (skipped when ``pruned``, a state of the same model, data, pruning plan and
    pruning stages, is given), each ``(stage name, settings)`` of ``more_retraining`` on the
    pruned model's masks (a setting continued to longer rungs of successive halving,
    :func:`admmsearch.fidelity.rung_chain`), the quantize phase, then the packed file and the
    metrics.

    Raises:
        LayerError, ConstraintError: the plan does not fit the model.
        DivergenceError: a stage diverged.
        PackError: the model cannot be packed.
    """
    s = job.settings
    net = network(
        job.model, job.data, job.plan, s, layer_patterns=job.layers, device=job.device, hooks=hooks
    )
    known = None if job.dense is None else (job.dense.val_accuracy, job.dense.test_accuracy)
    with timed(job.device):
        dense = dense_stage(net, s, known)
        folding = fold_stage(net, s)
        pruned = pruned or prune_phase(net, job.plan, s, dense)
        for name, more in more_retraining:
            pruned = extend_retraining(net, pruned, more, name)
        result = quantize_phase(net, job.plan, s, pruned, folding)
        model = net.model.cpu()
        meta = dataclasses.replace(job.meta, folded=bool(folding.pairs))
        with part("pack"):
            packed, info = encode_model(
                model, list(net.layers), s.index_format, meta, result.storage
            )
    metrics = _finite(trial_metrics(result, job.dense or result.dense, info))
    return Compressed(result, metrics, model, packed, info, pruned)


@dataclass(frozen=True)
class FromSettings:
    """An exported settings file; ``cache_dir`` is where the study's dense model is cached
    (None: ``$ADMMSEARCH_CACHE_DIR``, else ``.admmsearch/cache``, as for the study)."""

    path: Path
    cache_dir: Path | None = None


@dataclass(frozen=True)
class FromModel:
    """A model and dataset by name (as a study names them), trained with ``settings`` (None:
    :func:`reference_settings`, which suit the small reference models) and compressed to
    ``plan``; without a plan, every compressible layer keeps ``keep`` of its weights on
    ``bits`` bits. ``plan_file``, where the plan was read from, is named when it does not fit
    the model."""

    model: str = "digits-cnn"
    dataset: str = "digits"
    plan: Plan | None = None
    plan_file: Path | None = None
    keep: float = 0.1
    bits: int | None = 4
    seed: int = 0
    settings: PipelineSettings | None = None


def compress(
    source: FromSettings | FromModel,
    out: Path,
    *,
    device: str | None = None,
    on_epoch: OnEpoch | None = None,
) -> Compressed:
    """Compress as ``source`` says and write the packed model to ``out``.

    ``device``: where to train (None: the settings file's device, else the CPU).

    Raises:
        ConfigError: a bad settings file, plan, device or name; before any training.
        PackError: ``out`` cannot be written.
    """
    if device is not None:
        check_device(device, "--device")
    hooks = PipelineHooks(on_epoch=on_epoch)
    if isinstance(source, FromSettings):
        done = _from_settings(source, device, hooks)
    else:
        done = _from_model(source, device or "cpu", hooks)
    try:
        out.write_bytes(done.packed)
    except OSError as exc:
        raise PackError(f"cannot write packed model {out}: {exc}") from None
    return dataclasses.replace(done, info=dataclasses.replace(done.info, path=out))


def read_plan(path: Path) -> Plan:
    """A plan file: YAML ``layers: {name: {keep, bits | clusters, structured}}``, read by the
    rules every YAML file of admmsearch follows (``1e-3`` is a number; repeated keys refused).

    Raises:
        ConfigError: one line naming the file, and the field when one is bad.
    """
    return Plan.from_dict(read_yaml(path, "plan file"), str(path))


def reference_settings(seed: int) -> PipelineSettings:
    """Stage settings that suit the small reference models (a few minutes on a CPU)."""
    admm = AdmmSettings(
        train=TrainSettings(epochs=8, lr=0.02, batch_size=32),
        rho=RhoSchedule(start=1e-2, end=1.0, updates=32),
    )
    return PipelineSettings(
        pretrain=TrainSettings(epochs=15, lr=0.05, batch_size=32),
        admm_prune=admm,
        retrain=TrainSettings(epochs=4, lr=0.01, batch_size=32),
        admm_quantize=admm,
        quant_retrain=QuantRetrainSettings(train=TrainSettings(epochs=2, lr=0.005, batch_size=32)),
        seed=seed,
    )


def _from_settings(source: FromSettings, device: str | None, hooks: PipelineHooks) -> Compressed:
    file = read_settings(source.path)
    cache = resolve_cache_dir(file.config, source.cache_dir, ".admmsearch")
    done = reproduce(
        file.config,
        file.layers,
        file.plan,
        file.pipeline,
        cache_dir=cache,
        device=device,
        hooks=hooks,
        more_retraining=file.more_retraining,
    )
    return dataclasses.replace(done, document=file.document)


def reproduce(
    config: StudyConfig,
    layers: list[str],
    plan: Plan,
    pipeline: PipelineSettings,
    *,
    cache_dir: Path,
    device: str | None = None,
    hooks: PipelineHooks | None = None,
    more_retraining: Sequence[tuple[str, TrainSettings]] = (),
) -> Compressed:
    """Run a fixed study's ``plan`` and ``pipeline`` once from its (cached) dense model, like a
    trial does (with ``more_retraining`` as a promoted trial of successive halving added it:
    :func:`compress_dense`); nothing is written but the dense cache.

    The result's ``dense`` stage reports the seconds spent getting the dense model (training
    it, or reading the cache or checkpoint).
    """
    if device is not None:
        config = config.model_copy(update={"device": device})
    check_device(config.device, "--device" if device is not None else "device")
    data = study_data(config)
    check_checkpoint(config, data)
    dense = dense_model(config, data, cache_dir, layers)
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    meta = packed_meta(config, data)
    job = Job(model, data, plan, pipeline, meta, list(layers), config.device, dense)
    done = compress_dense(job, hooks=hooks, more_retraining=more_retraining)
    first, *rest = done.result.stages
    stages = (dataclasses.replace(first, seconds=dense.seconds), *rest)
    return dataclasses.replace(done, result=dataclasses.replace(done.result, stages=stages))


def _from_model(source: FromModel, device: str, hooks: PipelineHooks) -> Compressed:
    """Train ``source.model`` on ``source.dataset`` (the dense stage) and compress it."""
    every = LayerPlan.parse({"keep": source.keep, "bits": source.bits}, "every layer")
    torch.manual_seed(source.seed)
    data = load_dataset(source.dataset, seed=source.seed)
    model = create_model(source.model, num_classes=data.num_classes, input_shape=data.input_shape)
    plan = source.plan or Plan(layers=dict.fromkeys(compressible_layers(model), every))
    settings = source.settings or reference_settings(source.seed)
    _check_plan_file(model, plan, source.plan_file)
    meta = ModelMeta(
        model=source.model,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        normalisation=data.normalisation,
    )
    return compress_dense(Job(model, data, plan, settings, meta, device=device), hooks=hooks)


def _check_plan_file(model: nn.Module, plan: Plan, path: Path | None) -> None:
    """The plan against the model's layers and shapes, before any training; errors name the
    plan file."""
    try:
        check_plan(model, plan)
    except (ConstraintError, LayerError) as exc:
        if path is None:
            raise
        raise type(exc)(f"{path}: {exc}") from None


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }
