"""Successive halving's rules (admmsearch.search.rungs), on hand-made trials: the epochs each
rung runs, non-dominated sorting, who is promoted and what a free worker runs next."""

from __future__ import annotations

import math

import pytest

from admmsearch.fidelity import (
    RungSchedule,
    rung_pipeline,
    scaled_epochs,
    trial_epochs,
)
from admmsearch.search.rungs import (
    Job,
    Limits,
    RungTrial,
    crowding_distances,
    hypervolume_contributions,
    next_job,
    nondominated_ranks,
    promotable,
    promotion_order,
    screening_quota,
)
from admmsearch.settings import PipelineSettings

PIPELINE = PipelineSettings.model_validate(
    {
        "admm_prune": {"train": {"epochs": 3}},
        "retrain": {"epochs": 12},
        "admm_quantize": {"train": {"epochs": 2}},
        "quant_retrain": {"train": {"epochs": 3}, "shares": [0.5, 1.0]},
    }
)


def test_each_stage_is_scaled_to_its_rung_and_keeps_at_least_one_epoch() -> None:
    rungs = RungSchedule(eta=3, count=3)
    low = rung_pipeline(PIPELINE, rungs.fraction(0))
    assert (low.admm_prune.train.epochs, low.retrain.epochs) == (1, 1)
    assert (low.admm_quantize.train.epochs, low.quant_retrain.train.epochs) == (1, 1)
    mid = rung_pipeline(PIPELINE, rungs.fraction(1))
    assert (mid.admm_prune.train.epochs, mid.retrain.epochs, mid.quant_retrain.train.epochs) == (
        1,
        4,
        1,
    )
    assert rung_pipeline(PIPELINE, rungs.fraction(2)) == PIPELINE  # the top is as written
    assert scaled_epochs(0, 0.1) == 0 and scaled_epochs(1, 0.01) == 1
    no_admm = PIPELINE.replace(admm_prune=PIPELINE.admm_prune.replace(train={"epochs": 0}))
    assert rung_pipeline(no_admm, 1 / 9).admm_prune.train.epochs == 0


def test_a_promoted_trial_counts_only_the_epochs_it_adds() -> None:
    low, top = rung_pipeline(PIPELINE, 1 / 4), PIPELINE
    assert trial_epochs(top) == 3 + 12 + 2 + 3 * 2
    assert trial_epochs(low) == 1 + 3 + 1 + 1 * 2
    assert trial_epochs(top, continues=low) == (12 - 3) + 2 + 3 * 2  # no ADMM again
    steps = top.replace(progressive_steps=2)
    assert trial_epochs(steps) == 2 * (3 + 12) + 2 + 6
    assert trial_epochs(steps, continues=low.replace(progressive_steps=2)) == 9 + 2 + 6


def test_nondominated_ranks_and_crowding_by_hand() -> None:
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (6, 6), (4, 4)]
    assert nondominated_ranks(points) == [0, 0, 0, 1, 3, 2]
    crowding = crowding_distances(points, nondominated_ranks(points))
    # middle of the first front: (5 - 1) / 4 + (5 - 1) / 4 = 2
    assert crowding[:3] == [math.inf, 2.0, math.inf]
    assert crowding[3] == crowding[4] == crowding[5] == math.inf  # alone on their fronts


def _trial(number, values, rung=0, state="complete", **kw) -> RungTrial:
    # values: (validation accuracy, storage); minimised as (-accuracy, storage)
    minimised = None if values is None else (-values[0], values[1])
    return RungTrial(number, rung, kw.pop("continues", None), state, minimised, **kw)


def test_a_small_less_accurate_trial_is_promoted_where_accuracy_alone_would_drop_it() -> None:
    trials = [
        _trial(0, (0.95, 100.0)),  # accurate and large: on the front
        _trial(1, (0.90, 10.0)),  # small, less accurate: nothing smaller beats it
        _trial(2, (0.93, 200.0)),  # more accurate than 1, but dominated by 0
        _trial(3, (0.85, 50.0)),  # dominated by 1
    ]
    order = [t.number for t in promotion_order(trials)]
    assert order[:2] == [0, 1] and set(order[2:]) == {2, 3}
    job = next_job(trials, RungSchedule(eta=2, count=2), Limits(), {})
    assert job == Job(1, trials[0])  # the first of the best half
    promoted = [*trials, _trial(4, None, rung=1, state="running", continues=0)]
    assert next_job(promoted, RungSchedule(eta=2, count=2), Limits(), {}) == Job(1, trials[1])


def test_infeasible_trials_rank_last_and_hopeless_ones_never_go_up() -> None:
    trials = [
        _trial(0, (0.99, 5.0), violation=0.5, hopeless=True),  # breaks storage: final
        _trial(1, (0.80, 50.0)),
        _trial(2, (0.70, 60.0), violation=0.1),
    ]
    assert [t.number for t in promotion_order(trials)] == [1, 2, 0]
    rungs = RungSchedule(eta=1, count=2)  # every trial of the rung may go up
    assert next_job(trials, rungs, Limits(screens=0), {}) == Job(1, trials[1])
    taken = [*trials, _trial(3, (0.9, 50.0), rung=1, continues=1)]
    assert next_job(taken, rungs, Limits(screens=0), {}) == Job(1, trials[2])
    taken += [_trial(4, (0.9, 60.0), rung=1, continues=2)]
    assert next_job(taken, rungs, Limits(screens=0), {}) is None


def test_the_highest_rung_goes_first_then_new_settings_within_the_quota() -> None:
    rungs = RungSchedule(eta=2, count=3)
    trials = [_trial(i, (0.9 - i / 100, 10.0 + i)) for i in range(4)]
    trials += [_trial(4, (0.95, 10.0), rung=1, continues=0)]
    trials += [_trial(5, (0.94, 11.0), rung=1, continues=1)]
    assert next_job(trials, rungs, Limits(), {}) == Job(2, trials[4])
    top = [*trials, _trial(6, None, rung=2, state="running", continues=4)]
    assert next_job(top, rungs, Limits(screens=3, new_epochs=2), {}) == Job(0)
    # the quota spent and nothing promotable by the 1/eta rule: the best left goes up, once
    # nothing runs any more
    assert next_job(top, rungs, Limits(screens=0), {}) is None
    done = [*trials, _trial(6, (0.96, 10.0), rung=2, continues=4)]
    assert next_job(done, rungs, Limits(screens=0), {}) == Job(2, trials[5])


def test_a_near_miss_goes_up_before_a_dominated_trial() -> None:
    # Fashion-MNIST seed 0 of the front study, at rung 0: 15.5x and 24x met the constraint,
    # a 37.5x prior missed it by 0.2 point (it met it after the full retraining), and the
    # sampler's 14.8x was dominated by the 15.5x. The third promotion went to the dominated one.
    trials = [
        _trial(0, (0.8397, 1 / 24.2)),
        _trial(1, (0.8147, 1 / 58.1), violation=0.018, hopeless=False),
        _trial(2, (0.8313, 1 / 37.5), violation=0.002),
        _trial(3, (0.8500, 1 / 15.5)),
        _trial(4, (0.8360, 1 / 14.8)),  # dominated by trial 3
        _trial(5, (0.7000, 1 / 90.0), violation=0.13, hopeless=True),
    ]
    assert [t.number for t in promotion_order(trials)] == [0, 3, 2, 1, 4, 5]


def test_screens_first_screens_the_quota_before_promoting() -> None:
    rungs = RungSchedule(eta=2, count=2)
    trials = [_trial(0, (0.9, 10.0)), _trial(1, (0.8, 20.0))]  # trial 0 may go up
    first = Limits(screens=3, new_epochs=2, screens_first=True)
    assert next_job(trials, rungs, first, {}) == Job(0)
    assert next_job(trials, rungs, Limits(screens=3, new_epochs=2), {}) == Job(1, trials[0])
    # the quota screened, or no quota at all (a budget of time alone): promotions as ASHA's
    spent = Limits(screens=0, new_epochs=2, screens_first=True)
    assert next_job(trials, rungs, spent, {}) == Job(1, trials[0])
    unbounded = Limits(new_epochs=2, screens_first=True)
    assert next_job(trials, rungs, unbounded, {}) == Job(1, trials[0])
    # a new setting that no longer fits the epochs left does not hold the promotion back
    tight = Limits(epochs=5, screens=3, new_epochs=6, screens_first=True)
    assert next_job(trials, rungs, tight, {0: 5}) == Job(1, trials[0])


def test_what_is_left_of_the_budget_decides_what_fits() -> None:
    rungs = RungSchedule(eta=2, count=2)
    trials = [_trial(0, (0.9, 10.0)), _trial(1, (0.8, 20.0))]
    cost = {0: 10, 1: 10}
    assert next_job(trials, rungs, Limits(epochs=10, new_epochs=3), cost) == Job(1, trials[0])
    assert next_job(trials, rungs, Limits(epochs=9, new_epochs=3), cost) == Job(0)
    assert next_job(trials, rungs, Limits(epochs=2, new_epochs=3), cost) is None
    assert next_job(trials, rungs, Limits(trials=0), cost) is None


@pytest.mark.parametrize(
    ("rungs", "budget", "costs", "quota"),
    [
        (RungSchedule(eta=3, count=2), 74, [2, 16], 10),  # 10 * 2 + 10 / 3 * 16 = 73.3
        (RungSchedule(eta=3, count=3), 27, [1, 1, 1], 18),  # trials: 18 + 6 + 2 <= 27
        (RungSchedule(eta=2, count=2), 1, [5, 5], 1),  # at least one
    ],
)
def test_the_screening_quota_fits_the_budget(rungs, budget, costs, quota) -> None:
    assert screening_quota(rungs, budget, costs) == quota


def test_an_enqueued_entry_that_fixes_some_knobs_starts_and_reserves_a_new_settings_epochs():
    """The quick study's enqueue fixes the keeps and bits, not rho_start: Optuna draws it when
    the trial runs, so the trial reserves what any new setting does (it used to stop the
    study: 'params do not match the study's search space (missing: rho_start ...)')."""
    import optuna

    from admmsearch.config import StudyConfig
    from admmsearch.record import TrialAttr
    from admmsearch.search.schedule import Budget, Schedule

    layers = ["conv1", "conv2", "fc1", "fc2"]
    search = {"keep": 0.5, "bits": 4, "rho_start": {"low": 1e-3, "high": 5e-2, "log": True}}
    config = StudyConfig.model_validate(
        {"name": "part", "model": "digits-cnn", "dataset": "digits", "search": search}
    )
    schedule = Schedule(config, layers, Budget(trials=2))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=config.directions)
    study.enqueue_trial({}, user_attrs={TrialAttr.ENQUEUED: 0})
    study.enqueue_trial({"rho_start": 0.01}, user_attrs={TrialAttr.ENQUEUED: 1})
    for _ in range(2):
        trial = schedule.start(study, Job(rung=0))
        assert trial.user_attrs[TrialAttr.EPOCHS] == schedule.new_epochs


def test_hypervolume_contribution_breaks_ties_where_crowding_keeps_the_dense_end() -> None:
    # Values minimised: (-val accuracy, log2 storage bits); reference: the dense model's
    # storage (log2 1000 ~ 9.97) and accuracy 0.96. Trial 0 is nearly dense and barely more
    # accurate; trial 2, the knee, holds its accuracy at 8x; trial 3 goes further and loses.
    # All four are on the first front: crowding distance ranks both ends first (trial 0 and
    # trial 3, infinity), the contributions rank the knee first and the near-dense one last.
    values = {0: (-0.985, 9.8), 1: (-0.982, 8.0), 2: (-0.98, 7.0), 3: (-0.965, 6.0)}
    trials = [RungTrial(n, 0, None, "complete", v) for n, v in values.items()]
    reference = (-0.96, math.log2(1000))
    assert [t.number for t in promotion_order(trials)][:2] == [0, 3]
    ordered = [t.number for t in promotion_order(trials, reference)]
    gains = hypervolume_contributions(list(values.values()), [0] * 4, reference)
    # trial 2: accuracy from its own to trial 3's (0.015) by storage from its own to trial
    # 1's (1.0); trial 0: 0.003 by 0.166 (up to the reference).
    assert gains[2] == pytest.approx(0.015 * 1.0)
    assert gains[0] == pytest.approx(0.003 * (math.log2(1000) - 9.8))
    assert ordered == [2, 3, 1, 0]
    assert [t.number for t in promotable(trials, 0, 2, reference)] == [2, 3]
