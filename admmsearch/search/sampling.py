"""Every trial new: a sampler whose random draws depend on the trial number, not on the process.

A seeded Optuna sampler replays its random sequence in every process that builds it: two
workers of one study, or a study resumed by a second ``run``, would suggest the settings the
first process already tried. :class:`PerTrialSampler` instead builds, for each trial, a fresh
sampler seeded from ``(study seed, trial number)``. Trial numbers are unique within a study,
so no two processes draw from the same random sequence, and a fresh single-process study with
a given seed still draws the same settings trial by trial (trial ``n`` always gets the same
seed). Model-based samplers (TPE, GP, NSGA-II's generations) read every finished trial from the
storage anyway, so they lose nothing by being rebuilt.

A model-based sampler can still propose a setting some trial already has: NSGA-II's crossover
copies its parents' genes, and on a small categorical space (bit widths) its children repeat
trials already run. :meth:`PerTrialSampler.sample_relative` therefore checks each proposal
whole (the parameters the sampler leaves to its independent draws, such as NSGA-II's mutations
and first generation, are drawn with it) against every trial of the study, and draws again with
a sampler seeded from ``(seed, number, attempt)``, up to :data:`MAX_REDRAWS` times (a space
whose every setting has been tried can only repeat one). The trial's ``redrawn`` user attribute
counts the proposals thrown away. Enqueued settings are taken as given, repeats included.

Example::

    sampler = PerTrialSampler(lambda seed: optuna.samplers.RandomSampler(seed=seed), seed=0)
    study = optuna.create_study(sampler=sampler)
    # trial 0 draws with trial_seed(0, 0), trial 1 with trial_seed(0, 1), in any process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from ..config import StudyConfig, base_pipeline
from ..fidelity import trial_epochs

__all__ = ["MAX_REDRAWS", "REDRAWN", "PerTrialSampler", "startup_trials", "trial_seed"]

#: Proposals drawn again, at most, when a sampler proposes a setting already tried.
MAX_REDRAWS = 8
#: The user attribute counting a trial's proposals thrown away as repeats.
REDRAWN = "redrawn"


def trial_seed(seed: int, number: int, attempt: int = 0) -> int:
    """A 32-bit seed for trial ``number`` of a study seeded with ``seed``, and for its
    ``attempt``-th redraw (NumPy's ``SeedSequence``: nearby inputs give unrelated seeds)."""
    entropy = [seed, number] if attempt == 0 else [seed, number, attempt]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class PerTrialSampler(BaseSampler):
    """Delegates each trial to a sampler built by ``factory(trial_seed(seed, number))``.

    Args:
        factory: builds the underlying sampler from a seed (``None``: unseeded).
        seed: the study's sampler seed; ``None`` leaves every trial's sampler unseeded.
    """

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._factory = factory
        self._seed = seed
        self._by_trial: dict[int, BaseSampler] = {}

    def __str__(self) -> str:
        return f"PerTrialSampler(seed={self._seed})"

    def _for(self, trial: FrozenTrial, attempt: int = 0) -> BaseSampler:
        sampler = self._by_trial.get(trial.number) if attempt == 0 else None
        if sampler is None:
            seed = None if self._seed is None else trial_seed(self._seed, trial.number, attempt)
            sampler = self._by_trial[trial.number] = self._factory(seed)
        return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """The underlying sampler's proposal over the whole ``search_space`` (what it leaves
        to its independent draws, NSGA-II's mutations and first generation, drawn here), drawn
        again while it repeats a tried setting."""
        if not search_space or "fixed_params" in trial.system_attrs:  # enqueued: given as is
            return self._for(trial).sample_relative(study, trial, search_space)
        tried = [t.params for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        for attempt in range(MAX_REDRAWS + 1):
            params = self._proposal(study, trial, search_space, attempt)
            if params not in tried:
                break
        if attempt:
            study._storage.set_trial_user_attr(trial._trial_id, REDRAWN, attempt)
        return params

    def _proposal(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        attempt: int,
    ) -> dict[str, Any]:
        sampler = self._for(trial, attempt)
        params = sampler.sample_relative(study, trial, search_space)
        for name, distribution in search_space.items():
            if name not in params:
                params[name] = sampler.sample_independent(study, trial, name, distribution)
        return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Seeds come from the trial numbers; there is no process-wide generator to reseed."""


def startup_trials(config: StudyConfig) -> int:
    """Finished trials TPE and GP draw at random before their model guides them:
    ``min(10, max(2, budget.trials // 5))`` of the study file's budget (with an epoch budget
    alone, the trials it buys at the pipeline's length), 10 (Optuna's default) without one.

    Optuna counts every completed or pruned trial of the study towards it, whatever its origin,
    so the study file's ``enqueue``, the priors and the seeded trials, which run first, fill the
    start-up too: a study of 12 trials that starts with 6 of them is guided from its 7th.
    """
    trials = config.budget.trials
    if trials is None and config.budget.epochs is not None:
        per_trial = trial_epochs(base_pipeline(config))
        trials = config.budget.epochs // per_trial if per_trial else None
    return 10 if trials is None else min(10, max(2, trials // 5))
