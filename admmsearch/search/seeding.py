"""A new study's first step: the sensitivity pass, then trials seeded from it by budget.

:func:`study_sensitivity` measures the study's units on its dense model (cached under the dense
model's fingerprint, so every worker reuses one measurement) and logs the table and its plots
to the study's MLflow parent run (artifact folder ``sensitivity/``, metric
``sensitivity_seconds``). :func:`seeds` turns the table into trials: for ``sensitivity.budgets``
storage budgets log-spaced over the storage the search space spans, the exact allocator
(:mod:`.allocation`) picks for each unit the keep ratio and levels of its grid that
lose the least predicted accuracy within the budget. Each becomes an enqueued trial whose
``seeded`` user attribute records its budget and predictions; the sampler draws whatever the
seed does not set (global knobs such as ``lr``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import StudyConfig, UnitSpace, is_searched, unit_spaces
from ..dense import build_model
from ..record import StudyAttr, TrialAttr, kib
from .allocation import Allocation, Option, allocate_many, log_budgets
from .sensitivity import Finetune, Sensitivity, cached_sensitivity
from .sensitivity.plot import write_sensitivity

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = [
    "Seed",
    "dense_on",
    "log_sensitivity",
    "seed_count",
    "seeds",
    "study_seeds",
    "sensitivity_finetune",
    "study_sensitivity",
    "unit_options",
]


@dataclass(frozen=True)
class Seed:
    """One seeded trial: the params to enqueue and its ``seeded`` user attribute."""

    params: dict[str, Any]
    attrs: dict[str, Any]


def study_sensitivity(ctx: StudyContext) -> Sensitivity:
    """The study's sensitivity table (measured once, then from the cache), logged once to the
    study's parent run."""
    config = ctx.config
    result = cached_sensitivity(
        ctx.cache_dir,
        config.fingerprint_dense(),
        dense_on(ctx),
        ctx.data.to(config.device),
        unit_spaces(config, ctx.layers),
        keep_points=config.sensitivity.keep_points,
        samples=config.sensitivity.samples,
        index_format=config.pipeline.index_format,
        finetune=sensitivity_finetune(config),
    )
    if ctx.study.user_attrs.get(StudyAttr.SENSITIVITY) != result.key:
        log_sensitivity(ctx, result)
        ctx.study.set_user_attr(StudyAttr.SENSITIVITY, result.key)
    return result


def sensitivity_finetune(config: StudyConfig) -> Finetune | None:
    """The masked fine-tune of ``sensitivity.finetune_steps``, at the learning rate and batch
    size of the retraining stage (else of the dense training); None for 0 steps."""
    steps = config.sensitivity.finetune_steps
    if steps == 0:
        return None
    train = config.pipeline.retrain or config.dense.train
    return Finetune(steps=steps, lr=train.lr, batch_size=train.batch_size, seed=config.seed)


def log_sensitivity(ctx: StudyContext, result: Sensitivity) -> None:
    """The table, PNG and HTML into the parent run's ``sensitivity/`` folder, and its time."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_sensitivity(result, Path(tmp)):
            ctx.tracker.log_file(ctx.parent_run, path, "sensitivity")
    ctx.tracker.log(
        ctx.parent_run,
        metrics={"sensitivity_seconds": result.seconds, "sensitivity_rows": len(result.rows)},
    )


def seed_count(config: StudyConfig) -> int:
    """Trials to seed: ``sensitivity.budgets``, at most half of a trial budget."""
    count = config.sensitivity.budgets if config.search.seed_from_sensitivity else 0
    trials = config.budget.trials
    return count if trials is None else min(count, trials // 2)


def study_seeds(ctx: StudyContext) -> list[Seed]:
    """The seeded trials of a new study; none for a study that has trials or seeds none.

    The sensitivity pass runs here, outside the storage lock, so workers starting together
    wait on its cache file rather than on the storage.
    """
    count = seed_count(ctx.config)
    if count == 0 or ctx.study.get_trials(deepcopy=False):
        return []
    return seeds(study_sensitivity(ctx), ctx.config, ctx.layers, count)


def unit_options(result: Sensitivity, units: Sequence[UnitSpace]) -> list[list[Option]]:
    """Each unit's grid points that the search space allows, as allocator options: storage as
    measured and loss = dense accuracy - accuracy (the unit alone compressed)."""
    frame = result.frame()
    out = []
    for unit in units:
        rows = frame[(frame["unit"] == unit.name) & frame["in_space"]]
        out.append(
            [
                Option(
                    unit.name,
                    int(r.storage_bits),
                    float(r.accuracy_drop),
                    (float(r.keep), None if _missing(r.levels) else int(r.levels)),
                )
                for r in rows.itertuples()
            ]
        )
    return out


def _missing(value: Any) -> bool:
    return value is None or value != value  # None, or NaN from a pandas column


def seeds(
    result: Sensitivity, config: StudyConfig, layers: Sequence[str], count: int
) -> list[Seed]:
    """Up to ``count`` seeded trials, smallest budget first; budgets that pick a setting an
    earlier one picked are dropped."""
    units = unit_spaces(config, layers)
    options = unit_options(result, units)
    budgets = log_budgets(options, count, result.fixed_bits)
    out: list[Seed] = []
    for allocation in allocate_many(options, budgets, result.fixed_bits):
        if allocation is None:
            continue
        params = _params(units, allocation)
        if params and all(params != s.params for s in out):
            out.append(Seed(params, {TrialAttr.SEEDED: _attrs(allocation, result)}))
    return out


def _params(units: Sequence[UnitSpace], allocation: Allocation) -> dict[str, Any]:
    """The searched knobs an allocation sets (fixed ones are not params)."""
    params: dict[str, Any] = {}
    for unit, option in zip(units, allocation.options, strict=True):
        keep, levels = option.setting
        if is_searched(unit.keep):
            params[unit.keep_param] = keep
        if is_searched(unit.levels):
            params[unit.levels_param] = levels
    return params


def _attrs(allocation: Allocation, result: Sensitivity) -> dict[str, float]:
    return {
        "budget_bits": allocation.budget_bits,
        "budget_kib": round(kib(allocation.budget_bits), 3),
        "predicted_storage_bits": allocation.storage_bits,
        "predicted_val_accuracy": result.dense_val_accuracy - allocation.loss,
    }


def dense_on(ctx: StudyContext) -> torch.nn.Module:
    """A copy of the study's dense model on its device."""
    model = build_model(ctx.config, ctx.data).to(ctx.config.device)
    model.load_state_dict(ctx.dense.state)
    return model
