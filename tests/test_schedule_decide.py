"""The schedule's decisions (search/schedule.py) on hand-made Optuna studies: what it
reads of trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from admmsearch.config import validate_study
from admmsearch.record import TrialAttr
from admmsearch.search.schedule import Budget, Schedule
from admmsearch.search.study import study_budget

LAYERS = ("conv1", "conv2", "fc1", "fc2")
#: A pipeline whose rungs differ (2 retraining epochs at the top, 1 at rung 0): the quick
#: study's 1-epoch stages would train rung 1 as rung 0 does, which a study file may not.
RUNG_PIPELINE = {
    "admm_prune": None,
    "retrain": {"epochs": 2},
    "admm_quantize": None,
    "quant_retrain": None,
}


def _finished(values: list[float], keep: float, violation: float) -> optuna.trial.FrozenTrial:
    """A complete rung-0 trial of 2 epochs with one constraint value (Optuna keeps them in the
    ``constraints`` system attribute and reads them back as a dict)."""
    return optuna.trial.create_trial(
        values=values,
        params={f"keep.{n}": keep for n in LAYERS},
        distributions={f"keep.{n}": FloatDistribution(0.1, 1.0) for n in LAYERS},
        user_attrs={TrialAttr.RUNG: 0, TrialAttr.EPOCHS: 2},
        system_attrs={"constraints": [violation]},
    )


def test_promotion_reads_the_constraint_values_and_skips_the_infeasible(tiny_study) -> None:
    # The infeasible trial is the more accurate and the smaller: only its constraint keeps it
    # from the promotion. Reading Optuna's constraints (a dict) as a list of values raised.
    path = tiny_study(
        budget={"epochs": 100},
        pipeline=RUNG_PIPELINE,
        search={"keep": {"low": 0.1, "high": 1.0}, "bits": None, "rungs": {"eta": 2, "count": 2}},
        constraints={"max_accuracy_drop": 0.05},
        enqueue=[],
    )
    config, layers = validate_study(path)
    study = optuna.create_study(directions=config.directions)
    study.add_trial(_finished([0.90, 2000.0], 0.5, 0.0))  # trial 0: feasible
    study.add_trial(_finished([0.95, 1000.0], 0.3, 0.3))  # trial 1: breaks the constraint
    # a run with a timeout promotes as soon as a trial may go up
    schedule = Schedule(config, layers, Budget(epochs=100, timeout_s=600))
    assert not schedule.screens_first
    start = schedule.decide(study, study.get_trials(deepcopy=False))
    assert callable(start)
    trial = start()
    assert trial.user_attrs[TrialAttr.RUNG] == 1
    assert trial.user_attrs[TrialAttr.CONTINUES] == 0


def test_the_planned_screens_come_before_any_promotion(tiny_study) -> None:
    # 100 epochs plan far more than two screens: a run without a timeout screens them first,
    # so its promotions choose among every screened setting, not the first two.
    path = tiny_study(
        budget={"epochs": 100},
        pipeline=RUNG_PIPELINE,
        search={"keep": {"low": 0.1, "high": 1.0}, "bits": None, "rungs": {"eta": 2, "count": 2}},
        enqueue=[],
    )
    config, layers = validate_study(path)
    study = optuna.create_study(directions=config.directions)
    study.add_trial(_finished([0.90, 2000.0], 0.5, 0.0))
    study.add_trial(_finished([0.95, 1000.0], 0.3, 0.0))
    schedule = Schedule(config, layers, Budget(epochs=100))
    assert schedule.quota > 2
    start = schedule.decide(study, study.get_trials(deepcopy=False))
    assert callable(start)
    trial = start()
    assert trial.user_attrs[TrialAttr.RUNG] == 0
    assert TrialAttr.CONTINUES not in trial.user_attrs


def test_settings_queued_beyond_the_screening_quota_do_not_stop_the_study(tiny_study) -> None:
    # 1 retraining epoch a setting at rung 0 (of 2 at the top) within 4 epochs: a quota of 2
    # screens. Three priors queued first must not count as screened already.
    path = tiny_study(
        budget={"epochs": 4},
        search={"keep": {"low": 0.1, "high": 1.0}, "bits": None, "rungs": {"eta": 2, "count": 2}},
        pipeline={
            "admm_prune": None,
            "retrain": {"epochs": 2},
            "admm_quantize": None,
            "quant_retrain": None,
        },
        enqueue=[],
    )
    config, layers = validate_study(path)
    study = optuna.create_study(directions=config.directions)
    for keep in (0.2, 0.4, 0.6):
        study.enqueue_trial({f"keep.{n}": keep for n in LAYERS})
    schedule = Schedule(config, layers, Budget(epochs=4))
    assert schedule.quota == 2
    start = schedule.decide(study, study.get_trials(deepcopy=False))
    assert callable(start)
    trial = start()
    assert trial.number == 0 and trial.user_attrs[TrialAttr.RUNG] == 0
    assert trial.user_attrs[TrialAttr.EPOCHS] == 1


def test_the_promotion_reads_storage_in_ratios_against_the_dense_model(tiny_study) -> None:
    # The reference point is the dense model: its storage (2**20 bits) and its validation
    # accuracy less the constraint; storage is ranked on a log2 scale.
    path = tiny_study(
        budget={"epochs": 100},
        pipeline=RUNG_PIPELINE,
        search={"keep": {"low": 0.1, "high": 1.0}, "bits": None, "rungs": {"eta": 2, "count": 2}},
        objectives=["val_accuracy", "storage_bits_with_index"],
        constraints={"max_accuracy_drop": 0.02},
        enqueue=[],
    )
    config, layers = validate_study(path)
    trial = _finished([0.97, 2.0**16], 0.5, 0.0)
    metrics = {
        "dense_val_accuracy": 0.98,
        "model_dense_bits": 2**20,
        "accuracy_drop": 0.01,
        "storage_bits_with_index": 2**16,
    }
    trial.set_user_attr(TrialAttr.METRICS, metrics)
    schedule = Schedule(config, layers, Budget(epochs=100))
    assert schedule.reference([trial]) == pytest.approx((-0.96, 20.0))
    assert schedule._view(trial).values == pytest.approx((-0.97, 16.0))
    assert schedule.reference([_finished([0.97, 2.0**16], 0.5, 0.0)]) is None  # no metrics yet
    three = validate_study(
        tiny_study(
            objectives=["val_accuracy", "storage_bits_with_index", "compression_ratio_with_index"]
        )
    )[0]
    assert Schedule(three, layers, Budget(epochs=100)).reference([trial]) is None
    exact, _ = validate_study(
        tiny_study(  # no drop allowed: the reference is the dense accuracy itself
            budget={"epochs": 100},
            pipeline=RUNG_PIPELINE,
            search={
                "keep": {"low": 0.1, "high": 1.0},
                "bits": None,
                "rungs": {"eta": 2, "count": 2},
            },
            objectives=["val_accuracy", "storage_bits_with_index"],
            constraints={"max_accuracy_drop": 0.0},
            enqueue=[],
        )
    )
    reference = Schedule(exact, layers, Budget(epochs=100)).reference([trial])
    assert reference == pytest.approx((-0.98, 20.0))


def test_a_timeout_of_the_file_or_of_the_run_promotes_at_once(tiny_study) -> None:
    # One rule for the run and for check: the screens come first unless a timeout may stop
    # the run before any promotion, be it the study file's or the run's --timeout.
    rungs = {"keep": {"low": 0.1, "high": 1.0}, "bits": None, "rungs": {"eta": 2, "count": 2}}
    changes = {"search": rungs, "pipeline": RUNG_PIPELINE, "enqueue": []}
    plain, layers = validate_study(tiny_study(budget={"epochs": 100}, **changes))
    timed_file = tiny_study(budget={"epochs": 100, "timeout_s": 60}, **changes)
    timed, _ = validate_study(timed_file)
    assert Schedule(plain, layers, study_budget(plain, None, None)).screens_first
    assert not Schedule(plain, layers, study_budget(plain, None, None, 60)).screens_first
    assert not Schedule(timed, layers, study_budget(timed, None, None)).screens_first
    assert Schedule(timed, layers, study_budget(timed)).budget.timeout_s == 60
