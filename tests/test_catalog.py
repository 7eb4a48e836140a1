"""Reading existing studies back by name: what `list`, `show`, `pareto` and `export` open."""

from __future__ import annotations

import csv
import io
import json

import optuna
import pandas as pd
from click.testing import CliRunner

from admmsearch.cli import main


def test_a_study_recorded_by_another_version_is_one_line_naming_it(tmp_path) -> None:
    """A study whose recorded study file no longer validates (a setting renamed since) is refused
    in one line that says how to open it, not with pydantic's report and exit 1."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="older", storage=storage)
    recorded = {"name": "older", "model": "digits-cnn", "dataset": "digits", "bogus": 1}
    study.set_user_attr("config", recorded)
    result = CliRunner().invoke(main, ["show", "older", "--storage", storage])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: study 'older': its recorded study file")
    assert "bogus: unknown field" in line and "by its study file" in line


def _infeasible_study(storage: str, budget: int = 2, completed: int = 2) -> optuna.Study:
    """cases/37 without training: a finished study whose constraint max_storage_bits 1000 no
    trial meets (each packed file is 100 000 bits or more)."""
    from admmsearch.config import StudyConfig

    config = StudyConfig.model_validate(
        {
            "name": "all-infeasible",
            "model": "digits-cnn",
            "dataset": "digits",
            "constraints": {"max_accuracy_drop": 0.05, "max_storage_bits": 1000},
            "budget": {"trials": budget},
        }
    )
    study = optuna.create_study(
        study_name=config.name, storage=storage, directions=config.directions
    )
    study.set_user_attr("config", config.resolved_dict())
    study.set_user_attr("layers", ["conv1", "conv2", "fc1", "fc2"])
    for i in range(completed):
        bits, drop = 100_000.0 + 20_000 * (completed - i), 0.01 * i
        metrics = {
            "val_accuracy": 0.97 - drop,
            "test_accuracy": 0.96,
            "accuracy_drop": drop,
            "storage_bits_with_index": bits,
            "payload_bits": bits - 2500,
            "compression_ratio_with_index": 10.0,
            "weight_ratio_no_index": 12.0,
        }
        trial = study.ask()
        trial.set_user_attr("metrics", metrics)
        trial.set_constraint("accuracy_drop", drop - 0.05)
        trial.set_constraint("storage_bits", bits - 1000)
        study.tell(trial, [metrics["val_accuracy"], bits])
    return study


def test_a_study_no_trial_of_which_meets_its_constraints_says_which_and_the_closest(
    tmp_path,
) -> None:
    """show, list and pareto name the broken constraint and the closest trial; pareto lists
    the trials with feasible=False instead of exit 2; no 'yet' for a spent budget."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    _infeasible_study(storage)
    runner = CliRunner()
    note = (
        "constraints.max_storage_bits 1000 is broken by 2 of 2 completed trials "
        "(closest: trial 1 with 120000 bits)"
    )
    show = runner.invoke(main, ["show", "all-infeasible", "--storage", storage])
    assert show.exit_code == 0, show.output
    assert f"Pareto front: none: no trial meets the constraints: {note}" in show.stdout
    assert "yet" not in show.stdout
    listed = runner.invoke(main, ["list", "--storage", storage, "--format", "json"])
    assert json.loads(listed.stdout)[0]["unmet"] == note
    pareto = runner.invoke(
        main, ["pareto", "all-infeasible", "--storage", storage, "--format", "csv"]
    )
    assert pareto.exit_code == 0, pareto.output
    rows = list(csv.DictReader(io.StringIO(pareto.stdout)))
    assert [(r["trial"], r["feasible"]) for r in rows] == [("1", "False"), ("0", "False")]
    assert pareto.stderr == (
        f"warning: no trial meets the constraints: {note}; listed: every completed trial, "
        "the closest first\n"
    )


def test_show_and_list_count_against_the_budget_of_the_last_run(tmp_path) -> None:
    """A study file's budget of 2, resumed with --trials 3: '3 of 3 trials', not 'of 2'."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = _infeasible_study(storage, budget=2, completed=3)
    study.set_user_attr("budget", 3)  # what run_study records for --trials 3
    show = CliRunner().invoke(main, ["show", "all-infeasible", "--storage", storage])
    assert "budget           3 of 3 trials\ntrials           3 complete" in show.stdout
    listed = CliRunner().invoke(main, ["list", "--storage", storage, "--format", "json"])
    assert json.loads(listed.stdout)[0]["budget"] == 3


def test_all_trials_lists_every_trial_with_its_origin_settings_and_reason() -> None:
    """``show --all``: complete, failed, pruned and running trials alike, each with where its
    settings came from and what they are."""
    from admmsearch.config import StudyConfig
    from admmsearch.search.catalog import OpenedStudy
    from admmsearch.search.front import all_trial_records
    from admmsearch.search.report import study_report
    from admmsearch.search.space import suggest

    layers = ["conv1", "conv2", "fc1", "fc2"]
    config = StudyConfig.model_validate(
        {
            "name": "every",
            "model": "digits-cnn",
            "dataset": "digits",
            "search": {"keep": {"low": 0.05, "high": 1.0, "log": True}, "bits": {"choices": [2]}},
        }
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=config.directions, sampler=optuna.samplers.RandomSampler(0)
    )
    study.set_user_attr("config", config.resolved_dict())
    study.set_user_attr("layers", layers)
    study.enqueue_trial({f"keep.{layer}": 0.5 for layer in layers}, user_attrs={"enqueued": 0})
    trials = [study.ask() for _ in range(4)]
    plans = [suggest(t, config, layers).plan for t in trials]
    metrics = {"val_accuracy": 0.91234, "test_accuracy": 0.9, "accuracy_drop": 0.01}
    metrics.update({"storage_bits_with_index": 16384, "payload_bits": 16000})
    metrics.update({"compression_ratio_with_index": 9.0, "weight_ratio_no_index": 12.0})
    trials[0].set_user_attr("metrics", metrics)
    study.tell(trials[0], [0.91234, 16384])
    trials[1].set_user_attr("fail_reason", "diverged: loss is nan")
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)
    trials[2].set_user_attr("rung", 1)
    trials[2].set_user_attr("continues", 0)
    study.tell(trials[2], state=optuna.trial.TrialState.PRUNED)
    records = all_trial_records(study)
    assert [r["state"] for r in records] == ["complete", "fail", "pruned", "running"]
    assert [r["origin"] for r in records] == ["enqueued", "sampled", "promoted", "sampled"]
    assert [r["rung"] for r in records] == [None, None, 1, None]
    assert [r["layers"] for r in records] == [p.compact() for p in plans]
    assert records[0]["layers"] == "conv1 .50/2b conv2 .50/2b fc1 .50/2b fc2 .50/2b"
    assert records[0]["settings"]["fc2"] == {"keep": 0.5, "bits": 2}
    first = records[0]
    assert (first["val_accuracy"], first["storage_kib"], first["feasible"]) == (0.9123, 2.0, True)
    assert [r["feasible"] for r in records[1:]] == [None, None, None]
    opened = OpenedStudy(study, config, layers, "sqlite:///unused.db", "sqlite:///unused2.db")
    every = study_report(opened, every=True)["trials"]
    assert [r["reason"] for r in every] == [
        None,
        "diverged: loss is nan",
        "pruned, no reason recorded",
        None,
    ]


def _epoch_study(
    epochs: list[int], budget: dict, storage: str | None = None, name: str = "left"
) -> tuple[optuna.Study, object]:
    """A study of the default pipeline (a new setting reserves 13 epochs; no rungs) whose
    completed trials charged ``epochs``, with its study file recorded."""
    from admmsearch.config import StudyConfig
    from admmsearch.record import StudyAttr, TrialAttr

    config = StudyConfig.model_validate(
        {"name": name, "model": "digits-cnn", "dataset": "digits", "budget": budget}
    )
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    study.set_user_attr(StudyAttr.CONFIG, config.resolved_dict())
    study.set_user_attr(StudyAttr.LAYERS, ["conv1", "conv2", "fc1", "fc2"])
    for n in epochs:
        study.add_trial(
            optuna.trial.create_trial(values=[0.9, 1.0e5], user_attrs={TrialAttr.EPOCHS: n})
        )
    return study, config


def test_a_finished_study_says_how_many_epochs_no_trial_fits() -> None:
    """A study can stop with epochs left that no new trial fits: its stop reason and show's
    budget line say so rather than a bare 'budget spent'."""
    from admmsearch.search.catalog import OpenedStudy
    from admmsearch.search.report import describe, run_summary
    from admmsearch.search.schedule import epochs_bound

    study, config = _epoch_study([8, 8, 3], {"epochs": 22})
    assert epochs_bound(config, ["conv1", "conv2", "fc1", "fc2"]) == 13
    why = run_summary(study, config, 1.0, None)["why"]
    assert (
        why == "budget spent (19 of 22 epochs, 3 trials; the 3 epochs left fit no further trial)"
    )
    budget = dict(describe(OpenedStudy(study, config, [], "sqlite://", "file:mlruns")))["budget"]
    assert budget == "19 of 22 epochs, 3 trials; the 3 epochs left fit no further trial"  # show
    study, config = _epoch_study([8, 8, 5], {"epochs": 22})
    assert run_summary(study, config, 1.0, None)["why"].endswith(
        "; the 1 epoch left fits no further trial)"
    )
    study, config = _epoch_study([8, 8, 6], {"epochs": 22})
    assert (
        run_summary(study, config, 1.0, None)["why"] == "budget spent (22 of 22 epochs, 3 trials)"
    )
    opened = OpenedStudy(study, config, [], "sqlite://", "file:mlruns")
    assert dict(describe(opened))["budget"] == "22 of 22 epochs, 3 trials"
    study, config = _epoch_study([8, 3], {"epochs": 22, "trials": 2})
    assert run_summary(study, config, 1.0, None)["why"] == (
        "budget spent (2 of 2 trials, 11 of 22 epochs)"
    )


def test_list_says_how_many_epochs_a_finished_study_left_unused(tmp_path) -> None:
    """list's unused_epochs: what show and run say as 'the 3 epochs left fit no further
    trial', for a finished study only; none where the epochs ran out."""
    from admmsearch.search.report import study_rows

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    for name, epochs in (("left", [8, 8, 3]), ("spent", [8, 8, 6]), ("going", [8])):
        _epoch_study(epochs, {"epochs": 22}, storage, name)
    rows = study_rows(storage).set_index("study")
    assert rows.loc["left", "state"] == "finished" and rows.loc["left", "unused_epochs"] == 3
    assert rows.loc["spent", "state"] == "finished"
    assert rows.loc["spent", "unused_epochs"] is pd.NA
    assert rows.loc["going", "unused_epochs"] is pd.NA  # 14 epochs left: a trial fits


def test_show_gives_every_prior_target_and_seed_budget_to_three_decimals() -> None:
    """'2.18 KiB' beside '4.089 KiB' read as if measured to another precision."""
    from admmsearch.record import TrialAttr
    from admmsearch.search.catalog import OpenedStudy
    from admmsearch.search.report import describe

    study, config = _epoch_study([], {"epochs": 22})
    for attrs in (
        {TrialAttr.PRIOR: {"family": "global", "target_kib": 4.089}},
        {TrialAttr.PRIOR: {"family": "lamp", "target_kib": 2.18}},
        {TrialAttr.SEEDED: {"budget_kib": 5.6}},
    ):
        study.add_trial(
            optuna.trial.create_trial(values=[0.9, 1.0e5], user_attrs={**attrs, "epochs": 1})
        )
    facts = dict(describe(OpenedStudy(study, config, [], "sqlite://", "file:mlruns")))
    assert facts["prior trials"] == (
        "0 (global, 4.089 KiB), 1 (lamp, 2.180 KiB) (family, storage target)"
    )
    assert facts["seeded trials"] == "2 (5.600 KiB budget) (from the sensitivity pass)"
