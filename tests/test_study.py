"""A real small study on digits, end to end: Optuna storage, MLflow runs, the front artifact."""

from __future__ import annotations

import io

import optuna
import pandas as pd
import pytest
import yaml

from admmsearch.config import load_study, resolve_layers
from admmsearch.search.failures import RepeatedFailure
from admmsearch.search.front import trials_frame
from admmsearch.search.study import finished_count, prepare, run_study, update_front
from admmsearch.tracking import search_runs

pytestmark = pytest.mark.slow  # subprocesses or real studies, every test

STUDY = {
    "name": "digits-test",
    "seed": 0,
    "model": "digits-cnn",
    "dataset": {"name": "digits", "limit_train": 600},
    "dense": {"train": {"epochs": 8, "lr": 0.05, "batch_size": 32}},
    "pipeline": {
        "admm_prune": {
            "train": {"epochs": 2, "lr": 0.02, "batch_size": 32},
            "rho": {"start": 0.01, "end": 1.0, "updates": 8},
        },
        "retrain": {"epochs": 1, "lr": 0.01, "batch_size": 32},
        "admm_quantize": {
            "train": {"epochs": 1, "lr": 0.01, "batch_size": 32},
            "rho": {"start": 0.01, "end": 1.0, "updates": 8},
        },
        "quant_retrain": {
            "train": {"epochs": 1, "lr": 0.005, "batch_size": 32},
            "shares": [0.5, 1.0],
        },
    },
    "search": {
        "keep": {"low": 0.05, "high": 1.0, "log": True},
        "bits": {"choices": [2, 4, None]},
        "groups": {"convs": ["conv1", "conv2"]},
    },
    "objectives": ["val_accuracy", "storage_bits_with_index"],
    "sampler": {"name": "nsga2", "population_size": 2},
    "budget": {"trials": 4},
}


def make_config(tmp_path, **changes):
    data = {**STUDY, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_study(path)
    return config, resolve_layers(config)


def context(tmp_path, config, layers):
    return prepare(
        config,
        layers,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )


def trial_runs(tmp_path, name):
    runs = search_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", name)
    return runs[runs["tags.admmsearch.role"] == "trial"]


@pytest.fixture()
def mlruns(tmp_path):
    (tmp_path / "mlruns").mkdir()
    return tmp_path


def test_study_end_to_end_is_tracked_and_has_its_front(mlruns) -> None:
    tmp_path = mlruns
    same_pruning = {"keep.convs": 0.5, "keep.fc1": 0.2, "keep.fc2": 0.5}
    enqueue = [
        {**same_pruning, "bits.convs": 4, "bits.fc1": 4, "bits.fc2": 4},
        {**same_pruning, "bits.convs": 2, "bits.fc1": 2, "bits.fc2": None},
    ]
    config, layers = make_config(tmp_path, enqueue=enqueue)
    ctx = context(tmp_path, config, layers)
    study = run_study(ctx)
    first, second = study.trials[0], study.trials[1]
    assert not first.user_attrs["pruning_cache_hit"] and second.user_attrs["pruning_cache_hit"]
    assert (
        first.user_attrs["metrics"]["val_accuracy.retrain"]
        == second.user_attrs["metrics"]["val_accuracy.retrain"]
    )
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 4 and finished_count(study) == 4
    runs = trial_runs(tmp_path, config.name)
    assert len(runs) == 4
    assert sorted(runs["tags.admmsearch.trial"].astype(int)) == [t.number for t in done]
    for t in done:
        run = runs[runs["run_id"] == t.user_attrs["mlflow_run_id"]].iloc[0]
        assert run["tags.admmsearch.study"] == config.name
        assert float(run["metrics.val_accuracy"]) == pytest.approx(t.values[0])
        assert float(run["metrics.storage_bits_with_index"]) == pytest.approx(t.values[1])
        for layer in layers:
            assert f"params.keep.{layer}" in run and f"metrics.sparsity.{layer}" in run
        assert "metrics.primal_residual.admm_prune" in run
        split = t.user_attrs["timings"]  # where the trial's time went (admmsearch.timing)
        assert {"suggest", "tracking", "evaluate", "codebook", "accounting", "pack"} <= set(split)
        assert split["trial"] >= sum(v for k, v in split.items() if k != "trial") > 0
    parent = study.user_attrs["mlflow_parent_run_id"]
    client = ctx.tracker.client
    names = {a.path for a in client.list_artifacts(parent)}
    assert {"front.csv", "front.png", "front.html", "study.yaml"} <= names
    assert client.get_run(parent).info.status == "FINISHED"  # budget spent, nothing running
    local = client.download_artifacts(parent, "front.csv", str(tmp_path))
    logged = pd.read_csv(local)
    expected = trials_frame(study, list(config.objectives))
    pd.testing.assert_frame_equal(
        logged.reset_index(drop=True), pd.read_csv(io.StringIO(expected.to_csv(index=False)))
    )
    front = sorted(t.number for t in study.best_trials)
    assert sorted(logged[logged["front"]]["trial"]) == front
    for number in front:
        run_id = study.trials[number].user_attrs["mlflow_run_id"]
        assert [a.path for a in client.list_artifacts(run_id, "model")]
    # the README's filter shows the front's runs, and only them
    experiment = client.get_run(parent).info.experiment_id
    shown = client.search_runs([experiment], 'tags.admmsearch.front = "true"')
    assert sorted(int(r.data.tags["admmsearch.trial"]) for r in shown) == front
    reloaded = optuna.load_study(study_name=config.name, storage=ctx.storage)
    assert reloaded.metric_names == list(config.objectives)
    # a trial that dominates them all: the old front's runs are tagged false, its own true
    best = max(t.user_attrs["metrics"]["val_accuracy"] for t in done)
    metrics = {**done[0].user_attrs["metrics"], "val_accuracy": best + 0.01}
    metrics["storage_bits_with_index"] = 1000
    number = len(study.trials)
    attrs = {"metrics": metrics, "mlflow_run_id": ctx.tracker.trial_run(parent, number)}
    study.add_trial(optuna.trial.create_trial(values=[best + 0.01, 1000], user_attrs=attrs))
    update_front(ctx)
    runs = client.search_runs([experiment], "tags.admmsearch.front != ''")
    tags = {int(r.data.tags["admmsearch.trial"]): r.data.tags["admmsearch.front"] for r in runs}
    assert [n for n, tag in tags.items() if tag == "true"] == [number]
    assert all(tags[n] == "false" for n in front)  # they left the front: the tag says so


def test_interrupted_study_resumes_without_duplicates_or_losses(mlruns) -> None:
    tmp_path = mlruns
    config, layers = make_config(tmp_path, name="digits-resume")
    ctx = context(tmp_path, config, layers)
    seen = []

    def interrupt_third_trial(stage, epoch, loss):
        seen.append(stage)
        if len(ctx.study.trials) == 3 and stage == "retrain":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(ctx, on_epoch=interrupt_third_trial)
    assert finished_count(ctx.study) == 2
    ctx = context(tmp_path, config, layers)  # a fresh process would do the same
    study = run_study(ctx)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    interrupted = study.trials[2]
    assert interrupted.user_attrs["interrupted"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].params == interrupted.params
    runs = trial_runs(tmp_path, config.name)
    assert sorted(runs["tags.admmsearch.trial"].astype(int)) == [t.number for t in study.trials]
    assert set(runs[runs["tags.admmsearch.trial"] == "2"]["status"]) == {"KILLED"}


def test_diverging_trial_is_failed_with_reason_and_study_goes_on(mlruns) -> None:
    tmp_path = mlruns
    search = {**STUDY["search"], "lr": {"choices": [0.02, 1.0e6]}}
    config, layers = make_config(
        tmp_path,
        name="digits-diverge",
        search=search,
        enqueue=[{"lr": 1.0e6}],
        budget={"trials": 3},
    )
    study = run_study(context(tmp_path, config, layers))
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL
    assert "stage admm_prune" in first.user_attrs["fail_reason"]
    assert first.user_attrs["epochs"] == 1  # the epoch it diverged in, not the 6 it reserved
    assert finished_count(study) == 3
    runs = trial_runs(tmp_path, config.name)
    run = runs[runs["tags.admmsearch.trial"] == "0"].iloc[0]
    assert run["status"] == "FAILED" and "loss became" in run["tags.admmsearch.fail_reason"]


def test_two_worker_processes_share_one_study(mlruns, tmp_path_factory) -> None:
    from admmsearch.search.study import run_parallel

    tmp_path = mlruns
    config, layers = make_config(tmp_path, name="digits-parallel", budget={"trials": 4})
    ctx = context(tmp_path, config, layers)
    study = run_parallel(tmp_path / "study.yaml", ctx, jobs=2)
    study = optuna.load_study(study_name=config.name, storage=ctx.storage)
    numbers = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(numbers) >= 4 and len(set(numbers)) == len(numbers)
    runs = trial_runs(tmp_path, config.name)
    assert sorted(runs["tags.admmsearch.trial"].astype(int)) == [t.number for t in study.trials]


def test_the_same_error_in_every_trial_stops_the_study_without_spending_its_budget(
    mlruns,
) -> None:
    """cases/35's kind: a failure inside the pipeline that every trial meets (here a training
    step that runs out of memory after the dense model) failed each trial, counted it and went
    on; now errored trials do not count, and three in a row with the same error stop the
    study with one line naming them and the error."""
    tmp_path = mlruns
    (tmp_path / "oom.py").write_text(
        "def step(batch):\n"
        "    if batch.stage != 'dense':\n"
        "        raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
        "    return batch.loss(batch.model(batch.x), batch.y)\n"
    )
    config, layers = make_config(
        tmp_path,
        name="digits-oom",
        training={"step": f"{tmp_path / 'oom.py'}:step"},
        budget={"trials": 2},
        dense={"train": {"epochs": 2, "lr": 0.05, "batch_size": 32}},
    )
    ctx = context(tmp_path, config, layers)
    with pytest.raises(RepeatedFailure) as err:
        run_study(ctx)
    message = str(err.value)
    assert message.startswith(
        "trials 0, 1, 2 failed with the same error, so it does not depend on their settings: "
    )
    assert "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB; the study" in message
    assert [t.state for t in ctx.study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["interrupted"] for t in ctx.study.trials)
    assert finished_count(ctx.study) == 0  # the budget of 2 is untouched


def test_a_resume_with_more_trials_records_its_budget(mlruns) -> None:
    from admmsearch.search.catalog import open_existing
    from admmsearch.search.report import describe

    tmp_path = mlruns
    config, layers = make_config(tmp_path, name="digits-more", budget={"trials": 1})
    run_study(context(tmp_path, config, layers))
    study = run_study(context(tmp_path, config, layers), trials=2)
    assert study.user_attrs["budget"] == 2
    opened = open_existing(
        "digits-more",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
    )
    facts = dict(describe(opened))
    assert facts["budget"].startswith("2 of 2 trials") and facts["trials"] == "2 complete"


def test_a_study_says_once_what_is_folded_and_what_stays_raw(mlruns) -> None:
    """cases/42: prepare said the BatchNorms that every trial folds were stored raw, and so
    did layers.json; now both say what the packed files hold."""
    import json

    from admmsearch.fold import describe_layers
    from admmsearch.packed import read_packed

    tmp_path = mlruns
    search = {"keep": {"low": 0.3, "high": 1.0}, "bits": {"choices": [4, 8]}}
    model = {"name": "resnet20", "kwargs": {"blocks": 1}}
    dense = {"train": {"epochs": 4, "lr": 0.05, "batch_size": 32}}
    config, layers = make_config(tmp_path, model=model, search=search, dense=dense)
    ctx = context(tmp_path, config, layers)
    assert ctx.uncompressed == {} and len(ctx.folding.pairs) == 7
    text = describe_layers(ctx.folding.pairs, ctx.uncompressed)
    assert text.splitlines()[0].startswith("BatchNorm folded into convolutions: bn1 -> conv1, ")
    assert text.splitlines()[1] == "uncompressed layers (stored raw): none"
    client = ctx.tracker.client
    logged = json.loads(
        open(client.download_artifacts(ctx.parent_run, "layers.json", str(tmp_path))).read()
    )
    assert logged["uncompressed"] == {} and len(logged["folded_batchnorm"]) == 7
    study = run_study(ctx, trials=1)
    state = read_packed(study.trials[0].user_attrs["packed_model"])
    weighted = {key.rsplit(".", 1)[0] for key in state if key.endswith(".weight")}
    assert weighted - set(layers) == set(ctx.uncompressed)  # what the packed file holds raw
    assert not any("bn" in key for key in state)
