"""Compress once, without search: one verb for both ways of saying what to compress.

* :class:`FromSettings`: an exported settings file (``admmsearch export``): the trial's
  study, pipeline and plan, run once from the study's (cached) dense model, like a trial.
* :class:`FromModel`: a model and dataset by name, trained here with settings that suit the
  small reference models, compressed to a plan (a plan file, or one keep ratio and bit width
  for every layer).

Both give a :class:`Compressed`: the pipeline's figures, the metrics a trial records and the
packed file, written to ``out``.

Example::

    done = compress(FromModel(plan=read_plan("plan.yaml")), Path("model.admm"))
    print(done.metrics[Metric.STORAGE_BITS], done.info.file_bytes)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import build_model, dense_model, packed_meta
from .config import StudyConfig
from .config.loading import read_yaml
from .data import load_dataset
from .errors import ConstraintError, LayerError, PackError
from .export import read_settings
from .models import compressible_layers, create_model
from .objective import trial_metrics
from .packing import ModelMeta, PackInfo, encode_model
from .pipeline import PipelineHooks, PipelineResult, check_plan, run_pipeline
from .plan import LayerPlan, Plan
from .preflight import check_checkpoint, check_device
from .search_space import settings_from_params
from .settings import (
    AdmmSettings,
    PipelineSettings,
    QuantRetrainSettings,
    RhoSchedule,
    TrainSettings,
)
from .study import resolve_cache_dir

__all__ = [
    "Compressed",
    "FromModel",
    "FromSettings",
    "compress",
    "read_plan",
    "reference_settings",
    "reproduce",
]

OnEpoch = Callable[[str, int, float], None]


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
        document: with a settings file, its content (study, trial and the exported metrics
            the reproduction can be held against); else None.
    """

    result: PipelineResult
    metrics: dict[str, float]
    model: nn.Module
    packed: bytes
    info: PackInfo
    document: Mapping[str, Any] | None = None


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
    if isinstance(source, FromSettings):
        config, layers, doc = read_settings(source.path)
        cache = resolve_cache_dir(config, source.cache_dir, ".admmsearch")
        done = reproduce(config, layers, cache_dir=cache, device=device, on_epoch=on_epoch)
        done = dataclasses.replace(done, document=doc)
    else:
        done = _compress_model(source, device or "cpu", on_epoch)
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


def reproduce(
    config: StudyConfig,
    layers: list[str],
    *,
    cache_dir: Path,
    device: str | None = None,
    on_epoch: OnEpoch | None = None,
) -> Compressed:
    """Run the fixed study's pipeline once from its (cached) dense model, like a trial does;
    nothing is written but the dense cache.

    The result's ``dense`` stage reports the seconds spent getting the dense model (training
    it, or reading the cache or checkpoint).
    """
    if device is not None:
        config = config.model_copy(update={"device": device})
    check_device(config.device, "--device" if device is not None else "device")
    d = config.dataset
    data = load_dataset(d.name, seed=config.seed, **d.load_options())
    check_checkpoint(config, data)
    dense = dense_model(config, data, cache_dir, layers)
    settings = settings_from_params({}, config, layers)
    model = build_model(config, data)
    model.load_state_dict(dense.state)
    result = run_pipeline(
        model,
        data,
        settings.plan,
        settings.pipeline,
        layer_patterns=list(layers),
        device=config.device,
        hooks=PipelineHooks(on_epoch=on_epoch),
        dense_accuracy=(dense.val_accuracy, dense.test_accuracy),
    )
    first, *rest = result.stages
    result = dataclasses.replace(
        result, stages=(dataclasses.replace(first, seconds=dense.seconds), *rest)
    )
    model = model.to(torch.device("cpu"))
    meta = packed_meta(config, data, result)
    packed, info = encode_model(
        model, layers, settings.pipeline.index_format, meta, result.storage
    )
    return Compressed(result, _finite(trial_metrics(result, dense, info)), model, packed, info)


def _compress_model(source: FromModel, device: str, on_epoch: OnEpoch | None) -> Compressed:
    """Train ``source.model`` on ``source.dataset`` and compress it to its plan."""
    every = LayerPlan.parse({"keep": source.keep, "bits": source.bits}, "every layer")
    torch.manual_seed(source.seed)
    data = load_dataset(source.dataset, seed=source.seed)
    model = create_model(source.model, num_classes=data.num_classes, input_shape=data.input_shape)
    plan = source.plan
    if plan is None:
        plan = Plan(layers=dict.fromkeys(compressible_layers(model), every))
    settings = reference_settings(source.seed) if source.settings is None else source.settings
    _check_plan_file(model, plan, source.plan_file)
    result = run_pipeline(
        model,
        data,
        plan,
        settings,
        device=device,
        hooks=PipelineHooks(on_epoch=on_epoch),
    )
    meta = ModelMeta(
        model=source.model,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        folded=bool(result.folding.pairs),
        normalisation=data.normalisation,
    )
    model = model.cpu()
    names = [s.name for s in result.storage.layers]
    index = result.storage.index_format
    packed, info = encode_model(model, names, index, meta=meta, report=result.storage)
    metrics = _finite(trial_metrics(result, result.dense, info))
    return Compressed(result, metrics, model, packed, info)


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
