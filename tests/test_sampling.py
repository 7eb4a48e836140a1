"""Every trial new: per-trial seeding across processes, resumes and workers; reproducible alone."""

from __future__ import annotations

import itertools

import optuna
import pytest

from admmsearch.config import StudyConfig
from admmsearch.search.sampling import PerTrialSampler, trial_seed
from admmsearch.search.study import make_sampler, run_parallel, run_study, startup_trials


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _draw(study: optuna.Study) -> tuple[float, int]:
    trial = study.ask()
    params = (trial.suggest_float("x", 0, 1), trial.suggest_categorical("b", [2, 3, 4, 8]))
    study.tell(trial, params[0])
    return params


def test_trial_seed_depends_on_seed_and_number() -> None:
    seeds = {trial_seed(s, n) for s in range(3) for n in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**32 for s in seeds)
    assert trial_seed(7, 3) == trial_seed(7, 3)


def test_two_processes_on_one_storage_draw_different_settings(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    name = "two"
    optuna.create_study(study_name=name, storage=url)
    # Two processes of one study: each loads it with its own sampler built from the same seed.
    a, b = (
        optuna.load_study(study_name=name, storage=url, sampler=PerTrialSampler(_random, 0))
        for _ in range(2)
    )
    drawn = [_draw(s) for s in (a, b, a, b, b, a)]
    assert len(set(drawn)) == len(drawn)


def test_a_fresh_study_with_a_seed_draws_the_same_settings() -> None:
    def run(seed: int) -> list[tuple[float, int]]:
        study = optuna.create_study(sampler=PerTrialSampler(_random, seed))
        return [_draw(study) for _ in range(5)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_resuming_continues_the_sequence_of_a_single_run() -> None:
    """Trial n draws with the seed of n whichever process runs it: stopping after two trials
    and resuming gives the settings one uninterrupted run gives."""
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, sampler=PerTrialSampler(_random, 1))
    drawn = [_draw(first) for _ in range(2)]
    again = optuna.load_study(
        study_name=first.study_name, storage=storage, sampler=PerTrialSampler(_random, 1)
    )
    drawn += [_draw(again) for _ in range(2)]
    alone = optuna.create_study(sampler=PerTrialSampler(_random, 1))
    assert drawn == [_draw(alone) for _ in range(4)]


def _marked(trial: optuna.trial.FrozenTrial) -> bool:
    """Trials allowed to repeat settings: enqueued ones and retries, which say so."""
    attrs = trial.user_attrs
    return any(key in attrs for key in ("enqueued", "seeded", "retry_of"))


def _assert_no_unmarked_duplicates(study: optuna.Study) -> None:
    trials = [t for t in study.trials if t.params]
    for s, t in itertools.combinations(trials, 2):
        if s.params == t.params:
            assert _marked(s) or _marked(t), f"trials {s.number} and {t.number} repeat settings"
    assert sum(not _marked(t) for t in trials) >= 2  # the sampler drew some of them


@pytest.mark.slow
def test_a_resumed_study_draws_new_settings(tiny_study, study_context) -> None:
    path = tiny_study(enqueue=[], sampler={"name": "tpe"}, budget={"trials": 4})
    run_study(study_context(path), trials=2)
    study = run_study(study_context(path), trials=4)  # a second `admmsearch run`
    assert len(study.trials) == 4
    _assert_no_unmarked_duplicates(study)


@pytest.mark.slow
def test_two_workers_draw_new_settings(tiny_study, study_context) -> None:
    path = tiny_study(enqueue=[], sampler={"name": "nsga2", "population_size": 4})
    ctx = study_context(path)
    run_parallel(path, ctx, jobs=2, trials=4)
    study = optuna.load_study(study_name=ctx.config.name, storage=ctx.storage)
    assert len(study.trials) == 4
    _assert_no_unmarked_duplicates(study)


def _nsga2(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=4)


def _categorical_trial(study: optuna.Study) -> tuple[int, ...]:
    trial = study.ask()
    params = tuple(trial.suggest_categorical(f"bits.{n}", [2, 3, 4, 8]) for n in range(3))
    study.tell(trial, (sum(params), -max(params)))
    return params


def test_a_generation_never_repeats_a_setting_already_tried() -> None:
    """NSGA-II's crossover copies its parents' genes: on a small categorical space, children
    repeat trials already run (bench_joint saw 2 such pairs in 20 trials). A child that
    repeats a tried setting is drawn again, and the trial says how often."""
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=PerTrialSampler(_nsga2, 0)
    )
    drawn = [_categorical_trial(study) for _ in range(24)]  # 24 of the 64 settings
    assert len(set(drawn)) == len(drawn)
    redrawn = [t.user_attrs.get("redrawn", 0) for t in study.trials]
    assert sum(redrawn) > 0  # the test space makes NSGA-II repeat itself
    again = optuna.create_study(
        directions=["minimize", "minimize"], sampler=PerTrialSampler(_nsga2, 0)
    )
    assert [_categorical_trial(again) for _ in range(24)] == drawn  # still reproducible


def test_enqueued_settings_may_repeat_a_tried_one() -> None:
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=PerTrialSampler(_nsga2, 0)
    )
    first = _categorical_trial(study)
    study.enqueue_trial({f"bits.{n}": v for n, v in enumerate(first)})
    assert _categorical_trial(study) == first


@pytest.mark.parametrize(
    ("budget", "startup"),
    [({"trials": 3}, 2), ({"trials": 12}, 2), ({"trials": 20}, 4), ({"trials": 50}, 10),
     ({"trials": 400}, 10), ({"timeout_s": 60}, 10)],
)  # fmt: skip
def test_the_start_up_is_sized_to_the_trial_budget(budget, startup) -> None:
    config = StudyConfig.model_validate(
        {"name": "s", "model": "digits-cnn", "dataset": "digits", "budget": budget}
    )
    assert startup_trials(config) == startup


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_enqueued_trials_count_towards_the_start_up(sampler: str) -> None:
    """A 12-trial study starts with 2 random trials; two enqueued, completed trials fill them,
    so the third trial is already drawn by the model (its relative sample is not empty)."""
    config = StudyConfig.model_validate(
        {
            "name": "s",
            "model": "digits-cnn",
            "dataset": "digits",
            "sampler": {"name": sampler},
            "budget": {"trials": 12},
        }
    )
    made = make_sampler(config, seed=0)
    study = optuna.create_study(sampler=made)

    def model_draws() -> bool:
        trial = study.ask()
        frozen = study.trials[-1]
        space = made.infer_relative_search_space(study, frozen)
        guided = bool(space) and bool(made.sample_relative(study, frozen, space))
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, (x - 0.3) ** 2)
        return guided

    study.enqueue_trial({"x": 0.9}, user_attrs={"enqueued": 0})
    assert not model_draws()  # the enqueued trial: nothing finished yet
    study.enqueue_trial({"x": 0.1}, user_attrs={"seeded": {}})
    assert not model_draws()  # one finished trial: still in the start-up
    assert model_draws()  # two finished, both enqueued: the model guides trial 2
