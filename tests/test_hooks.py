"""User hooks for training: a batch transform, a loss and a step, named like models are, run in
every training stage; bad ones refused at load, naming the field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from admmsearch.config import load_study, validate_study
from admmsearch.data import load_dataset
from admmsearch.errors import ConfigError, RegistryError, UserCodeError
from admmsearch.hooks import Recipe, StepInput, load_recipe
from admmsearch.models import create_model
from admmsearch.pipeline import run_pipeline
from admmsearch.plan import Plan
from admmsearch.registry import import_object
from admmsearch.settings import PipelineSettings, QuantRetrainSettings, TrainingHooks

HOOKS = '''
import torch
import torch.nn.functional as F

CALLS = {"transform": 0, "loss": 0, "steps": []}
LAST = {}


def shift(x, y, generator):
    """Augmentation: a random shift of one pixel, drawn from the stage's generator."""
    CALLS["transform"] += 1
    dx = int(torch.randint(-1, 2, (1,), generator=generator))
    out = torch.roll(x, shifts=dx, dims=-1)
    LAST["x"] = out
    return out, y


def smooth(logits, y):
    """Label smoothing."""
    CALLS["loss"] += 1
    return F.cross_entropy(logits, y, label_smoothing=0.1)


def step(batch):
    """Records the stage, whether its batch was transformed and whether the loss was used."""
    before = CALLS["loss"]
    loss = batch.loss(batch.model(batch.x), batch.y)
    transformed = batch.x is LAST.get("x")
    CALLS["steps"].append((batch.stage, transformed, CALLS["loss"] == before + 1))
    return loss


def one_argument(x):
    return x


NOT_A_FUNCTION = 3


def wrong_loss(logits, y):
    return torch.zeros(len(y))
'''

NETS = """
from torch import nn


def tiny(num_classes, input_shape):
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, num_classes)
    )
"""

STAGES = {"dense", "admm_prune", "retrain", "admm_quantize", "quant_retrain"}
TRAIN = {"epochs": 1, "lr": 0.02, "batch_size": 64}


def user_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hooks.py").write_text(HOOKS)
    (folder / "nets.py").write_text(NETS)
    return folder


def calls(folder: Path) -> dict:
    """The hooks file's call record (the module admmsearch imported, by its path)."""
    return import_object(str(folder / "hooks.py") + ":CALLS", "test")


def study_file(folder: Path, **changes) -> Path:
    data = {
        "name": "hooked",
        "model": "nets.py:tiny",
        "dataset": {"name": "digits", "limit_train": 200},
        "dense": {"train": {**TRAIN, "epochs": 8, "lr": 0.05, "batch_size": 32}},
        "pipeline": {
            "admm_prune": {"train": TRAIN, "rho": {"start": 0.01, "updates": 3}},
            "retrain": TRAIN,
            "admm_quantize": {"train": TRAIN, "rho": {"start": 0.01, "updates": 3}},
            "quant_retrain": {"train": TRAIN, "shares": [1.0]},
        },
        "training": {
            "transform": "hooks.py:shift",
            "loss": "hooks.py:smooth",
            "step": "hooks.py:step",
        },
        "search": {"keep": 0.5, "bits": 4, "seed_from_sensitivity": False},
        "budget": {"trials": 1},
        **changes,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_a_study_with_user_hooks_and_model_runs_them_in_every_stage(tmp_path: Path) -> None:
    from admmsearch.search.study import prepare, run_study

    folder = user_files(tmp_path / "user")
    config, layers = validate_study(study_file(folder))
    (tmp_path / "mlruns").mkdir()
    ctx = prepare(
        config,
        layers,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        workdir=tmp_path / "work",
    )
    study = run_study(ctx)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    record = calls(folder)
    assert {stage for stage, _, _ in record["steps"]} == STAGES
    assert all(transformed and used_loss for _, transformed, used_loss in record["steps"])
    assert record["transform"] == record["loss"] == len(record["steps"])


def test_transform_and_loss_run_on_every_training_batch_of_every_stage(tmp_path: Path) -> None:
    folder = user_files(tmp_path)
    data = load_dataset("digits", seed=0, limit_train=200)
    torch.manual_seed(0)
    model = create_model("digits-cnn", num_classes=10, input_shape=data.input_shape)
    hooks = TrainingHooks(transform=f"{folder}/hooks.py:shift", loss=f"{folder}/hooks.py:smooth")
    settings = PipelineSettings(
        pretrain={**TRAIN, "epochs": 2},
        admm_prune={"train": TRAIN},
        retrain=TRAIN,
        admm_quantize={"train": TRAIN},
        quant_retrain=QuantRetrainSettings(train=TRAIN, shares=(0.5, 1.0)),
        training=hooks,
    )
    plan = Plan.from_dict({"layers": {"fc1": {"keep": 0.2, "bits": 4}}})
    before = dict(calls(folder))
    run_pipeline(model, data, plan, settings)
    batches = math.ceil(len(data.y_train) / TRAIN["batch_size"])
    epochs = 2 + 1 + 1 + 1 + 2  # dense, admm_prune, retrain, admm_quantize, 2 quant rounds
    record = calls(folder)
    assert record["transform"] - before["transform"] == epochs * batches
    assert record["loss"] - before["loss"] == epochs * batches


def test_module_names_resolve_from_the_study_folder(tmp_path: Path, monkeypatch) -> None:
    folder = user_files(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    path = study_file(folder, training={"loss": "hooks:smooth"})
    config, _ = validate_study(path)
    assert load_recipe(config.training).loss is not None


@pytest.mark.parametrize(
    "training,error,message",
    [
        ({"loss": "nocolon"}, ConfigError, "training.loss: must be package.module:function"),
        ({"loss": "missing.py:f"}, RegistryError, "training.loss 'missing.py:f': no file"),
        ({"step": "hooks.py:nope"}, RegistryError, "training.step 'hooks.py:nope': 'hooks.py'"),
        (
            {"transform": "hooks.py:NOT_A_FUNCTION"},
            UserCodeError,
            "training.transform 'hooks.py:NOT_A_FUNCTION': is a int, not a function",
        ),
        (
            {"loss": "hooks.py:one_argument"},
            UserCodeError,
            "training.loss 'hooks.py:one_argument': is called as (logits, y), but takes (x)",
        ),
        ({"lost": "hooks.py:smooth"}, ConfigError, "training.lost: unknown field"),
    ],
)
def test_bad_hooks_are_refused_at_load_naming_the_field(
    tmp_path: Path, training, error, message
) -> None:
    path = study_file(user_files(tmp_path), training=training)
    with pytest.raises(error) as info:
        validate_study(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_hook_returning_the_wrong_thing_is_named_while_training(tmp_path: Path) -> None:
    folder = user_files(tmp_path)
    recipe = load_recipe(TrainingHooks(loss=f"{folder}/hooks.py:wrong_loss"))
    logits, y = torch.zeros(4, 10), torch.zeros(4, dtype=torch.long)
    with pytest.raises(UserCodeError, match="training.loss .*0-dim tensor; it returned a tensor"):
        recipe.loss_of(logits, y)
    bad = Recipe(TrainingHooks(transform="x.py:t"), transform=lambda x, y, g: x)
    with pytest.raises(UserCodeError, match="training.transform 'x.py:t' must return \\(x, y\\)"):
        bad.batch(logits, y, torch.Generator())
    failing = Recipe(TrainingHooks(step="x.py:s"), step=lambda batch: 1 / 0)
    batch = StepInput(torch.nn.Identity(), logits, y, recipe.loss_of, torch.Generator(), "a", 0)
    with pytest.raises(UserCodeError, match="training.step 'x.py:s' failed: ZeroDivisionError"):
        failing.step_loss(batch)


def test_a_study_without_hooks_reads_as_before(tmp_path: Path) -> None:
    path = study_file(user_files(tmp_path), training={})
    assert load_study(path).training == TrainingHooks()


def test_a_settings_file_carries_the_hooks_of_its_study(tmp_path: Path) -> None:
    from admmsearch.settings_file import settings_config

    user_files(tmp_path)
    hooks = {"transform": "hooks.py:shift", "loss": "hooks.py:smooth"}
    doc = {
        "study": "s",
        "model": "digits-cnn",
        "dataset": "digits",
        "pipeline": {},
        "layers": {"fc1": {"keep": 0.5, "bits": 4}},
        "training": hooks,
    }
    config, _ = settings_config(doc, "best.yaml")
    assert config.training == TrainingHooks(**hooks)
