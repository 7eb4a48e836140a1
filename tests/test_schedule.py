"""A study's schedule (search.schedule) on real studies: the budget in epochs held exactly by
two workers and across a resume, successive halving's promotions continuing their lower rung's
model with only the added epochs counted, and lower rungs kept off the front and out of
export's policies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import create_trial

from admmsearch.config import StudyConfig, base_pipeline, load_study, resolve_layers
from admmsearch.fidelity import rung_pipeline, trial_epochs
from admmsearch.record import StudyAttr, TrialAttr
from admmsearch.search.catalog import OpenedStudy
from admmsearch.search.export import choose_trial
from admmsearch.search.front import front_trials
from admmsearch.search.schedule import Budget, Schedule, spent
from admmsearch.search.study import prepare, run_parallel, run_study
from admmsearch.stage_cache import load_pruned

RUNGS = {
    "name": "rungs",
    "model": "digits-cnn",
    "dataset": {"name": "digits", "limit_train": 400},
    "dense": {"train": {"epochs": 2, "lr": 0.05, "batch_size": 64}},
    "pipeline": {
        "admm_prune": {"train": {"epochs": 1, "batch_size": 64}, "rho": {"updates": 2}},
        "retrain": {"epochs": 4, "batch_size": 64},
        "admm_quantize": None,
        "quant_retrain": None,
    },
    "search": {
        "keep": {"low": 0.05, "high": 1.0, "log": True},
        "bits": None,
        "seed_from_sensitivity": False,
        "rungs": {"eta": 2, "count": 2},
    },
    "sampler": {"name": "random"},
    "budget": {"epochs": 16},
    "workers": {"heartbeat_interval_s": 2, "grace_period_s": 60},
}


def _study(tmp_path: Path, **changes) -> tuple[StudyConfig, list[str], dict[str, str]]:
    path = tmp_path / "rungs.yaml"
    path.write_text(yaml.safe_dump({**RUNGS, **changes}))
    config = load_study(path)
    stores = {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "workdir": tmp_path / "work",
    }
    return config, resolve_layers(config), stores


def _cheapest_job(config: StudyConfig, layers: list[str]) -> int:
    """The fewest epochs any trial of the study can add (a promotion or a new setting)."""
    schedule = Schedule(config, layers, Budget())
    return min(schedule.rung_costs())


@pytest.mark.slow
def test_two_workers_and_a_resume_spend_the_epoch_budget_exactly(tmp_path) -> None:
    config, layers, stores = _study(tmp_path)
    ctx = prepare(config, layers, **stores)
    run_parallel(tmp_path / "rungs.yaml", ctx, 2, epochs=10)
    first = spent(ctx.study.get_trials(deepcopy=False))
    assert 10 - _cheapest_job(config, layers) < first.epochs <= 10
    study = run_study(prepare(config, layers, **stores))  # resume to the file's 16 epochs
    now = spent(study.get_trials(deepcopy=False))
    assert 16 - _cheapest_job(config, layers) < now.epochs <= 16 and now.running == 0
    counted = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert sum(t.user_attrs[TrialAttr.EPOCHS] for t in counted) == now.epochs
    workers = {t.user_attrs[TrialAttr.WORKER]["pid"] for t in counted[: first.trials]}
    assert len(workers) == 2  # both workers took trials


@pytest.mark.slow
def test_a_promotion_continues_its_lower_rungs_masks_and_counts_only_added_epochs(
    tmp_path,
) -> None:
    config, layers, stores = _study(tmp_path, budget={"epochs": 12})
    ctx = prepare(config, layers, **stores)
    study = run_study(ctx)
    promoted = [t for t in study.trials if t.user_attrs.get(TrialAttr.CONTINUES) is not None]
    assert promoted, [t.user_attrs for t in study.trials]
    top = base_pipeline(config)
    low = rung_pipeline(top, 0.5)
    rungs = ctx.dense.path.parent / "rungs"
    for trial in promoted:
        lower = study.trials[trial.user_attrs[TrialAttr.CONTINUES]]
        assert lower.user_attrs[TrialAttr.RUNG] == 0 and trial.user_attrs[TrialAttr.RUNG] == 1
        assert lower.params == trial.params
        assert trial.user_attrs[TrialAttr.EPOCHS] == trial_epochs(top, continues=low) == 2
        assert lower.user_attrs[TrialAttr.EPOCHS] == trial_epochs(low) == 3
        state = {
            t.number: load_pruned(rungs / f"rungs-trial-{t.number}.pt", ctx.dense.state)
            for t in (lower, trial)
        }
        for layer, mask in state[lower.number].masks.items():
            assert torch.equal(mask, state[trial.number].masks[layer])  # the same masks
        names = [s.name for s in state[trial.number].stages]
        assert names == ["dense", "admm_prune", "retrain", "retrain_rung1"]


def _rung_study() -> OpenedStudy:
    """A finished study of successive halving: the smallest trials only reached rung 0."""
    config = StudyConfig.model_validate({**RUNGS, "constraints": {"max_accuracy_drop": 0.05}})
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(StudyAttr.TOP_RUNG, 1)
    for rung, accuracy, bits in ((0, 0.95, 10_000), (1, 0.96, 50_000), (1, 0.95, 80_000)):
        metrics = {
            "val_accuracy": accuracy,
            "accuracy_drop": 0.96 - accuracy,
            "storage_bits_with_index": bits,
        }
        attrs = {"metrics": metrics, TrialAttr.RUNG: rung}
        study.add_trial(create_trial(values=[accuracy, bits], user_attrs=attrs))
    return OpenedStudy(study, config, ["conv1"], "sqlite:///unused.db", "sqlite:///unused-ml.db")


def test_lower_rungs_are_never_on_the_front_nor_exported_by_a_policy() -> None:
    opened = _rung_study()
    assert [t.number for t in front_trials(opened.study)] == [1]  # trial 0 is smaller, rung 0
    trial, why = choose_trial(opened, policy="max-compression", max_drop=0.05)
    assert trial.number == 1
    # and says so: the lower rung's smaller trial was not a candidate
    assert why == "best of 2 completed top-rung trials with accuracy drop <= 0.05"
