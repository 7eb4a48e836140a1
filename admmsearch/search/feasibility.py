"""Which constraints a study's trials break, and which trials come closest to meeting them.

A trial records each constraint of the study file as ``metric - limit`` (Optuna's
``trial.set_constraint``; it is met at 0 or below): ``storage_bits`` for
``constraints.max_storage_bits`` and ``accuracy_drop`` for ``constraints.max_accuracy_drop``.
When trials completed and none meets every constraint, the front is empty, and
:func:`infeasible_note` says why in one line (the constraints broken, by how many trials, and the
closest trial of each); :func:`closest_first` orders the trials for a table of them.

Example (``show`` of a study whose limit no trial can meet)::

    no trial meets the constraints: constraints.max_storage_bits 1000 is broken by 2 of 2
    completed trials (closest: trial 0 with 116960 bits)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from ..config.schema import ConstraintsConfig
from ..record import Metric, TrialAttr

__all__ = ["CONSTRAINTS", "closest_first", "infeasible_note", "violation"]

#: Constraint key a trial records -> (the study file's setting, the metric it limits, unit).
CONSTRAINTS: dict[str, tuple[str, str, str]] = {
    "storage_bits": ("max_storage_bits", Metric.STORAGE_BITS, "bits"),
    "accuracy_drop": ("max_accuracy_drop", Metric.ACCURACY_DROP, "drop"),
}
_DONE = optuna.trial.TrialState.COMPLETE


def _constraints(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    c = trial.constraints or {}
    return dict(c) if isinstance(c, dict) else {str(i): v for i, v in enumerate(c)}


def violation(trial: optuna.trial.FrozenTrial, limits: ConstraintsConfig) -> tuple[int, float]:
    """How far a trial is from meeting the constraints: ``(constraints broken, their summed
    excess relative to each limit)``; ``(0, 0.0)`` for a feasible trial. Sorts closest first."""
    broken, excess = 0, 0.0
    for key, value in _constraints(trial).items():
        if value > 0:
            setting = CONSTRAINTS.get(key, (key, "", ""))[0]
            limit = getattr(limits, setting, None)
            broken, excess = broken + 1, excess + value / (abs(limit) if limit else 1.0)
    return broken, excess


def closest_first(
    trials: Sequence[optuna.trial.FrozenTrial], limits: ConstraintsConfig
) -> list[optuna.trial.FrozenTrial]:
    """``trials`` ordered from the closest to meeting the constraints to the farthest."""
    return sorted(trials, key=lambda t: (*violation(t, limits), t.number))


def infeasible_note(study: optuna.Study, limits: ConstraintsConfig) -> str | None:
    """One line on why no completed trial of ``study`` is feasible: each constraint broken, by
    how many trials, and its closest trial; None when some trial is feasible or none completed.
    """
    done = study.get_trials(deepcopy=False, states=(_DONE,))
    if not done or any(violation(t, limits)[0] == 0 for t in done):
        return None
    parts = [_broken(key, done, limits) for key in _keys(done)]
    return "no trial meets the constraints: " + "; ".join(p for p in parts if p)


def _keys(done: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    return list(dict.fromkeys(k for t in done for k in _constraints(t)))


def _broken(key: str, done: Sequence[optuna.trial.FrozenTrial], limits: ConstraintsConfig) -> str:
    values = [(t, _constraints(t).get(key)) for t in done]
    breaking = [(t, v) for t, v in values if v is not None and v > 0]
    if not breaking:
        return ""
    setting, metric, unit = CONSTRAINTS.get(key, (key, "", ""))
    near, _ = min(breaking, key=lambda tv: (tv[1], tv[0].number))
    return (
        f"constraints.{setting}{_shown(getattr(limits, setting, None))} is broken by "
        f"{len(breaking)} of {len(done)} completed trials (closest: trial {near.number}"
        f"{_with(near, metric, unit)})"
    )


def _with(trial: optuna.trial.FrozenTrial, metric: str, unit: str) -> str:
    value: Any = trial.user_attrs.get(TrialAttr.METRICS, {}).get(metric)
    if value is None:
        return ""
    return f" with {value:.0f} bits" if unit == "bits" else f" with {unit} {value:.4f}"


def _shown(limit: float | None) -> str:
    return "" if limit is None else f" {limit:g}"
