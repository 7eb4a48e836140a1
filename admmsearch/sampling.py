"""Every trial new: a sampler whose random draws depend on the trial number, not on the process.

A seeded Optuna sampler replays its random sequence in every process that builds it: two
workers of one study, or a study resumed by a second ``run``, would suggest the settings the
first process already tried. :class:`PerTrialSampler` instead builds, for each trial, a fresh
sampler seeded from ``(study seed, trial number)``. Trial numbers are unique within a study,
so no two processes draw from the same random sequence, and a fresh single-process study with
a given seed still draws the same settings trial by trial (trial ``n`` always gets the same
seed). Model-based samplers (TPE, GP, NSGA-II's generations) read every finished trial from the
storage anyway, so they lose nothing by being rebuilt.

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

__all__ = ["PerTrialSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a study seeded with ``seed`` (NumPy's
    ``SeedSequence``: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


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

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        sampler = self._by_trial.get(trial.number)
        if sampler is None:
            seed = None if self._seed is None else trial_seed(self._seed, trial.number)
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
        return self._for(trial).sample_relative(study, trial, search_space)

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
