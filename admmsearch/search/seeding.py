"""A new study's first trials: zero-cost allocation priors, then trials seeded from the
sensitivity pass by budget.

:func:`study_sensitivity` measures the study's units on its dense model (cached under the dense
model's fingerprint, so every worker reuses one measurement) and logs the table and its plots
to the study's MLflow parent run (artifact folder ``sensitivity/``, metric
``sensitivity_seconds``). :func:`seeds` turns the table into trials: for ``sensitivity.budgets``
storage budgets log-spaced over the storage the search space spans, the exact allocator
(:mod:`.allocation`) picks for each unit the keep ratio and levels of its grid that
lose the least predicted accuracy within the budget. Each becomes an enqueued trial whose
``seeded`` user attribute records its budget and predictions; the sampler draws whatever the
seed does not set (global knobs such as ``lr``).

With ``search.priors``, :func:`study_priors` comes first: each family of
:mod:`admmsearch.search.priors` at ``search.priors.targets`` storage targets log-spaced over the
storage the priors reach, as enqueued trials whose ``prior`` user attribute records the family,
the target and any unit whose keep was clipped to its range. :func:`first_trials` puts the two
together: priors first, then seeds, at most half of ``budget.trials`` in all, no setting twice.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from optuna.trial import FrozenTrial

from ..config import StudyConfig, UnitSpace, is_searched, unit_spaces
from ..dense import build_model
from ..fold import fold_batchnorm
from ..record import StudyAttr, TrialAttr, kib
from .allocation import Allocation, Option, allocate, allocate_many, log_budgets
from .priors import (
    DenseLayers,
    Prior,
    PriorProblem,
    prior_at_storage,
    prior_order,
    storage_range,
    storage_targets,
    unit_levels,
)
from .priors.oneshot import one_shot_scorer
from .priors.placement import Placed, next_placement
from .schedule import Schedule, study_budget
from .sensitivity import Finetune, Sensitivity, cached_sensitivity
from .sensitivity.plot import write_sensitivity

if TYPE_CHECKING:
    from .context import StudyContext

__all__ = [
    "PriorPlanner",
    "Seed",
    "dense_on",
    "family_prior",
    "first_trials",
    "first_trials_cap",
    "knee_placement",
    "prior_planner",
    "log_sensitivity",
    "prior_count",
    "prior_problem",
    "prior_seed",
    "prior_seeds",
    "seed_count",
    "seed_room",
    "seeds",
    "sensitivity_finetune",
    "sensitivity_prior",
    "study_priors",
    "study_seeds",
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
        on_unit=ctx.events.sensitivity_unit,
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
        for path in write_sensitivity(result, Path(tmp), html=True):
            ctx.tracker.log_file(ctx.parent_run, path, "sensitivity")
    ctx.tracker.log(
        ctx.parent_run,
        metrics={"sensitivity_seconds": result.seconds, "sensitivity_rows": len(result.rows)},
    )


def first_trials_cap(config: StudyConfig) -> int | None:
    """Priors and seeded trials together: at most half of the settings the budget pays for
    (None: no cap, a budget of time alone). A trial budget pays for ``budget.trials``; an
    epoch budget for ``budget.epochs`` over a setting's epochs (the pipeline as written; with
    successive halving, over what a screened setting costs with the best ``1/eta`` of each
    rung continued, :func:`.rungs.screening_quota`), so that an epoch budget too leaves half
    of its settings to the sampler.

    With ``search.priors.placement: knee`` the priors are themselves a search (each placed
    from the outcomes of those before it), so they may take all but a third of the settings
    and the study file's ``enqueue`` (at least one setting is left to the sampler): 4 of 5,
    14 of 20; 3 of 5 after one enqueued setting."""
    settings = _settings(config)
    if settings is None:
        return None
    if knee_placement(config):
        return max(0, settings - max(1, settings // 3) - len(config.enqueue))
    return settings // 2


def knee_placement(config: StudyConfig) -> bool:
    """The study places its priors as it runs (``search.priors.placement: knee``)."""
    priors = config.search.priors
    return priors is not None and priors.placement == "knee"


def _settings(config: StudyConfig) -> int | None:
    """The settings the budget pays for (None: no limit): its trials and its epochs over a
    setting's epochs, the fewer; with rungs, the screening quota (a trial budget counts the
    promotions' trials too, so it pays for fewer settings than trials)."""
    b = config.budget
    schedule = Schedule(config, [], study_budget(config))
    if schedule.rungs is not None:
        return schedule.quota
    per_setting = max(schedule.rung_costs()[0], 1)
    in_epochs = None if b.epochs is None else b.epochs // per_setting
    counts = [n for n in (b.trials, in_epochs) if n is not None]
    return min(counts) if counts else None


def seed_count(config: StudyConfig) -> int:
    """Trials to seed: ``sensitivity.budgets``, at most half of a trial budget."""
    count = config.sensitivity.budgets if config.search.seed_from_sensitivity else 0
    cap = first_trials_cap(config)
    return count if cap is None else min(count, cap)


def seed_room(config: StudyConfig, priors: int) -> int:
    """Seeded trials a new study runs after ``priors`` prior trials: :func:`seed_count`,
    within what :func:`first_trials_cap` leaves them."""
    cap = first_trials_cap(config)
    return seed_count(config) if cap is None else min(seed_count(config), cap - priors)


def prior_count(config: StudyConfig) -> int:
    """Prior trials to enqueue, at most: every family at every target (``search.priors``), at
    most half of a trial budget; 0 without priors."""
    priors = config.search.priors
    count = 0 if priors is None else len(priors.families) * priors.targets
    cap = first_trials_cap(config)
    return count if cap is None else min(count, cap)


def first_trials(ctx: StudyContext) -> list[Seed]:
    """A new study's first trials after its ``enqueue``: the priors (:func:`study_priors`),
    then the seeded trials (:func:`study_seeds`) in the room the priors leave within
    :func:`first_trials_cap`, a seed that repeats a prior's setting dropped; none for a study
    that has trials. With knee placement the priors are not queued here (a
    :class:`PriorPlanner` places them as the study runs) but their room is kept."""
    if ctx.study.get_trials(deepcopy=False):
        return []
    knee = knee_placement(ctx.config)
    priors = [] if knee else study_priors(ctx)
    planned = prior_count(ctx.config) if knee else len(priors)
    seeded = study_seeds(ctx, seed_room(ctx.config, planned))
    return priors + [s for s in seeded if all(s.params != p.params for p in priors)]


def study_seeds(ctx: StudyContext, count: int | None = None) -> list[Seed]:
    """The seeded trials of a new study (``count``, default :func:`seed_count`); none for a
    study that has trials or seeds none.

    The sensitivity pass runs here, outside the storage lock, so workers starting together
    wait on its cache file rather than on the storage.
    """
    count = seed_count(ctx.config) if count is None else count
    if count <= 0 or ctx.study.get_trials(deepcopy=False):
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


# --- zero-cost allocation priors as first trials ---


def study_priors(ctx: StudyContext) -> list[Seed]:
    """The prior trials of a new study (:func:`prior_count` of them at most); none without
    ``search.priors``. The sensitivity pass runs (once, cached) where the ``sensitivity``
    family is among those the priors reach or a unit's bits are searched: it chooses the bits
    of the others."""
    config = ctx.config
    count, priors = prior_count(config), config.search.priors
    if count == 0 or priors is None or ctx.study.get_trials(deepcopy=False):
        return []
    problem, table = _study_problem(ctx, count)
    return prior_seeds(problem, table, priors.families, priors.targets, count)


def _study_problem(ctx: StudyContext, count: int) -> tuple[PriorProblem, Sensitivity | None]:
    """The study's prior problem and, where its first ``count`` priors need it, its
    sensitivity table: where bits are searched (it picks the other families' bits), or where
    the ``sensitivity`` family comes within the first ``count`` in the families' order (a
    study of 4 priors leaves out a fifth family: its pass, which costs training time, is not
    run, and a knee search never ranks it first)."""
    config, priors = ctx.config, ctx.config.search.priors
    units = unit_spaces(config, ctx.layers)
    families = () if priors is None else priors.families[:count]
    wanted = "sensitivity" in families or any(is_searched(u.levels) for u in units)
    table = study_sensitivity(ctx) if wanted else None
    return prior_problem(config, ctx.layers, dense_on(ctx), table), table


def prior_problem(
    config: StudyConfig, layers: Sequence[str], model: torch.nn.Module, table: Sensitivity | None
) -> PriorProblem:
    """The study's units on (a CPU copy of) its dense model, BatchNorm folded where the
    pipeline folds it, each unit's levels chosen by :func:`admmsearch.search.priors.unit_levels`
    (from ``table``'s fewest levels within 1 point, where given)."""
    model = copy.deepcopy(model).cpu().eval()
    if config.pipeline.fold_batchnorm:
        fold_batchnorm(model)
    within = None
    if table is not None:
        summary = table.summary(drop=0.01)
        within = {
            str(r.unit): None if _missing(r.levels_within) else int(r.levels_within)
            for r in summary.itertuples()
        }
    units = tuple(unit_spaces(config, layers))
    levels = {u.name: unit_levels(u, within) for u in units}
    dense = DenseLayers.of(model, layers, config.pipeline.index_format)
    return PriorProblem(dense, units, levels)


def prior_seeds(
    problem: PriorProblem,
    table: Sensitivity | None,
    families: Sequence[str],
    targets: int,
    count: int,
) -> list[Seed]:
    """Up to ``count`` prior trials: ``families`` at ``targets`` storage targets log-spaced
    over :func:`.priors.storage_range`, in :func:`.priors.prior_order`; a
    prior that repeats an earlier one's setting is dropped (the ``sensitivity`` family needs
    ``table``)."""
    bits = storage_targets(*storage_range(problem), targets)
    out: list[Seed] = []
    for family, i in prior_order(families, len(bits)):
        if len(out) >= count:
            break
        prior = family_prior(family, problem, table, bits[i])
        seed = None if prior is None else prior_seed(prior, problem.units)
        if seed is not None and seed.params and all(seed.params != s.params for s in out):
            out.append(seed)
    return out


def family_prior(
    family: str, problem: PriorProblem, table: Sensitivity | None, target_bits: int
) -> Prior | None:
    """``family``'s prior at storage target ``target_bits``: a zero-cost family's
    (:func:`.priors.prior_at_storage`) or the ``sensitivity`` family's
    (:func:`sensitivity_prior`; None without ``table``, or when nothing fits)."""
    if family != "sensitivity":
        return prior_at_storage(family, problem, target_bits)
    return None if table is None else sensitivity_prior(table, problem, target_bits)


def sensitivity_prior(table: Sensitivity, problem: PriorProblem, target_bits: int) -> Prior | None:
    """The ``sensitivity`` family: the exact allocator (:func:`admmsearch.allocation.allocate`)
    over the table's grid at budget ``target_bits``; it picks each unit's keep and levels.
    None when even the smallest options exceed the target."""
    units = problem.units
    allocation = allocate(unit_options(table, units), target_bits, table.fixed_bits)
    if allocation is None:
        return None
    picked = {u.name: o.setting for u, o in zip(units, allocation.options, strict=True)}
    kept = sum(picked[u.name][0] * problem.unit_size(u) for u in units)
    total = sum(problem.unit_size(u) for u in units)
    return Prior(
        family="sensitivity",
        keeps={u.name: picked[u.name][0] for u in problem.free},
        levels={u.name: picked[u.name][1] for u in units},
        storage_bits=allocation.storage_bits,
        overall_keep=kept / total,
        target_bits=target_bits,
    )


def prior_seed(prior: Prior, units: Sequence[UnitSpace]) -> Seed:
    """The trial of ``prior``: its searched keeps and levels as params, and its ``prior`` user
    attribute (family, target and estimated storage in bits and KiB, overall keep, and the
    units clipped to their range with the family's keep and the keep used)."""
    params: dict[str, Any] = {}
    for unit in units:
        if is_searched(unit.keep):
            params[unit.keep_param] = prior.keeps[unit.name]
        if is_searched(unit.levels):
            params[unit.levels_param] = prior.levels[unit.name]
    target = prior.target_bits
    attrs = {
        "family": prior.family,
        "target_bits": target,
        "target_kib": None if target is None else round(kib(target), 3),
        "predicted_storage_bits": int(prior.storage_bits),
        "predicted_storage_kib": round(kib(prior.storage_bits), 3),
        "overall_keep": round(float(prior.overall_keep), 6),
        "clipped": {
            unit: {"family_keep": round(float(raw), 6), "keep": float(used)}
            for unit, (raw, used) in prior.clipped.items()
        },
    }
    return Seed(params, {TrialAttr.PRIOR: attrs})


# --- knee placement: each prior placed as the study runs ---


class PriorPlanner:
    """Places a study's prior trials one at a time (``search.priors.placement: knee``), each
    when a worker is about to start a new setting: :func:`.priors.placement.next_placement`
    on the grid of :func:`.priors.storage_targets`, from the outcomes of the priors before it.
    Everything it reads is in the storage (each prior's ``prior`` user attribute records its
    ``grid_index``), so workers and resumes share one search.

    Args:
        problem: the study's units on its dense model.
        table: the sensitivity table, for the ``sensitivity`` family (None: that family is
            skipped).
        families: ``search.priors.families``.
        targets: ``search.priors.targets``, the grid's size.
        count: the most prior trials to place.
        outcome: a prior trial's outcome for the search (:data:`.priors.placement.OUTCOMES`).
        score: a prior's zero-cost score (:func:`.priors.oneshot.one_shot_scorer`): each
            target is probed by the family scoring highest there that has not tried it
            (None: the families take turns); a prior's ``one_shot_val_accuracy`` attribute
            records every family's score at its target, best first.
    """

    def __init__(
        self,
        problem: PriorProblem,
        table: Sensitivity | None,
        families: Sequence[str],
        targets: int,
        count: int,
        outcome: Callable[[FrozenTrial], str],
        score: Callable[[Prior], float] | None = None,
    ) -> None:
        self.problem, self.table, self.families = problem, table, list(families)
        self.grid = storage_targets(*storage_range(problem), targets)
        self.count, self.outcome = count, outcome
        self.score, self._scores = score, {}

    def _rank(self, index: int) -> list[str]:
        """The families at target ``index``, the highest ``score`` first (a family with no
        prior there last; ties keep the families' order); each scored once."""

        def score(family: str) -> float:
            if (family, index) not in self._scores:
                prior = family_prior(family, self.problem, self.table, self.grid[index])
                self._scores[family, index] = -1.0 if prior is None else self.score(prior)
            return self._scores[family, index]

        return sorted(self.families, key=lambda family: -score(family))

    def __call__(self, trials: Sequence[FrozenTrial]) -> Seed | None:
        """The next prior trial, or None when ``count`` are placed or none is left."""
        placed = [self._placed(t) for t in trials if _grid_index(t) is not None]
        if len({(p.family, p.target) for p in placed}) >= self.count:
            return None
        taken = [dict(t.params) for t in trials]
        rank = None if self.score is None else self._rank
        while (pick := next_placement(placed, self.families, len(self.grid), rank)) is not None:
            seed = self._seed(*pick)
            if seed is not None and seed.params and seed.params not in taken:
                return seed
            placed.append(Placed(pick[0], pick[1], "failed"))  # nothing new there: skip it
        return None

    def _placed(self, trial: FrozenTrial) -> Placed:
        attrs = trial.user_attrs[TrialAttr.PRIOR]
        return Placed(str(attrs["family"]), int(attrs["grid_index"]), self.outcome(trial))

    def _seed(self, family: str, index: int) -> Seed | None:
        prior = family_prior(family, self.problem, self.table, self.grid[index])
        if prior is None:
            return None
        seed = prior_seed(prior, self.problem.units)
        attrs = {**seed.attrs[TrialAttr.PRIOR], "placement": "knee", "grid_index": index}
        scores = {f: round(v, 6) for (f, i), v in self._scores.items() if i == index and v >= 0}
        if scores:  # the ranking that chose the family: best first
            attrs["one_shot_val_accuracy"] = dict(sorted(scores.items(), key=lambda kv: -kv[1]))
        return Seed(seed.params, {TrialAttr.PRIOR: attrs})


def _grid_index(trial: FrozenTrial) -> int | None:
    attrs = trial.user_attrs.get(TrialAttr.PRIOR)
    return attrs.get("grid_index") if isinstance(attrs, dict) else None


def prior_planner(ctx: StudyContext, outcome: Callable[[FrozenTrial], str]) -> PriorPlanner | None:
    """The study's :class:`PriorPlanner` (None unless ``search.priors.placement`` is
    ``knee``); the sensitivity pass runs (once, cached) where :func:`study_priors` runs it."""
    config = ctx.config
    priors, count = config.search.priors, prior_count(config)
    if priors is None or not knee_placement(config) or count == 0:
        return None
    problem, table = _study_problem(ctx, count)
    score = _one_shot(ctx)
    return PriorPlanner(problem, table, priors.families, priors.targets, count, outcome, score)


def _one_shot(ctx: StudyContext) -> Callable[[Prior], float]:
    """The study's :func:`.priors.oneshot.one_shot_scorer`: its dense model (BatchNorm folded
    where the pipeline folds it) on its validation split."""
    model = dense_on(ctx).eval()
    if ctx.config.pipeline.fold_batchnorm:
        fold_batchnorm(model)
    units, device = unit_spaces(ctx.config, ctx.layers), ctx.config.device
    x_val, y_val = ctx.data.x_val.to(device), ctx.data.y_val.to(device)
    return one_shot_scorer(model, units, x_val, y_val)
