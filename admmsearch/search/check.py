"""Everything checkable about a study before any training, in one place: ``run`` and
``worker`` make these checks before they create anything (:func:`preflight`), and ``admmsearch
check`` makes them and says what the study will do (:func:`check_study`): its compressible
layers with their weight counts and search ranges, the data, the budget, and an estimate of its
cost in epochs and in time, from a timed training batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import StudyConfig, dense_settings, study_data, unit_spaces
from ..data import DataSplits, batches
from ..dense import build_model
from ..locations import cache_setting, resolve_cache_dir, resolve_storage, resolve_tracking
from ..preflight import (
    check_checkpoint,
    check_constraints,
    check_device,
    check_model,
    check_splits,
    check_stores,
    check_validation_size,
)
from ..redact import redact_url
from .reuse import check_reuse
from .sampling import startup_trials
from .schedule import Budget, Schedule, check_fits, epochs_text, study_budget
from .seeding import knee_placement, prior_count, seed_room

__all__ = [
    "LayerRow",
    "StudyCheck",
    "check_study",
    "preflight",
    "schedule_facts",
    "study_folders",
]


def study_folders(
    config: StudyConfig, cache_dir: str | Path | None, workdir: str | Path
) -> dict[str, Path]:
    """The folders a study writes besides its stores, each named for messages."""
    cache = resolve_cache_dir(config, cache_dir, workdir)
    return {
        f"cache folder {cache} ({cache_setting(config, cache_dir)})": cache,
        f"work folder {workdir}": Path(workdir),
    }


def preflight(
    config: StudyConfig,
    layers: list[str],
    storage: str,
    tracking_uri: str | None,
    folders: Mapping[str, Path],
) -> DataSplits:
    """The checks of :mod:`admmsearch.preflight` in order, then a study of the same name with
    another definition (:mod:`.reuse`); returns the loaded data. Nothing is created.

    Raises:
        AdmmSearchError: the first check that fails, naming the setting, file or store.
    """
    check_stores(config, storage, tracking_uri, folders)
    check_device(config.device)
    data = study_data(config)
    check_splits(config, data)
    check_validation_size(config, data)
    check_model(config, data)
    check_checkpoint(config, data)
    check_constraints(config, data, layers)
    check_reuse(config, layers, storage)
    return data


@dataclass(frozen=True)
class LayerRow:
    """One unit of the search: its layers, weights, and the keep and levels it searches."""

    unit: str
    layers: str
    weights: int
    keep: str
    levels: str


@dataclass(frozen=True)
class StudyCheck:
    """A study file checked: what the study compresses, on what data, within what budget,
    and what it is likely to cost (``epochs`` of training, ``seconds`` estimated from a timed
    training batch; the dense model's training, when it is not cached yet, included), and how
    it will spend them (``schedule``: :func:`schedule_facts`)."""

    name: str
    model: str
    storage: str
    tracking_uri: str
    samples: dict[str, int]
    input_shape: tuple[int, ...]
    classes: int
    units: tuple[LayerRow, ...]
    budget: dict[str, Any]
    epochs: int | None
    epoch_seconds: float
    seconds: float | None
    schedule: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_study(
    config: StudyConfig,
    layers: list[str],
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    cache_dir: str | Path | None = None,
    workdir: str | Path = ".admmsearch",
    budget: Budget | None = None,
    given: Sequence[str] = (),
) -> StudyCheck:
    """Make every check ``run`` makes before training (:func:`preflight`) and say what the
    study will do; nothing is created or trained. ``budget``: the run's (``--trials``,
    ``--epochs`` and ``--timeout`` over the study file's, :func:`.schedule.study_budget`; None:
    the file's); ``given``: which of ``trials`` and ``epochs`` the command line gave.

    Raises:
        AdmmSearchError: a check failed; the same message ``run`` gives.
    """
    budget = budget or study_budget(config)
    check_fits(config, layers, budget, given)
    url = resolve_storage(config, storage)
    data = preflight(config, layers, url, tracking_uri, study_folders(config, cache_dir, workdir))
    model = build_model(config, data)
    epochs = _epochs(config, layers, budget)
    per_epoch = _epoch_seconds(model, data, config)
    return StudyCheck(
        name=config.name,
        model=config.model.name,
        storage=redact_url(url),
        tracking_uri=redact_url(resolve_tracking(config, tracking_uri, create=False)),
        samples={"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)},
        input_shape=tuple(data.input_shape),
        classes=data.num_classes,
        units=_units(config, layers, model),
        budget={k: v for k, v in asdict(budget).items() if v is not None},
        epochs=epochs,
        epoch_seconds=per_epoch,
        seconds=None if epochs is None else epochs * per_epoch,
        schedule=schedule_facts(config, layers, budget),
    )


def schedule_facts(
    config: StudyConfig, layers: list[str], budget: Budget | None = None
) -> dict[str, str]:
    """How the study will spend its budget, as ``check`` says it: its first trials (the
    file's ``enqueue``, the allocation priors, the sensitivity seeds), then the sampler, and
    with ``search.rungs`` the rungs (settings screened, epochs each rung adds, the best
    ``1/eta`` continued), under ``budget`` (None: the study file's). Epochs are the pipeline as
    written (searched epoch knobs change them)."""
    first = [f"{len(config.enqueue)} from the study file's enqueue"] if config.enqueue else []
    priors, planned, knee = config.search.priors, prior_count(config), knee_placement(config)
    if priors is not None and planned:
        how = (
            "each placed as the study runs, bisecting for the most compressed target that "
            "meets the constraints (the knee), each target probed first by the family whose "
            "prior there is most accurate pruned without training"
            if knee
            else "queued when the study starts"
        )
        first.append(
            f"{'up to ' if knee else ''}{planned} allocation "
            f"prior{'s' if planned > 1 else ''} "
            f"({', '.join(priors.families)}) at {priors.targets} storage targets log-spaced "
            f"over the search space, {how}"
        )
    seeds = seed_room(config, planned)
    if seeds > 0:
        first.append(f"up to {seeds} seeded from the sensitivity pass")
    facts = {"first trials": "; ".join(first) if first else "none"}
    sampler = config.sampler.name
    guided = ""
    if sampler in ("tpe", "gp"):
        startup = startup_trials(config)
        guided = f", at random until {startup} trials have finished, the first trials among them"
    facts["then"] = f"the {sampler} sampler{guided}"
    schedule = Schedule(config, layers, budget or study_budget(config))
    if schedule.rungs is not None:
        facts["rungs"] = _rungs_fact(schedule)
    return facts


def _units(config: StudyConfig, layers: list[str], model: torch.nn.Module) -> tuple:
    modules = dict(model.named_modules())
    rows = []
    for unit in unit_spaces(config, layers):
        weights = sum(modules[n].weight.numel() for n in unit.layers)
        levels = _knob(unit.levels) if unit.levels is not None else "float32"
        name = ", ".join(unit.layers)
        rows.append(LayerRow(unit.name, name, weights, _knob(unit.keep), levels))
    return tuple(rows)


def _knob(spec: Any) -> str:
    """A knob as a person reads it: a value, ``low..high`` (log), or the choices."""
    if hasattr(spec, "choices"):
        return "/".join("float32" if c is None else f"{c:g}" for c in spec.choices)
    if hasattr(spec, "low"):
        scale = " (log)" if spec.log else ""
        return f"{spec.low:g}..{spec.high:g}{scale}"
    return "float32" if spec is None else f"{spec:g}"


def _epochs(config: StudyConfig, layers: list[str], budget: Budget) -> int | None:
    """Training epochs the study will run (:meth:`.schedule.Schedule.planned_epochs`), the
    dense model's training on top; None with a time budget alone."""
    planned = Schedule(config, layers, budget).planned_epochs()
    if planned is None:
        return None
    return planned + (0 if config.dense.checkpoint else dense_settings(config).epochs)


def _epoch_seconds(model: torch.nn.Module, data: DataSplits, config: StudyConfig) -> float:
    """One epoch's training time: the median of five timed training batches (after one that
    warms up) times the batches of an epoch."""
    s = dense_settings(config)
    device = torch.device(config.device)
    model, splits = model.to(device).train(), data.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    loader = batches(splits.x_train, splits.y_train, s.batch_size, shuffle=False)
    seconds = []
    with torch.random.fork_rng(devices=[]):
        for _, (x, y) in zip(range(6), loader, strict=False):
            start = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
    timed = sorted(seconds[1:] or seconds)
    return timed[len(timed) // 2] * math.ceil(len(splits.y_train) / s.batch_size)


def _rungs_fact(schedule: Schedule) -> str:
    """The rungs line: the settings screened at rung 0, what each rung adds, the front's."""
    r, costs = schedule.rungs, schedule.rung_costs()
    added = ", ".join(f"rung {k} adds {epochs_text(c)}" for k, c in enumerate(costs) if k > 0)
    quota = schedule.quota
    screened = "settings" if quota is None else f"about {quota} setting{'s' * (quota != 1)}"
    first = quota is not None and schedule.screens_first
    order = "all before any promotion" if first else "each promoted as soon as it may go up"
    return (
        f"{r.count} (eta {r.eta}): {screened} screened at rung 0 ({epochs_text(costs[0])} "
        f"each), {order}; the best 1/{r.eta} of each rung continued ({added}); "
        f"the front is rung {r.top}'s"
    )
