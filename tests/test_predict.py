"""A packed model predicts from its file alone: raw arrays in, the reported accuracy out
(cases/22-npz-silent-normalisation), and the normalisation travels with every result."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from admmsearch import normalise
from admmsearch.config import load_study, resolve_layers
from admmsearch.data import load_dataset
from admmsearch.deploy._predict import load_model, read_arrays
from admmsearch.errors import ConfigError, DatasetError, PackError
from admmsearch.normalise import Normalisation
from admmsearch.packed._format import ModelMeta, pack_model, read_model_file
from admmsearch.search.catalog import open_existing
from admmsearch.search.export import settings_document
from admmsearch.search.study import prepare, run_study
from admmsearch.tracking import search_runs


@pytest.fixture(scope="module")
def raw_npz(tmp_path_factory):
    """The user's arrays of cases/22: sklearn digits as raw pixels 0..16, (N, 1, 8, 8)."""
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    path = tmp_path_factory.mktemp("data") / "digits_raw.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def _study(tmp_path, npz, **dataset):
    data = {
        "name": f"npz-{len(dataset)}",
        "model": "digits-cnn",
        "dataset": {"name": str(npz), "limit_train": 400, **dataset},
        "dense": {"train": {"epochs": 4, "lr": 0.05, "batch_size": 32}},
        "pipeline": {
            "admm_prune": None,
            "retrain": {"epochs": 1, "lr": 0.02, "batch_size": 32},
            "admm_quantize": None,
            "quant_retrain": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 32}},
        },
        "search": {"keep": 0.5, "bits": 8},
        "budget": {"trials": 1},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_study(path)
    layers = resolve_layers(config)
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    ctx = prepare(
        config,
        layers,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    return ctx, run_study(ctx).trials[0]


@pytest.mark.slow
def test_raw_arrays_through_the_packed_model_give_the_reported_accuracy(tmp_path, raw_npz):
    ctx, trial = _study(tmp_path, raw_npz)
    reported = trial.user_attrs["metrics"]["test_accuracy"]
    x, y, keys = read_arrays(raw_npz)
    assert keys == ("x_test", "y_test") and x.max() == 16  # raw pixels, as the user has them
    deployed = load_model(trial.user_attrs["packed_model"])
    assert deployed.accuracy(x, y) == reported
    norm = ctx.data.normalisation
    assert deployed.meta.normalisation == norm
    assert norm.mean[0] == pytest.approx(float(x.mean()), rel=0.1)
    # the normalisation travels: trial attribute, MLflow params, exported settings
    assert trial.user_attrs["normalisation"] == norm.to_dict()
    runs = search_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", ctx.config.name)
    run = runs[runs["tags.admmsearch.role"] == "trial"].iloc[0]
    assert run["params.normalisation"] == "per-channel"
    assert json.loads(run["params.normalisation.mean"]) == list(norm.mean)
    opened = open_existing(ctx.config.name, storage=ctx.storage, tracking_uri=ctx.tracker.uri)
    doc = settings_document(opened, opened.study.trials[0], "test")
    assert Normalisation.from_dict(doc["normalisation"]) == norm
    # the command line says the same, from the file alone
    out = subprocess.run(
        [sys.executable, "-m", "admmsearch", "predict", trial.user_attrs["packed_model"], raw_npz],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"accuracy {reported:.4f} ({round(reported * len(y))} of {len(y)})" in out


@pytest.mark.slow
def test_arrays_taken_as_given_record_no_normalisation(tmp_path, raw_npz):
    ctx, trial = _study(tmp_path, raw_npz, normalise=False)
    assert ctx.data.normalisation is None
    with np.load(raw_npz) as arrays:
        assert torch.equal(ctx.data.x_test, torch.from_numpy(arrays["x_test"]))
        x, y = arrays["x_test"], arrays["y_test"]
    deployed = load_model(trial.user_attrs["packed_model"])
    assert deployed.meta.normalisation is None
    assert deployed.accuracy(x, y) == trial.user_attrs["metrics"]["test_accuracy"]
    assert trial.user_attrs["normalisation"] is None


def test_load_dataset_records_the_normalisation_it_applied(raw_npz) -> None:
    data = load_dataset(str(raw_npz), seed=3)
    with np.load(raw_npz) as arrays:
        x_test = torch.from_numpy(arrays["x_test"])
    assert torch.equal(data.normalisation.apply(x_test), data.x_test)  # bit for bit
    plain = load_dataset(str(raw_npz), seed=3, normalise=False)
    assert plain.normalisation is None and torch.equal(plain.x_test, x_test)
    assert load_dataset("digits", seed=0).normalisation is not None


def test_normalisation_module() -> None:
    assert doctest.testmod(normalise).failed == 0
    norm = Normalisation((1.0, 2.0), (2.0, 4.0))
    assert Normalisation.from_dict(norm.to_dict()) == norm
    assert Normalisation.from_dict(None) is None
    with pytest.raises(ConfigError, match="3 channels"):
        norm.apply(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="positive"):
        Normalisation((0.0,), (0.0,))
    with pytest.raises(ConfigError, match="normalisation"):
        Normalisation.from_dict({"mean": [1.0]})


def test_packed_digits_predict_as_the_model_did(packed_digits) -> None:
    deployed = load_model(packed_digits.path)
    data = packed_digits.data
    with torch.no_grad():
        expected = packed_digits.model(data.x_test)
    raw = _raw_digits_test()
    logits = deployed.logits(raw)  # the kernels may sum in another order: float tolerance
    assert torch.allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    assert deployed.accuracy(raw, data.y_test) == packed_digits.result.final.test_accuracy
    with pytest.raises(DatasetError, match=r"do not fit the model, which takes \(1, 8, 8\)"):
        deployed.logits(np.zeros((2, 1, 7, 7)))


def _raw_digits_test() -> np.ndarray:
    """The registered digits test split before normalisation (fixed split of the loader)."""
    bunch = load_digits()
    index = np.arange(len(bunch.target))
    _, test = train_test_split(index, test_size=0.2, stratify=bunch.target, random_state=0)
    return bunch.images.astype(np.float32)[test][:, None]


def test_user_code_is_not_run_without_trust(tmp_path, packed_digits) -> None:
    model = packed_digits.model
    meta = ModelMeta("os:system", {"command": "echo hacked"}, 10, (1, 8, 8))
    path = tmp_path / "code.admm"
    pack_model(model, ["conv1"], path, meta=meta)
    with pytest.raises(PackError, match="names user code 'os:system'.*--trust-code"):
        load_model(path)
    pack_model(model, ["conv1"], path)  # no meta: nothing says how to rebuild it
    with pytest.raises(PackError, match="does not say how to rebuild"):
        load_model(path)
    assert read_model_file(path).meta == ModelMeta()


def test_read_arrays_names_what_is_missing(tmp_path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, images=np.zeros((2, 4)))
    with pytest.raises(DatasetError, match="holds images; predict needs x_test and y_test"):
        read_arrays(path)
    with pytest.raises(DatasetError, match="does not exist"):
        read_arrays(tmp_path / "none.npz")


USER_NET = """
import torch.nn as nn


def build(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, num_classes))
"""


def test_user_code_is_found_beside_the_packed_file(tmp_path, monkeypatch) -> None:
    """cases/44: a file naming `beside_net.py:build` predicts from any folder, its code looked
    for beside the .admm (then in the current folder), as a study file's is."""
    from admmsearch.registry import import_object

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "beside_net.py").write_text(USER_NET)
    (tmp_path / "elsewhere").mkdir()
    model = import_object(f"{tmp_path / 'model' / 'beside_net.py'}:build", "model")()
    path = tmp_path / "model" / "best.admm"
    pack_model(model, ["1"], path, meta=ModelMeta("beside_net.py:build", {}, 10, (1, 8, 8)))
    monkeypatch.chdir(tmp_path / "elsewhere")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_model(path, trust_code=True).logits(x), model(x))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            load_digits().data[:50].astype(np.float32).reshape(-1, 1, 8, 8),
            np.full(50, 99, dtype=np.int64),
            "{path}: y has label 99, outside 0..9 (the model's 10 classes)",
        ),
        (
            np.full((50, 1, 8, 8), np.nan, dtype=np.float32),
            load_digits().target[:50],
            "{path}: x has 3200 NaN or infinite value(s); clean or drop those samples",
        ),
    ],
    ids=["labels-outside-classes", "nan-inputs"],
)
def test_predict_refuses_the_data_training_refuses(tmp_path, packed_digits, x, y, message):
    """cases/29: labels 99 for a 10-class model and all-NaN inputs gave an accuracy, exit 0."""
    from click.testing import CliRunner

    from admmsearch.cli import main

    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    result = CliRunner().invoke(main, ["predict", str(packed_digits.path), str(path)])
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {message.format(path=path)}\n"
