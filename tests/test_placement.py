"""The knee search that places prior trials (search/priors/placement.py): hand-worked
sequences on a grid of 8 storage targets (index 0 the smallest), and the schedule queuing
one prior at a time from the outcomes of those before it."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from admmsearch.config import load_study, validate_study
from admmsearch.data import load_dataset
from admmsearch.dense import build_model
from admmsearch.record import Metric, TrialAttr
from admmsearch.search.objective import origin_tags
from admmsearch.search.priors.placement import Placed, next_placement
from admmsearch.search.schedule import Budget, Schedule
from admmsearch.search.seeding import (
    PriorPlanner,
    Seed,
    first_trials_cap,
    prior_count,
    prior_problem,
)
from admmsearch.search.study import run_study

FAMILIES = ["global", "lamp", "erk"]
LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _run(outcomes: dict[int, str], steps: int, grid: int = 8) -> list[tuple[str, int]]:
    """Place ``steps`` priors one after the other; a prior at target ``t`` ends with
    ``outcomes[t]`` (feasible where not given)."""
    placed: list[Placed] = []
    for _ in range(steps):
        pick = next_placement(placed, FAMILIES, grid)
        assert pick is not None
        placed.append(Placed(*pick, outcomes.get(pick[1], "feasible")))
    return [(p.family, p.target) for p in placed]


def test_the_first_prior_goes_to_the_middle_and_the_next_bisect_to_the_knee() -> None:
    # Targets 0 and 1 break the constraints: the knee is target 2. From the middle (3) the
    # search halves the untried interval below the most compressed feasible target; then the
    # nearest untried target above the knee (4), with the family that met them at the knee.
    infeasible = {0: "infeasible", 1: "infeasible"}
    assert _run(infeasible, 4) == [("global", 3), ("lamp", 1), ("erk", 2), ("erk", 4)]


def test_once_the_knee_is_bracketed_the_targets_above_it_then_other_families() -> None:
    # Knee at 2 (found by erk), target 1 infeasible: first every untried target above the
    # knee, nearest first, with erk (the front's near-lossless end, where its hypervolume is
    # made); then the families that have not tried the knee try it, then target 1.
    infeasible = {0: "infeasible", 1: "infeasible"}
    steps = _run(infeasible, 11)
    assert steps[3:7] == [("erk", 4), ("erk", 5), ("erk", 6), ("erk", 7)]
    assert steps[7:] == [("lamp", 2), ("global", 2), ("global", 1), ("erk", 1)]


def test_above_the_knee_goes_the_family_that_met_the_constraints_there() -> None:
    # lamp errored at the knee (it says nothing of it); global met the constraints there.
    placed = [
        Placed("lamp", 3, "failed"),
        Placed("global", 3, "feasible"),
        Placed("erk", 2, "infeasible"),
    ]
    assert next_placement(placed, FAMILIES, 8) == ("global", 4)


def test_every_target_feasible_walks_down_to_the_smallest_then_fills_upward() -> None:
    assert [t for _, t in _run({}, 5)] == [3, 1, 0, 2, 4]
    assert [t for _, t in _run({}, 10)][5:] == [5, 6, 7, 0, 0]


def test_every_target_infeasible_moves_up_by_halves() -> None:
    every = {t: "infeasible" for t in range(8)}
    assert [t for _, t in _run(every, 4)] == [3, 5, 6, 7]


def test_a_running_prior_counts_as_feasible_so_a_second_worker_looks_further_down() -> None:
    assert next_placement([Placed("global", 3, "pending")], FAMILIES, 8) == ("lamp", 1)


def test_a_target_is_infeasible_only_when_every_family_tried_there_failed() -> None:
    placed = [Placed("global", 3, "infeasible"), Placed("lamp", 3, "feasible")]
    assert next_placement(placed, FAMILIES, 8) == ("erk", 1)


def test_a_failed_prior_says_nothing_but_is_not_placed_again() -> None:
    placed = [Placed("global", 3, "failed")]
    assert next_placement(placed, FAMILIES, 8) == ("lamp", 3)


def test_nothing_is_left_once_every_family_tried_every_target() -> None:
    placed = [Placed(f, t, "feasible") for f in FAMILIES for t in range(2)]
    assert next_placement(placed, FAMILIES, 2) is None
    assert next_placement([], FAMILIES, 0) is None


def _study_file(tiny_study, **constraints):
    return tiny_study(
        budget={"epochs": 100},
        search={
            "keep": {"low": 0.1, "high": 1.0},
            "bits": None,
            "priors": {"families": ["global", "lamp"], "targets": 4, "placement": "knee"},
        },
        constraints=constraints,
        enqueue=[],
    )


def _finished(
    params: dict, attrs: dict, violation: float, drop: float
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        values=[0.9, 1000.0],
        params=params,
        distributions={k: FloatDistribution(0.1, 1.0) for k in params},
        user_attrs={**attrs, TrialAttr.METRICS: {Metric.ACCURACY_DROP: drop}},
        system_attrs={"constraints": [violation]},
    )


def test_the_schedule_reads_a_prior_outcome_from_its_constraints(tiny_study) -> None:
    config, layers = validate_study(_study_file(tiny_study, max_accuracy_drop=0.02))
    schedule = Schedule(config, layers, Budget(epochs=100))
    params = {f"keep.{n}": 0.5 for n in LAYERS}
    assert schedule.prior_outcome(_finished(params, {}, 0.0, 0.015)) == "feasible"
    assert schedule.prior_outcome(_finished(params, {}, 0.01, 0.03)) == "infeasible"
    free, _ = validate_study(_study_file(tiny_study))  # no accuracy constraint: 1 point
    schedule = Schedule(free, layers, Budget(epochs=100))
    assert schedule.prior_outcome(_finished(params, {}, 0.0, 0.015)) == "infeasible"
    assert schedule.prior_outcome(_finished(params, {}, 0.0, 0.005)) == "feasible"


def test_the_schedule_queues_one_prior_when_a_new_setting_starts(tiny_study) -> None:
    config, layers = validate_study(_study_file(tiny_study, max_accuracy_drop=0.02))
    study = optuna.create_study(directions=config.directions)
    seen: list[int] = []

    def planner(trials):
        seen.append(len(trials))
        keep = (0.2, 0.3)[len(trials)]
        params = {f"keep.{n}": keep for n in LAYERS}
        return Seed(params, {TrialAttr.PRIOR: {"family": "global", "grid_index": len(trials)}})

    schedule = Schedule(config, layers, Budget(epochs=100))
    schedule.priors = planner
    values = [0.9, 1000.0][: len(config.directions)]

    def keep_of(trial):
        return study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"]["keep.fc1"]

    first = schedule.decide(study, study.get_trials(deepcopy=False))()
    assert keep_of(first) == 0.2 and first.user_attrs[TrialAttr.PRIOR]["grid_index"] == 0
    study.tell(first, values)
    second = schedule.decide(study, study.get_trials(deepcopy=False))()
    assert keep_of(second) == 0.3
    assert seen == [0, 1]  # each placed from the trials before it
    study.enqueue_trial({f"keep.{n}": 0.7 for n in LAYERS})  # a waiting trial runs first
    study.tell(second, values)
    third = schedule.decide(study, study.get_trials(deepcopy=False))()
    assert keep_of(third) == 0.7 and seen == [0, 1]


def _planner_problem(tiny_study, **search):
    priors = {"families": ["global", "lamp"], "targets": 4, "placement": "knee", **search}
    path = tiny_study(search={"bits": None, "priors": priors}, enqueue=[])
    config, layers = validate_study(path)
    data = load_dataset("digits", seed=0, limit_train=300)
    return config, layers, prior_problem(config, layers, build_model(config, data), None)


def _as_trial(seed: Seed, state: str, violation: float = 0.0) -> optuna.trial.FrozenTrial:
    """``seed`` as a finished trial (complete, with one constraint value) or a running one."""
    running = state == "running"
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING if running else optuna.trial.TrialState.COMPLETE,
        values=None if running else [0.9, 1000.0],
        params=seed.params,
        distributions={k: FloatDistribution(0.01, 1.0) for k in seed.params},
        user_attrs=dict(seed.attrs),
        system_attrs={} if running else {"constraints": [violation]},
    )


def test_the_planner_places_real_priors_on_the_grid_from_their_outcomes(tiny_study) -> None:
    config, layers, problem = _planner_problem(tiny_study)
    schedule = Schedule(config, layers, Budget(epochs=100))
    planner = PriorPlanner(problem, None, ["global", "lamp"], 4, 3, schedule.prior_outcome)
    assert len(planner.grid) == 4 and planner.grid == sorted(planner.grid)
    first = planner([])
    prior = first.attrs[TrialAttr.PRIOR]
    assert (prior["family"], prior["grid_index"], prior["placement"]) == ("global", 1, "knee")
    assert "one_shot_val_accuracy" not in prior  # no score: the families took turns
    assert prior["target_bits"] == planner.grid[1] >= prior["predicted_storage_bits"]
    # It met the constraints: the next looks below it, at the smallest target.
    second = planner([_as_trial(first, "complete", violation=0.0)])
    assert second.attrs[TrialAttr.PRIOR]["grid_index"] == 0
    assert second.attrs[TrialAttr.PRIOR]["family"] == "lamp"
    # That one broke them: the knee is target 1, and the next prior goes to the target above
    # it with the family that met them at the knee.
    third = planner([_as_trial(first, "complete", 0.0), _as_trial(second, "complete", 0.5)])
    prior = third.attrs[TrialAttr.PRIOR]
    assert (prior["family"], prior["grid_index"]) == ("global", 2)
    placed = [_as_trial(s, "running") for s in (first, second, third)]
    assert planner(placed) is None  # its count of 3 is placed


def test_each_target_is_probed_first_by_the_family_scoring_highest_there(tiny_study) -> None:
    """With a zero-cost score the families do not take turns: the best-scored family at a
    target probes it (here lamp, scored above global everywhere), each family scored once
    per target; above the knee the family that met the constraints there still goes."""
    config, layers, problem = _planner_problem(tiny_study)
    schedule = Schedule(config, layers, Budget(epochs=100))
    scored: list[tuple[str, int]] = []

    def score(prior) -> float:
        scored.append((prior.family, prior.target_bits))
        return {"lamp": 0.9, "global": 0.5}[prior.family]

    planner = PriorPlanner(problem, None, ["global", "lamp"], 4, 3, schedule.prior_outcome, score)
    first = planner([])
    assert (
        first.attrs[TrialAttr.PRIOR]["family"],
        first.attrs[TrialAttr.PRIOR]["grid_index"],
    ) == (
        "lamp",
        1,
    )
    # the ranking that chose it is on the prior, for show and the MLflow run
    assert first.attrs[TrialAttr.PRIOR]["one_shot_val_accuracy"] == {"lamp": 0.9, "global": 0.5}
    assert list(first.attrs[TrialAttr.PRIOR]["one_shot_val_accuracy"]) == ["lamp", "global"]
    ranked = origin_tags(first.attrs)["admmsearch.prior_one_shot"]
    assert ranked == "lamp 0.9000, global 0.5000"
    second = planner([_as_trial(first, "complete", violation=0.0)])
    assert second.attrs[TrialAttr.PRIOR]["family"] == "lamp"  # not global's turn
    assert second.attrs[TrialAttr.PRIOR]["grid_index"] == 0
    planner([_as_trial(first, "complete", violation=0.0)])
    assert len(scored) == len(set(scored)) == 4  # 2 families x 2 targets, once each


@pytest.mark.slow
def test_a_knee_study_places_its_priors_as_it_runs(tiny_study, study_context) -> None:
    """Two priors, the first in the grid's middle, the second placed from the first's
    outcome (none are queued up front), then the sampler's trial. The third family, which
    two priors never reach, costs nothing: its sensitivity pass does not run (and the priors
    leave no room for seeds, which would need it)."""
    priors = {"families": ["global", "lamp", "sensitivity"], "targets": 4, "placement": "knee"}
    search = {"bits": None, "priors": priors}
    path = tiny_study(budget={"trials": 3}, search=search, enqueue=[])
    config = load_study(path)
    assert first_trials_cap(config) == 2 and prior_count(config) == 2
    study = run_study(study_context(path))
    priors_run = [t.user_attrs.get(TrialAttr.PRIOR) for t in study.trials]
    assert {p["family"] for p in priors_run[:2]} <= {"global", "lamp"}  # the best-scored
    assert priors_run[0]["grid_index"] == 1
    assert priors_run[2] is None  # the third is the sampler's
    assert "sensitivity" not in study.user_attrs
