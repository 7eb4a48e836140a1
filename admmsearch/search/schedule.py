"""What a free worker runs next, decided under the storage lock: the study's budget in trials
and training epochs, and successive halving's rungs (:mod:`.rungs`).

The budget counts what every worker and resume spent, read from the storage: trials as
:func:`admmsearch.runtime.budget_counts` counts them, and epochs as the ``epochs`` user
attribute of those trials (a trial records the epochs it will run when it is claimed, so
running trials hold their share, and the epochs it ran when it ends). A new trial is started
only if its epochs fit what is left: its settings are drawn inside the trial, so it reserves
the most its study's epoch knobs allow (:func:`epochs_bound`); an enqueued setting or a
promotion knows its own.

With rungs (``search.rungs``) a new setting runs at rung 0, and :func:`.rungs.next_job` decides
between screening a new setting and promoting a finished one; the number of settings screened
at rung 0 is planned so that, with the best ``1/eta`` of each rung continued, the schedule fits
the budget (:func:`.rungs.screening_quota`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..config import (
    OBJECTIVES,
    Choices,
    FloatRange,
    IntRange,
    StudyConfig,
    base_pipeline,
    knob_specs,
)
from ..errors import ConfigError
from ..fidelity import RungSchedule, rung_pipeline, trial_epochs
from ..record import Metric, TrialAttr
from ..runtime import WAIT, counted_trials
from ..settings import PipelineSettings
from .rungs import Job, Limits, RungTrial, next_job, screening_quota
from .space import param_names, settings_from_params

__all__ = [
    "Budget",
    "Schedule",
    "Spent",
    "check_fits",
    "epochs_bound",
    "epochs_text",
    "spent",
    "study_budget",
]

#: How far beyond its limit a rung-0 accuracy drop is taken for hopeless (twice the limit).
_HOPELESS_DROP = 2.0
#: The accuracy drop (fraction) past which a prior misses the knee, in a study with no
#: accuracy constraint: 1 point.
_KNEE_DROP = 0.01


@dataclass(frozen=True)
class Budget:
    """What a study may spend in all: trials and training epochs (None: no limit), and the
    run's ``timeout_s`` (seconds; None: none), which stops a run but is not spent."""

    trials: int | None = None
    epochs: int | None = None
    timeout_s: float | None = None


def study_budget(
    config: StudyConfig,
    trials: int | None = None,
    epochs: int | None = None,
    timeout: float | None = None,
) -> Budget:
    """The budget of a run: ``trials``, ``epochs`` and ``timeout`` (seconds) where given
    (``--trials``, ``--epochs``, ``--timeout``), else the study file's; a run given some of
    them keeps the file's others (none given: the study file's budget)."""
    b = config.budget
    return Budget(
        trials if trials is not None else b.trials,
        epochs if epochs is not None else b.epochs,
        timeout if timeout is not None else b.timeout_s,
    )


@dataclass(frozen=True)
class Spent:
    """What a study has spent: counted trials and their epochs, and what running trials hold."""

    trials: int = 0
    epochs: int = 0
    running: int = 0
    running_epochs: int = 0

    def done(self, budget: Budget) -> bool:
        """The budget is spent: its trials all counted, or its epochs."""
        trials = budget.trials is not None and self.trials >= budget.trials
        return trials or (budget.epochs is not None and self.epochs >= budget.epochs)


def _epochs(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(TrialAttr.EPOCHS) or 0)


def epochs_text(count: int) -> str:
    """A count of epochs in words: ``1 epoch``, ``3 epochs``."""
    return f"{count} epoch{'' if count == 1 else 's'}"


def spent(trials: Sequence[FrozenTrial]) -> Spent:
    """What ``trials`` (a study's) spent and hold (see the module's text)."""
    counted = counted_trials(trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return Spent(
        len(counted), sum(map(_epochs, counted)), len(running), sum(map(_epochs, running))
    )


def _highest(spec: Any) -> Any:
    """A searched knob's largest value (the first choice where they are not numbers)."""
    if isinstance(spec, FloatRange | IntRange):
        return spec.high
    if isinstance(spec, Choices):
        numbers = [c for c in spec.choices if isinstance(c, int | float) and c is not None]
        return max(numbers) if numbers else spec.choices[0]
    return spec


def epochs_bound(config: StudyConfig, layers: Sequence[str], fraction: float = 1.0) -> int:
    """The most epochs a trial of ``config`` can run at ``fraction`` of its pipeline's length:
    every searched knob at its largest value (so epoch knobs at their longest)."""
    params = {n: _highest(s) for n, s in knob_specs(config, layers).items() if _searched(s)}
    pipeline = settings_from_params(params, config, layers).pipeline
    return trial_epochs(rung_pipeline(pipeline, fraction))


def check_fits(
    config: StudyConfig,
    layers: Sequence[str],
    budget: Budget,
    given: Collection[str] = (),
) -> None:
    """Check that the budget pays for at least one trial of the pipeline as written (with
    rungs: one setting screened at rung 0 and promoted to the top rung, the front's), before
    anything trains: its epochs, and with rungs its trials (a promotion is a trial).

    ``given``: which of ``trials`` and ``epochs`` a run gave as options (named ``--epochs``
    rather than ``budget.epochs``).

    Raises:
        ConfigError: names the field, the budget and what one such trial takes.
    """

    def field(name: str) -> str:
        return f"--{name}" if name in given else f"budget.{name}"

    schedule = Schedule(config, layers, budget)
    rungs = schedule.rungs
    if rungs is not None and budget.trials is not None and budget.trials < rungs.count:
        raise ConfigError(
            f"{field('trials')}: {_pays(budget.trials, 'trial')} for no top-rung trial (the "
            f"front's): a setting takes a trial at each of the "
            f"{rungs.count} rungs; give at least {rungs.count}"
        )
    if budget.epochs is None:
        return
    costs = schedule.rung_costs()
    first = min(schedule.new_epochs, costs[0])
    least = first + sum(costs[1:])
    if budget.epochs >= least:
        return
    if rungs is None:
        what = f"no trial: a trial trains {least} (the pipeline as written)"
    else:
        what = (
            f"no top-rung trial (the front's): a setting screened at rung 0 ({first} epochs) "
            f"and promoted to rung {rungs.top} trains {least} in all"
        )
    raise ConfigError(
        f"{field('epochs')}: {_pays(budget.epochs, 'epoch')} for {what}; give more epochs or "
        "shorter stages"
    )


def _pays(count: int, noun: str) -> str:
    return f"1 {noun} pays" if count == 1 else f"{count} {noun}s pay"


def _searched(spec: Any) -> bool:
    return isinstance(spec, FloatRange | IntRange | Choices)


class Schedule:
    """Decides, under the storage lock, what a free worker of one study runs next.

    Args:
        config: the study.
        layers: its compressed layers.
        budget: what the study may spend in all.
    """

    def __init__(self, config: StudyConfig, layers: Sequence[str], budget: Budget) -> None:
        self.config, self.layers, self.budget = config, list(layers), budget
        r = config.search.rungs
        self.rungs = None if r is None else RungSchedule(eta=r.eta, count=r.count)
        #: Places the next prior trial from the study's trials (knee placement: a
        #: :class:`admmsearch.search.seeding.PriorPlanner`); it returns an object with
        #: ``params`` and ``attrs`` to enqueue, or None.
        self.priors: Callable[[Sequence[FrozenTrial]], Any] | None = None
        #: Screen the planned settings before promoting any (:func:`.rungs.next_job`); not in
        #: a run with a timeout, whose deadline may come before any promotion.
        self.screens_first = budget.timeout_s is None

    @property
    def top(self) -> int | None:
        """The full-fidelity rung (None: no rungs)."""
        return None if self.rungs is None else self.rungs.top

    def fraction(self, rung: int | None) -> float:
        return 1.0 if self.rungs is None or rung is None else self.rungs.fraction(rung)

    @cached_property
    def new_epochs(self) -> int:
        """What a new setting reserves: the most epochs its first run can take."""
        return epochs_bound(self.config, self.layers, self.fraction(0))

    def rung_costs(self) -> list[int]:
        """Epochs a setting of the study's pipeline as written costs at rung 0, then adds at
        each promotion (one entry without rungs: the whole pipeline)."""
        base = base_pipeline(self.config)
        if self.rungs is None:
            return [trial_epochs(base)]
        per = [trial_epochs(rung_pipeline(base, self.rungs.fraction(0)))]
        for r in range(1, self.rungs.count):
            low, high = (rung_pipeline(base, self.rungs.fraction(k)) for k in (r - 1, r))
            per.append(trial_epochs(high, continues=low))
        return per

    def planned_epochs(self) -> int | None:
        """The epochs the budget plans for: its epochs, else its trials at their most epochs
        (with rungs: the planned screens, the best ``1/eta`` of each rung continued); None
        with neither."""
        if self.budget.epochs is not None:
            return self.budget.epochs
        if self.budget.trials is None:
            return None
        if self.rungs is None:
            return self.budget.trials * self.new_epochs
        per = self.rung_costs()
        return math.ceil(self.quota * sum(c / self.rungs.eta**r for r, c in enumerate(per)))

    @cached_property
    def quota(self) -> int | None:
        """Settings to screen at rung 0 (None: as many as the budget allows, no rungs)."""
        if self.rungs is None:
            return None
        per = self.rung_costs()
        quotas = []
        if self.budget.epochs is not None:
            quotas.append(screening_quota(self.rungs, self.budget.epochs, per))
        if self.budget.trials is not None:
            quotas.append(screening_quota(self.rungs, self.budget.trials, [1] * len(per)))
        return min(quotas) if quotas else None

    def pipeline(self, trial: FrozenTrial | optuna.Trial, rung: int | None) -> PipelineSettings:
        """The pipeline a trial with these params runs at ``rung``."""
        settings = settings_from_params(trial.params, self.config, self.layers)
        return rung_pipeline(settings.pipeline, self.fraction(rung))

    def finished(self, study: optuna.Study) -> bool:
        """Nothing is left to run: the budget is spent, or nothing fits what is left and no
        trial runs."""
        return self.decide(study, study.get_trials(deepcopy=False)) is None

    def decide(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> Any:
        """None when the budget is spent, :data:`admmsearch.runtime.WAIT` while only running
        trials could still change that, else a function that starts the next trial."""
        now = spent(trials)
        if now.done(self.budget):
            return None
        job = self._next(trials, now)
        if job is None:
            return WAIT if now.running else None
        return lambda: self.start(study, job, trials)

    def _next(self, trials: Sequence[FrozenTrial], now: Spent) -> Job | None:
        limits = self._limits(trials, now)
        if self.rungs is None:
            fits = limits.epochs is None or self.new_epochs <= limits.epochs
            return Job(0) if fits and (limits.trials is None or limits.trials > 0) else None
        views = [self._view(t) for t in trials]
        costs = {
            v.number: self._promotion_epochs(t, v) for t, v in zip(trials, views, strict=True)
        }
        return next_job(views, self.rungs, limits, costs, self.reference(trials))

    def reference(self, trials: Sequence[FrozenTrial]) -> tuple[float, ...] | None:
        """The hypervolume reference point of the trials' values as :meth:`_view` scales
        them, for the promotion's tie-break (two objectives only, else None): the dense
        model's storage (compression 1x) and its validation accuracy less the study's
        ``max_accuracy_drop`` (without one, 1 point), the worst a useful point may be."""
        if len(self.config.objectives) != 2:
            return None
        metrics = next((m for t in trials if (m := t.user_attrs.get(TrialAttr.METRICS))), None)
        if not metrics:
            return None
        drop = self.config.constraints.max_accuracy_drop
        worst_drop = _KNEE_DROP if drop is None else drop
        worst = {
            Metric.VAL_ACCURACY: -(metrics[Metric.DENSE_VAL_ACCURACY] - worst_drop),
            Metric.STORAGE_BITS: math.log2(metrics[Metric.MODEL_DENSE_BITS]),
            Metric.COMPRESSION_RATIO: 0.0,  # -log2 of 1x
        }
        return tuple(worst[name] for name in self.config.objectives)

    def _limits(self, trials: Sequence[FrozenTrial], now: Spent) -> Limits:
        b = self.budget
        left_trials = None if b.trials is None else b.trials - now.trials - now.running
        left_epochs = None if b.epochs is None else b.epochs - now.epochs - now.running_epochs
        screens = None
        if self.quota is not None:
            screens = self.quota - sum(1 for t in counted_or_running(trials) if _rung(t) == 0)
        return Limits(left_trials, left_epochs, screens, self.new_epochs, self.screens_first)

    def _view(self, t: FrozenTrial) -> RungTrial:
        state = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete"}.get(t.state)
        values = None
        if t.state == TrialState.COMPLETE and t.values is not None:
            values = tuple(map(_minimised, self.config.objectives, t.values))
        violation = _violation(t)
        continues = t.user_attrs.get(TrialAttr.CONTINUES)
        return RungTrial(
            t.number, _rung(t), continues, state or "other", values, violation, self._hopeless(t)
        )

    def _hopeless(self, t: FrozenTrial) -> bool:
        """Breaks a constraint so far that a longer run cannot mend it: storage over its limit
        (storage does not change with training), or an accuracy drop over twice its limit."""
        m, c = t.user_attrs.get(TrialAttr.METRICS) or {}, self.config.constraints
        if not m:
            return False
        too_big = c.max_storage_bits is not None and m[Metric.STORAGE_BITS] > c.max_storage_bits
        drop = c.max_accuracy_drop
        too_weak = drop is not None and m[Metric.ACCURACY_DROP] > _HOPELESS_DROP * drop
        return too_big or too_weak

    def _promotion_epochs(self, t: FrozenTrial, view: RungTrial) -> int:
        if view.state != "complete" or self.rungs is None or view.rung >= self.rungs.top:
            return 0
        return trial_epochs(self.pipeline(t, view.rung + 1), self.pipeline(t, view.rung))

    def start(
        self, study: optuna.Study, job: Job, trials: Sequence[FrozenTrial] | None = None
    ) -> optuna.Trial:
        """Start ``job``'s trial: the next waiting or sampled setting at rung 0, or the
        promotion of ``job.continues``; it records its rung and the epochs it reserves.
        ``trials``: the study's trials as :meth:`decide` read them under the same lock (None:
        read them again)."""
        if job.continues is None:
            self._place_prior(study, trials)
            trial = _ask(study)
        else:
            trial = _enqueue_and_take(study, self._promotion(study, job))
        frozen = study._storage.get_trial(trial._trial_id)
        rung = frozen.user_attrs.get(TrialAttr.RUNG, 0 if self.rungs else None)
        fixed = frozen.system_attrs.get("fixed_params")
        epochs = self.new_epochs if fixed is None else self._fixed_epochs(frozen, fixed, rung)
        trial.set_user_attr(TrialAttr.EPOCHS, epochs)
        if rung is not None:
            trial.set_user_attr(TrialAttr.RUNG, rung)
        return trial

    def _place_prior(self, study: optuna.Study, trials: Sequence[FrozenTrial] | None) -> None:
        """Queue the next prior trial (knee placement) unless a queued trial is waiting."""
        if self.priors is None:
            return
        if trials is None:
            trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return
        seed = self.priors(trials)
        if seed is not None:
            study.enqueue_trial(seed.params, user_attrs=seed.attrs)

    def prior_outcome(self, trial: FrozenTrial) -> str:
        """A prior trial's outcome for the knee search (:mod:`.priors.placement`): pending
        while it waits or runs, failed when it errored, infeasible when it breaks the study's
        constraints (without an accuracy constraint: when it loses more than 1 point of
        validation accuracy), else feasible. With rungs this is its rung-0 (short) result."""
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            return "pending"
        if trial.state != TrialState.COMPLETE:
            return "failed"
        if _violation(trial) > 0:
            return "infeasible"
        drop = (trial.user_attrs.get(TrialAttr.METRICS) or {}).get(Metric.ACCURACY_DROP)
        if self.config.constraints.max_accuracy_drop is None and (drop or 0.0) > _KNEE_DROP:
            return "infeasible"
        return "feasible"

    def _fixed_epochs(self, trial: FrozenTrial, params: dict[str, Any], rung: int | None) -> int:
        """The epochs of a trial whose params are known (enqueued, a retry or a promotion);
        an enqueued entry that fixes only some knobs (Optuna draws the rest when the trial
        runs) reserves what a new setting does."""
        if set(params) != set(param_names(self.config, self.layers)):
            return self.new_epochs
        settings = settings_from_params(params, self.config, self.layers)
        now = rung_pipeline(settings.pipeline, self.fraction(rung))
        if not rung or TrialAttr.CONTINUES not in trial.user_attrs:
            return trial_epochs(now)
        return trial_epochs(now, rung_pipeline(settings.pipeline, self.fraction(rung - 1)))

    def _promotion(self, study: optuna.Study, job: Job) -> optuna.trial.FrozenTrial:
        lower = study._storage.get_trial(_trial_id(study, job.continues.number))
        attrs = {TrialAttr.RUNG: job.rung, TrialAttr.CONTINUES: job.continues.number}
        return optuna.trial.create_trial(
            state=TrialState.WAITING,
            system_attrs={"fixed_params": dict(lower.params)},
            user_attrs=attrs,
        )


def _minimised(objective: str, value: float) -> float:
    """An objective's value as the promotion ranks it, minimised: sizes on a log2 scale (a
    front of storage against accuracy is read in ratios), accuracy as is."""
    if objective == Metric.STORAGE_BITS:
        return math.log2(max(value, 1.0))
    if objective == Metric.COMPRESSION_RATIO:
        return -math.log2(max(value, 1e-12))
    return -value if OBJECTIVES[objective] == "maximize" else value


def _violation(trial: FrozenTrial) -> float:
    """How far a trial breaks its constraints: the sum of their positive values (0: met)."""
    return sum(max(0.0, c) for c in _constraint_values(trial))


def _constraint_values(trial: FrozenTrial) -> list[float]:
    """A trial's constraint values (Optuna gives a dict by name, older versions a list)."""
    c = trial.constraints or {}
    return list(c.values() if isinstance(c, dict) else c)


def _rung(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(TrialAttr.RUNG) or 0)


def counted_or_running(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that count against the budget, and those running. Not the waiting ones: a
    queued setting (a prior, a seed, a retry) is screened when a new setting may start, so
    counting it as screened already would stop a study that queued more than its quota."""
    return [*counted_trials(trials), *(t for t in trials if t.state == TrialState.RUNNING)]


def _trial_id(study: optuna.Study, number: int) -> int:
    storage = study._storage
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )


def _ask(study: optuna.Study) -> optuna.Trial:
    import warnings

    with warnings.catch_warnings():  # heartbeats are recorded by the worker, see Heartbeat
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def _enqueue_and_take(study: optuna.Study, template: FrozenTrial) -> optuna.Trial:
    """Add ``template`` as a waiting trial and start that one (Optuna's ``ask`` would start
    the oldest waiting trial instead)."""
    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    return optuna.Trial(study, trial_id)
