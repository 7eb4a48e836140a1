"""A new study's first trials: zero-cost allocation priors and trials seeded from the
sensitivity pass, each within its storage target or budget and inside the search space, at most
half the trial budget together, tagged in Optuna, MLflow and `show`."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner

from admmsearch.cli import main
from admmsearch.config import load_study, validate_study
from admmsearch.config.knobs import contains
from admmsearch.config.units import knob_specs, unit_spaces
from admmsearch.data import load_dataset
from admmsearch.dense import build_model
from admmsearch.search.objective import origin_tags
from admmsearch.search.priors import FAMILIES
from admmsearch.search.schedule import Budget, Schedule
from admmsearch.search.seeding import (
    first_trials_cap,
    prior_count,
    prior_problem,
    prior_seeds,
    seed_count,
    seeds,
)
from admmsearch.search.sensitivity import measure
from admmsearch.search.study import run_study
from admmsearch.tracking import search_runs
from admmsearch.train import TrainSettings, fit


@pytest.fixture()
def digits_study(tiny_study):
    config, layers = validate_study(tiny_study())
    d = config.dataset
    data = load_dataset(d.name, seed=config.seed, limit_train=d.limit_train)
    model = build_model(config, data)
    fit(model, data, TrainSettings(epochs=4, lr=0.05, batch_size=32), seed=0)
    return config, layers, data, model


def test_seed_count_is_on_by_default_and_at_most_half_the_budget(tiny_study) -> None:
    assert seed_count(load_study(tiny_study(budget={"trials": 20}))) == 4
    assert seed_count(load_study(tiny_study(budget={"trials": 5}))) == 2
    assert seed_count(load_study(tiny_study(budget={"timeout_s": 60}))) == 4
    off = tiny_study(search={"keep": 0.5, "seed_from_sensitivity": False})
    assert seed_count(load_study(off)) == 0


def test_priors_and_seeds_share_half_the_trial_budget(tiny_study) -> None:
    every = {"priors": {"targets": 3, "placement": "grid"}}  # five families at three targets
    assert prior_count(load_study(tiny_study(budget={"trials": 20}, search=every))) == 10
    assert prior_count(load_study(tiny_study(budget={"trials": 5}, search=every))) == 2
    assert prior_count(load_study(tiny_study(budget={"timeout_s": 60}, search=every))) == 15
    two = {"priors": {"families": ["global", "erk"], "targets": 2, "placement": "grid"}}
    assert prior_count(load_study(tiny_study(budget={"trials": 40}, search=two))) == 4
    assert prior_count(load_study(tiny_study(budget={"trials": 40}))) == 0  # off by default
    assert first_trials_cap(load_study(tiny_study(budget={"trials": 7}))) == 3
    assert first_trials_cap(load_study(tiny_study(budget={"timeout_s": 60}))) is None


def test_knee_priors_may_take_all_but_a_third_of_the_settings(tiny_study) -> None:
    knee = {"priors": {}}  # the defaults: knee placement, five families at eight targets

    def count(**budget) -> int:
        return prior_count(load_study(tiny_study(budget=budget, search=knee, enqueue=[])))

    assert (count(trials=20), count(trials=5), count(trials=2), count(timeout_s=60)) == (
        14,
        4,
        1,
        40,
    )
    config = load_study(tiny_study(budget={"trials": 5}, search=knee, enqueue=[]))
    assert first_trials_cap(config) - prior_count(config) == 0  # no room left for seeds
    enqueued = tiny_study(budget={"trials": 5}, search=knee, enqueue=[{"keep.fc1": 0.5}])
    assert prior_count(load_study(enqueued)) == 3  # the sampler still gets one of the five
    # With rungs a trial budget counts promotions too: 8 trials screen floor(8 / 1.5) = 5
    # settings (each screened once, half continued), so the priors take 4, not 8 - 2 = 6.
    rungs = {**knee, "rungs": {"eta": 2, "count": 2}}
    config = load_study(tiny_study(budget={"trials": 8}, search=rungs, enqueue=[]))
    assert (first_trials_cap(config), prior_count(config)) == (4, 4)


def test_an_epoch_budget_caps_priors_and_seeds_at_half_the_settings_it_pays_for(
    tiny_study,
) -> None:
    """Without the cap a 74-epoch study queued all 15 priors and ran nothing else."""
    every = {"priors": {"targets": 3, "placement": "grid"}}
    per_trial = 1 + 1 + 1 + 2  # ADMM prune, retrain, ADMM quantize, 2 shares of quant_retrain
    config = load_study(tiny_study(budget={"epochs": 8 * per_trial}, search=every))
    assert first_trials_cap(config) == 4
    assert prior_count(config) == 4
    both = load_study(tiny_study(budget={"epochs": 8 * per_trial, "trials": 6}, search=every))
    assert first_trials_cap(both) == 3
    rungs = {**every, "rungs": {"eta": 2, "count": 2}}
    config = load_study(tiny_study(budget={"epochs": 8 * per_trial}, search=rungs))
    schedule = Schedule(config, [], Budget(epochs=8 * per_trial))
    assert first_trials_cap(config) == schedule.quota // 2 > 0


def _measured(config, layers, data, model):
    result = measure(model, data, unit_spaces(config, layers), keep_points=4)
    return result, prior_problem(config, layers, model, result)


def test_prior_seeds_lie_in_the_search_space_and_within_their_targets(digits_study) -> None:
    config, layers, data, model = digits_study
    result, problem = _measured(config, layers, data, model)
    found = prior_seeds(problem, result, FAMILIES, 3, count=15)
    assert [s.attrs["prior"]["family"] for s in found[:5]] == list(FAMILIES)
    assert len({s.attrs["prior"]["target_bits"] for s in found[:3]}) == 3  # every target early
    specs = knob_specs(config, layers)
    for seed in found:
        assert set(seed.params) == {n for n in specs if n.startswith(("keep.", "bits."))}
        assert all(contains(specs[n], v) for n, v in seed.params.items()), seed.params
        prior = seed.attrs["prior"]
        assert prior["predicted_storage_bits"] <= prior["target_bits"]
        assert 0 < prior["overall_keep"] <= 1
    assert len({tuple(sorted(s.params.items())) for s in found}) == len(found)
    zero_cost = [s for s in found if s.attrs["prior"]["family"] != "sensitivity"]
    summary = result.summary(drop=0.01).set_index("unit")["levels_within"]
    for seed in zero_cost:  # bits: the fewest within 1 point in the sensitivity pass
        assert all(seed.params[f"bits.{u}"] == summary[u] for u in summary.index)
    assert len(prior_seeds(problem, result, FAMILIES, 3, count=4)) == 4


def test_a_prior_clipped_to_a_units_range_says_so(tiny_study) -> None:
    search = {"layers": {"fc2": {"keep": {"low": 0.9, "high": 1.0}}}}
    config, layers = validate_study(tiny_study(search=search, enqueue=[]))
    data = load_dataset("digits", seed=0, limit_train=300)
    model = build_model(config, data)
    problem = prior_problem(config, layers, model, None)
    (seed,) = prior_seeds(problem, None, ["global"], 1, count=1)
    clipped = seed.attrs["prior"]["clipped"]["fc2"]
    assert clipped["family_keep"] < 0.9 and clipped["keep"] == seed.params["keep.fc2"] == 0.9
    tags = origin_tags(seed.attrs)
    assert tags["admmsearch.origin"] == "prior" and tags["admmsearch.prior_family"] == "global"
    assert tags["admmsearch.prior_clipped"] == "fc2"


def test_seeds_lie_in_the_search_space_and_within_their_budgets(digits_study) -> None:
    config, layers, data, model = digits_study
    result = measure(model, data, unit_spaces(config, layers), keep_points=4)
    found = seeds(result, config, layers, count=3)
    assert 1 <= len(found) <= 3
    specs = knob_specs(config, layers)
    budgets = [s.attrs["seeded"]["budget_bits"] for s in found]
    assert budgets == sorted(budgets)
    for seed in found:
        assert set(seed.params) == {n for n in specs if n.startswith(("keep.", "bits."))}
        assert all(contains(specs[n], v) for n, v in seed.params.items())
        attrs = seed.attrs["seeded"]
        assert attrs["predicted_storage_bits"] <= attrs["budget_bits"]
    assert len({tuple(sorted(s.params.items())) for s in found}) == len(found)


@pytest.mark.slow
def test_a_new_study_runs_its_seeds_first_and_says_so(tmp_path, tiny_study, study_context) -> None:
    path = tiny_study(budget={"trials": 4}, sensitivity={"keep_points": 4})
    ctx = study_context(path)
    study = run_study(ctx)
    origins = [
        "seeded" if "seeded" in t.user_attrs else "enqueued" if "enqueued" in t.user_attrs else ""
        for t in study.trials
    ]
    assert origins == ["enqueued", "seeded", "seeded", ""]  # the study file's, 2 seeds, 1 drawn
    first, second = (t.user_attrs["seeded"] for t in study.trials[1:3])
    assert first["budget_bits"] < second["budget_bits"]  # the smallest budget first
    for seeded in (first, second):
        assert seeded["predicted_storage_bits"] <= seeded["budget_bits"]
    runs = search_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", ctx.config.name)
    trials = runs[runs["tags.admmsearch.role"] == "trial"].sort_values("tags.admmsearch.trial")
    assert list(trials["tags.admmsearch.origin"]) == ["enqueued", "seeded", "seeded", "sampled"]
    parent = runs[runs["tags.admmsearch.role"] == "study"].iloc[0]
    assert parent["metrics.sensitivity_seconds"] > 0
    shown = CliRunner().invoke(main, ["show", ctx.config.name, "--storage", ctx.storage])
    assert shown.exit_code == 0, shown.output
    assert "seeded trials    1 (" in shown.output and "2 (" in shown.output
    again = run_study(study_context(path), trials=5)  # resumed: no new seeds
    assert sum("seeded" in t.user_attrs for t in again.trials) == 2


@pytest.mark.slow
def test_seeding_can_be_turned_off(tiny_study, study_context) -> None:
    search = {**load_study(tiny_study()).search.model_dump(mode="json")}
    search["seed_from_sensitivity"] = False
    path = tiny_study(budget={"trials": 2}, enqueue=[], search=search)
    ctx = study_context(path)
    study = run_study(ctx)
    assert not any("seeded" in t.user_attrs for t in study.trials)
    assert "sensitivity" not in study.user_attrs
    assert optuna.trial.TrialState.COMPLETE in {t.state for t in study.trials}


@pytest.mark.slow
def test_a_new_study_runs_its_priors_then_its_seeds_and_says_so(
    tmp_path, tiny_study, study_context
) -> None:
    search = {**load_study(tiny_study()).search.model_dump(mode="json")}
    search["priors"] = {"families": ["global", "erk"], "targets": 1, "placement": "grid"}
    path = tiny_study(budget={"trials": 6}, sensitivity={"keep_points": 4}, search=search)
    ctx = study_context(path)
    study = run_study(ctx)
    attrs = [t.user_attrs for t in study.trials]
    origins = [next((k for k in ("enqueued", "prior", "seeded") if k in a), "") for a in attrs]
    assert origins == ["enqueued", "prior", "prior", "seeded", "", ""]  # 3 = half of 6
    assert [a["prior"]["family"] for a in attrs[1:3]] == ["global", "erk"]
    assert attrs[1]["prior"]["target_bits"] == attrs[2]["prior"]["target_bits"]
    runs = search_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", ctx.config.name)
    trials = runs[runs["tags.admmsearch.role"] == "trial"].sort_values("tags.admmsearch.trial")
    assert list(trials["tags.admmsearch.origin"]) == [
        "enqueued",
        "prior",
        "prior",
        "seeded",
        "sampled",
        "sampled",
    ]
    assert list(trials["tags.admmsearch.prior_family"])[1:3] == ["global", "erk"]
    shown = CliRunner().invoke(main, ["show", ctx.config.name, "--storage", ctx.storage])
    assert shown.exit_code == 0, shown.output
    assert "prior trials     1 (global, " in shown.output and "2 (erk, " in shown.output


def test_a_promoted_trial_is_tagged_promoted_and_a_retry_of_one_retry() -> None:
    assert origin_tags({"rung": 1, "continues": 3}) == {"admmsearch.origin": "promoted"}
    retried = origin_tags({"retry_of": 7, "rung": 1, "continues": 3})
    assert retried == {"admmsearch.origin": "retry", "admmsearch.retry_of": "7"}
    assert origin_tags({"enqueued": 0}) == {"admmsearch.origin": "enqueued"}
