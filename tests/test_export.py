"""Exporting a trial (search.export), in-process: which trial each policy chooses, why, and
the settings file written and read back."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import create_trial

from admmsearch.config import StudyConfig
from admmsearch.errors import ConfigError, NoTrialError
from admmsearch.search.catalog import OpenedStudy
from admmsearch.search.export import choose_trial, settings_document
from admmsearch.settings_file import read_settings, write_settings

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
DENSE = 0.97
# (validation accuracy, packed bits): drops 0.01, 0.04, 0.10 from the dense 0.97
TRIALS = [(0.96, 80_000), (0.93, 30_000), (0.87, 10_000)]


def _opened(constraints: dict | None = None) -> OpenedStudy:
    config = StudyConfig.model_validate(
        {
            "name": "exported",
            "model": "digits-cnn",
            "dataset": "digits",
            "search": {"keep": 0.5, "bits": 4},
            "constraints": constraints or {"max_accuracy_drop": 0.05},
        }
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="exported", directions=["maximize", "minimize"])
    for accuracy, bits in TRIALS:
        metrics = {
            "val_accuracy": accuracy,
            "test_accuracy": accuracy - 0.01,
            "accuracy_drop": round(DENSE - accuracy, 6),
            "storage_bits_with_index": bits,
            "compression_ratio_with_index": 800_000 / bits,
        }
        study.add_trial(create_trial(values=[accuracy, bits], user_attrs={"metrics": metrics}))
    study.add_trial(create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"x": 1}))
    return OpenedStudy(study, config, LAYERS, "sqlite:///unused.db", "sqlite:///unused-ml.db")


def test_max_compression_is_the_smallest_file_within_the_drop() -> None:
    trial, why = choose_trial(_opened(), policy="max-compression")
    assert trial.number == 1 and why == "best of 2 completed trials with accuracy drop <= 0.05"
    trial, _ = choose_trial(_opened(), policy="max-compression", max_drop=0.2)
    assert trial.number == 2


def test_max_accuracy_is_the_best_accuracy_within_the_storage() -> None:
    trial, why = choose_trial(_opened(), policy="max-accuracy", max_storage_bits=40_000)
    assert trial.number == 1 and "storage <= " in why
    with pytest.raises(ConfigError, match="needs --max-storage-kib"):
        choose_trial(_opened(), policy="max-accuracy")


def test_a_trial_by_number_must_be_a_completed_one() -> None:
    assert choose_trial(_opened(), number=2)[0].number == 2
    with pytest.raises(NoTrialError, match="trial 3 of study 'exported' is fail"):
        choose_trial(_opened(), number=3)
    with pytest.raises(NoTrialError, match="has no trial 9"):
        choose_trial(_opened(), number=9)


def test_no_trial_within_the_bound_names_the_closest() -> None:
    with pytest.raises(NoTrialError, match=r"closest: trial 0 with accuracy drop 0\.0100"):
        choose_trial(_opened(), policy="max-compression", max_drop=0.001)
    with pytest.raises(ConfigError, match="unknown policy 'smallest'"):
        choose_trial(_opened(), policy="smallest")


@pytest.mark.parametrize("name", ["settings.yaml", "settings.json"])
def test_the_settings_file_reads_back_as_written(tmp_path: Path, name: str) -> None:
    opened = _opened()
    trial, why = choose_trial(opened, policy="max-compression")
    doc = settings_document(opened, trial, why)
    assert doc["trial"] == 1 and doc["metrics"]["storage_bits_with_index"] == 30_000
    assert doc["normalisation"] is None  # as a study with normalise: false records it
    assert doc["layers"] == {layer: {"keep": 0.5, "bits": 4} for layer in LAYERS}
    text = write_settings(doc, tmp_path / name)
    assert (tmp_path / name).read_text() == text
    file = read_settings(tmp_path / name)
    assert (
        file.document == doc and file.layers == LAYERS and file.config.model.name == "digits-cnn"
    )


def test_a_searched_schedule_is_written_into_the_pipeline() -> None:
    config = StudyConfig.model_validate(
        {
            "name": "sched",
            "model": "digits-cnn",
            "dataset": "digits",
            "search": {
                "keep": 0.5,
                "bits": 4,
                "progressive_steps": {"low": 1, "high": 3},
                "admm_prune_epochs": {"low": 0, "high": 2},
            },
        }
    )
    study = optuna.create_study(study_name="sched", directions=["maximize", "minimize"])
    metrics = {"val_accuracy": 0.9, "accuracy_drop": 0.0, "storage_bits_with_index": 1000}
    params = {"admm_prune_epochs": 0, "progressive_steps": 2}
    distributions = {
        "admm_prune_epochs": optuna.distributions.IntDistribution(0, 2),
        "progressive_steps": optuna.distributions.IntDistribution(1, 3),
    }
    study.add_trial(
        create_trial(
            values=[0.9, 1000],
            params=params,
            distributions=distributions,
            user_attrs={"metrics": metrics},
        )
    )
    opened = OpenedStudy(study, config, LAYERS, "sqlite:///unused.db", "sqlite:///unused-ml.db")
    doc = settings_document(opened, study.trials[0], "chosen by number")
    assert doc["pipeline"]["progressive_steps"] == 2
    assert doc["pipeline"]["admm_prune"]["train"]["epochs"] == 0
    assert doc["pipeline"]["admm_quantize"]["train"]["epochs"] == 3  # the stage's own


def test_exported_settings_carry_no_float_noise_and_replay_exactly(tmp_path: Path) -> None:
    """A step range draws 0.07497000000000001 (0.00497 + 7 * 0.01); the settings file says
    0.07497, in its layers, its pipeline and its params, and reads back as the trial ran."""
    config = StudyConfig.model_validate(
        {
            "name": "stepped",
            "model": "digits-cnn",
            "dataset": "digits",
            "search": {
                "keep": {"low": 0.00497, "high": 0.99497, "step": 0.01},
                "bits": 4,
                "lr": {"low": 0.001, "high": 0.1, "step": 0.001},
            },
        }
    )
    keep = optuna.distributions.FloatDistribution(0.00497, 0.99497, step=0.01)
    lr = optuna.distributions.FloatDistribution(0.001, 0.1, step=0.001)
    params = {f"keep.{layer}": 0.07497000000000001 for layer in LAYERS}
    params["lr"] = 0.007000000000000001
    distributions = {name: lr if name == "lr" else keep for name in params}
    study = optuna.create_study(study_name="stepped", directions=["maximize", "minimize"])
    metrics = {"val_accuracy": 0.9, "accuracy_drop": 0.0, "storage_bits_with_index": 1000}
    study.add_trial(
        create_trial(
            values=[0.9, 1000],
            params=params,
            distributions=distributions,
            user_attrs={"metrics": metrics},
        )
    )
    opened = OpenedStudy(study, config, LAYERS, "sqlite:///unused.db", "sqlite:///unused-ml.db")
    doc = settings_document(opened, study.trials[0], "chosen by number")
    assert doc["layers"] == {layer: {"keep": 0.07497, "bits": 4} for layer in LAYERS}
    assert doc["pipeline"]["admm_prune"]["train"]["lr"] == 0.007
    assert set(doc["params"].values()) == {0.07497, 0.007}
    text = write_settings(doc, tmp_path / "s.yaml")
    assert "keep: 0.07497," in text and "lr: 0.007," in text
    assert "0000000" not in text
    assert read_settings(tmp_path / "s.yaml").plan.layers["fc1"].keep == 0.07497


def test_by_default_the_smallest_feasible_trial_within_the_studys_drop_is_exported() -> None:
    trial, why = choose_trial(_opened())
    assert trial.number == 1
    assert why == (
        "smallest of 2 completed trials with accuracy drop <= 0.05, the study's max_accuracy_drop"
    )
    assert choose_trial(_opened({"max_accuracy_drop": 0.2}))[0].number == 2
    assert choose_trial(_opened(), max_drop=0.02)[0].number == 0
    with pytest.raises(NoTrialError, match="sets no constraints.max_accuracy_drop"):
        choose_trial(_opened({"max_storage_bits": 90_000}))
    with pytest.raises(NoTrialError, match=r"accuracy drop <= 0\.001 \(closest: trial 0"):
        choose_trial(_opened({"max_accuracy_drop": 0.001}))
