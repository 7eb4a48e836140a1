"""Fixtures shared by test files; torch runs on one thread (the tests' models are tiny, and
threads only contend with the other tests and processes on the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)

QUICK = Path(__file__).resolve().parents[1] / "studies" / "digits-quick.yaml"


@pytest.fixture(scope="session")
def digits():
    """sklearn's digits as seeded splits (seed 0)."""
    from admmsearch.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def dense_digits(digits):
    """The state of a digits-cnn trained 6 epochs (seed 0): a dense model to compress."""
    from admmsearch.models import create_model
    from admmsearch.train import TrainSettings, fit

    torch.manual_seed(0)
    model = create_model("digits-cnn", num_classes=10, input_shape=digits.input_shape)
    fit(model, digits, TrainSettings(epochs=6, lr=0.05, batch_size=32), seed=0)
    return model.state_dict()


@pytest.fixture()
def dense_copy(dense_digits):
    """Builds a fresh digits-cnn holding the dense_digits state, one per call."""
    from admmsearch.models import create_model

    def build():
        model = create_model("digits-cnn", num_classes=10, input_shape=(1, 8, 8))
        model.load_state_dict(dense_digits)
        return model

    return build


@pytest.fixture()
def prune_only():
    """Builds pipeline settings of an ADMM pruning stage and an optional retraining stage."""
    from admmsearch.pipeline import PipelineSettings

    def build(admm, retrain=None):
        return PipelineSettings(
            pretrain=None, admm_prune=admm, retrain=retrain, admm_quantize=None, quant_retrain=None
        )

    return build


@pytest.fixture()
def tiny_study(tmp_path):
    """Write ``studies/digits-quick.yaml`` shrunk to about a second a trial, with ``changes``
    on top, as ``tmp_path/study.yaml``; returns its path."""

    def write(**changes) -> Path:
        data = yaml.safe_load(QUICK.read_text())
        data["dataset"] = {"name": "digits", "limit_train": 300}
        data["dense"]["train"]["epochs"] = 4
        for stage in ("admm_prune", "admm_quantize"):
            data["pipeline"][stage]["train"]["epochs"] = 1
        data["pipeline"]["retrain"]["epochs"] = 1
        data["budget"] = {"trials": 3}
        data["sensitivity"] = {"keep_points": 3}  # a quick sensitivity pass
        data.update(changes)
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="session")
def packed_digits(tmp_path_factory):
    """A digits-cnn trained briefly on the digits splits, compressed with every kind of layer
    (uniform 4 and 8 bits on pruned layers, uniform 2 bits pruned hard, learned centroids on a
    dense layer) and packed with its meta; a namespace of path, data, result and model."""
    from types import SimpleNamespace

    import torch

    from admmsearch.data import load_dataset
    from admmsearch.models import compressible_layers, create_model
    from admmsearch.packed._format import ModelMeta, pack_model
    from admmsearch.pipeline import PipelineSettings, QuantRetrainSettings, run_pipeline
    from admmsearch.plan import Plan
    from admmsearch.train import TrainSettings

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = create_model("digits-cnn", num_classes=data.num_classes, input_shape=data.input_shape)
    plan = Plan.from_dict(
        {
            "layers": {
                "conv1": {"keep": 0.6, "bits": 4},
                "conv2": {"keep": 0.3, "bits": 8},
                "fc1": {"keep": 0.05, "bits": 2},
                "fc2": {"clusters": 8},
            }
        }
    )
    settings = PipelineSettings(
        pretrain=TrainSettings(epochs=4, lr=0.05, batch_size=32),
        admm_prune=None,
        retrain=TrainSettings(epochs=1, lr=0.02, batch_size=32),
        admm_quantize=None,
        quant_retrain=QuantRetrainSettings(TrainSettings(epochs=1, lr=0.01, batch_size=32)),
    )
    result = run_pipeline(model, data, plan, settings)
    path = tmp_path_factory.mktemp("packed") / "digits.admm"
    meta = ModelMeta(
        "digits-cnn", {}, data.num_classes, data.input_shape, False, data.normalisation
    )
    info = pack_model(model, list(compressible_layers(model)), path, meta=meta)
    return SimpleNamespace(path=path, data=data, result=result, model=model.eval(), info=info)


@pytest.fixture()
def study_context(tmp_path):
    """A function: a study file's prepared context, its Optuna and MLflow stores (SQLite) and
    work folder in ``tmp_path``; calling it again on the same file resumes the study."""
    from admmsearch.config import validate_study
    from admmsearch.search.study import prepare

    def make(path: Path):
        config, layers = validate_study(path)
        (tmp_path / "mlruns").mkdir(exist_ok=True)
        return prepare(
            config,
            layers,
            storage=f"sqlite:///{tmp_path / 'o.db'}",
            tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
            workdir=tmp_path / "work",
        )

    return make
