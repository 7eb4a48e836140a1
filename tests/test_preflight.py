"""Checks before a study starts, and what `show` says about how a study went."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
import torch

from admmsearch.config import StudyConfig, load_study, resolve_layers
from admmsearch.data import DataSplits
from admmsearch.errors import ConfigError, DivergenceError, StoreError
from admmsearch.models import create_model
from admmsearch.preflight import (
    SmallValidationWarning,
    check_device,
    check_store_folder,
    check_validation_size,
)
from admmsearch.search.catalog import open_existing
from admmsearch.search.failures import RepeatedFailure
from admmsearch.search.report import describe, failed_trials, study_rows
from admmsearch.search.reuse import check_reuse
from admmsearch.search.study import prepare, run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/missing/optuna.db",
        "sqlite:///{tmp}/a/b/mlflow.db",
        "{tmp}/missing/mlruns",
        "file://{tmp}/missing/mlruns",
    ],
)
def test_a_store_in_a_missing_folder_is_refused_and_not_created(tmp_path: Path, url) -> None:
    url = url.format(tmp=tmp_path)
    with pytest.raises(StoreError, match="does not exist; create it first"):
        check_store_folder(url, "storage")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/optuna.db",
        "sqlite:///:memory:",
        "postgresql+psycopg://u@db.lan:5432/optuna",
        "http://tracking.lan:5000",
        "{tmp}/mlruns",
    ],
)
def test_stores_in_existing_folders_and_servers_pass(tmp_path: Path, url: str) -> None:
    check_store_folder(url.format(tmp=tmp_path), "storage")


def test_devices_this_machine_lacks_are_refused() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device: cuda:1 asked, but no CUDA device"):
            check_device("cuda:1")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {count} CUDA device"):
            check_device(f"cuda:{count}")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="^--device: mps asked"):
            check_device("mps", "--device")
    check_device("cpu")


def _stored(tmp_path: Path, tiny_study) -> tuple[str, object, list[str]]:
    """A study stored as `prepare` records it (its config and layers), without training."""
    config = load_study(tiny_study(name="kept"))
    layers = resolve_layers(config)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="kept", storage=url, directions=config.directions)
    study.set_user_attr("config", config.resolved_dict())
    study.set_user_attr("layers", layers)
    return url, config, layers


@pytest.mark.parametrize(
    ("changes", "difference"),
    [
        (
            {"objectives": ["val_accuracy", "compression_ratio_with_index"]},
            'objectives: stored ["val_accuracy", "storage_bits_with_index"], now '
            '["val_accuracy", "compression_ratio_with_index"]',
        ),
        ({"model": "lenet-300-100"}, 'model.name: stored "digits-cnn", now "lenet-300-100"'),
        ({"dataset": {"name": "digits", "limit_train": 100}}, "dataset.limit_train: stored 300"),
        ({"search": {"keep": 0.5, "bits": 4}}, "search.keep: stored {"),
        (
            {"layers": ["fc*"]},
            "layers: stored ['conv1', 'conv2', 'fc1', 'fc2'], now ['fc1', 'fc2']",
        ),
    ],
)
def test_a_study_name_reused_with_another_definition_is_refused(
    tmp_path, tiny_study, changes, difference
) -> None:
    url, _, _ = _stored(tmp_path, tiny_study)
    other = load_study(tiny_study(name="kept", **changes))
    with pytest.raises(ConfigError) as info:
        check_reuse(other, resolve_layers(other), url)
    message = str(info.value)
    assert message.startswith(f"study 'kept' already exists in {url} with another definition (")
    assert difference in message and "change name: in this file" in message


def test_resuming_with_another_budget_or_sampler_is_fine(tmp_path, tiny_study) -> None:
    url, config, layers = _stored(tmp_path, tiny_study)
    check_reuse(config, layers, url)
    resumed = load_study(tiny_study(name="kept", budget={"trials": 9}, sampler={"name": "tpe"}))
    check_reuse(resumed, layers, url)
    check_reuse(load_study(tiny_study(name="new")), layers, url)  # another name: a new study


def test_no_storage_file_means_no_study_and_none_is_made(tmp_path, tiny_study) -> None:
    config = load_study(tiny_study())
    check_reuse(config, resolve_layers(config), f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def _stores(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    return {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "workdir": tmp_path / "work",
    }


@pytest.mark.slow
def test_a_dense_model_at_chance_is_refused_before_any_study(tmp_path, tiny_study) -> None:
    """A checkpoint whose last layer gives every class the same score predicts one class:
    every trial would fail the collapse check, so the start is refused up front, no study made."""
    state = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8)).state_dict()
    state["fc2.weight"] = torch.full_like(state["fc2.weight"], 1e-3)
    state["fc2.bias"] = torch.zeros_like(state["fc2.bias"])
    torch.save(state, tmp_path / "z.pt")
    config = load_study(tiny_study(dense={"checkpoint": str(tmp_path / "z.pt")}))
    with pytest.raises(DivergenceError) as info:
        prepare(config, resolve_layers(config), **_stores(tmp_path))
    message = str(info.value)
    assert message.startswith(f"the dense model from dense.checkpoint {tmp_path / 'z.pt'} scores")
    assert "chance level for 10 classes, so every trial would fail" in message
    assert (
        not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlruns" / "mlflow.db").exists()
    )


@pytest.mark.slow
def test_show_gives_each_failure_its_reason_and_a_timeout_stop(tmp_path, tiny_study) -> None:
    """A trial that dies of an error (not a divergence) keeps the error as its reason, and a
    run stopped by its timeout before the budget says so in `show` and `list`."""
    config = load_study(tiny_study(name="shown"))
    stores = _stores(tmp_path)
    ctx = prepare(config, resolve_layers(config), **stores)

    def broken(stage: str, epoch: int, loss: float) -> None:
        raise ValueError(f"a bug in {stage}")

    with pytest.raises(RepeatedFailure):  # the same error thrice: the study stops
        run_study(ctx, on_epoch=broken)
    run_study(ctx, timeout=1e-6)
    opened = open_existing(
        "shown", storage=str(stores["storage"]), tracking_uri=str(stores["tracking_uri"])
    )
    reason = "ValueError: a bug in admm_prune"
    assert failed_trials(opened.study) == [(0, reason), (1, reason), (2, reason)]
    facts = dict(describe(opened))
    assert facts["state"] == "stopped (timeout)"
    assert facts["stopped"].startswith("the last run stopped at its timeout (1e-06 s, ")
    # the failed trials do not count against the budget
    assert facts["stopped"].endswith(" with 0 of 3 trials spent; run it again to go on")
    assert study_rows(str(stores["storage"]))["state"].tolist() == ["stopped (timeout)"]
    run_study(ctx)  # the budget spent: the note goes
    facts = dict(describe(open_existing("shown", storage=str(stores["storage"]))))
    assert facts["state"] == "finished" and "stopped" not in facts


def _splits(val: int) -> DataSplits:
    x, y = torch.zeros(val, 1, 8, 8), torch.zeros(val, dtype=torch.long)
    return DataSplits("v", x, y, x, y, x[:1], y[:1], num_classes=10)


def _constrained(drop: float | None) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "v",
            "model": "digits-cnn",
            "dataset": "digits",
            "constraints": {"max_accuracy_drop": drop},
        }
    )


def test_a_validation_split_too_small_for_the_constraint_is_warned_in_images() -> None:
    with pytest.warns(SmallValidationWarning) as caught:
        check_validation_size(_constrained(0.01), _splits(400))
    (warning,) = caught
    text = str(warning.message)
    assert text.startswith(
        "400 validation images: 1 point is 4 images; constraints.max_accuracy_drop 0.01 is 4 "
        "images, fewer than 10"
    )
    assert "dataset.val_fraction (now 0.1)" in text and "\n" not in text


@pytest.mark.parametrize(("drop", "val"), [(0.01, 1000), (0.05, 200), (None, 30)])
def test_a_split_spanning_ten_images_within_the_drop_passes_quietly(drop, val) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_validation_size(_constrained(drop), _splits(val))
