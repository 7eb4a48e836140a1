"""Which constraints a study's trials break, and which trials come closest."""

from __future__ import annotations

import optuna

from admmsearch.config.schema import ConstraintsConfig
from admmsearch.search.feasibility import closest_first, infeasible_note, violation

LIMITS = ConstraintsConfig(max_accuracy_drop=0.05, max_storage_bits=1000)


def _study(rows: list[tuple[float, float]]) -> optuna.Study:
    """A study with one completed trial per (accuracy drop, storage bits)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for drop, bits in rows:
        trial = study.ask()
        metrics = {"accuracy_drop": drop, "storage_bits_with_index": bits}
        trial.set_user_attr("metrics", metrics)
        trial.set_constraint("accuracy_drop", drop - 0.05)
        trial.set_constraint("storage_bits", bits - 1000)
        study.tell(trial, [1 - drop, bits])
    return study


def test_closest_first_orders_by_constraints_broken_then_relative_excess() -> None:
    study = _study([(0.10, 5000), (0.01, 3000), (0.01, 900), (0.07, 900)])
    order = [t.number for t in closest_first(study.trials, LIMITS)]
    assert order == [2, 3, 1, 0]
    assert violation(study.trials[2], LIMITS) == (0, 0.0)
    assert violation(study.trials[3], LIMITS)[0] == 1


def test_the_note_names_each_broken_constraint_and_its_closest_trial() -> None:
    assert infeasible_note(_study([(0.01, 900), (0.10, 5000)]), LIMITS) is None
    note = infeasible_note(_study([(0.10, 5000), (0.01, 3000)]), LIMITS)
    assert note == (
        "no trial meets the constraints: constraints.max_accuracy_drop 0.05 is broken by 1 of 2 "
        "completed trials (closest: trial 0 with drop 0.1000); constraints.max_storage_bits 1000 "
        "is broken by 2 of 2 completed trials (closest: trial 1 with 3000 bits)"
    )
    assert infeasible_note(_study([]), LIMITS) is None
